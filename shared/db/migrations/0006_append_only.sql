-- The event store is append-only for the services: they connect as a role that may read
-- events but not insert, update or delete them (see shared/db/_roles.py). Appends go
-- through append_events(), which runs with its owner's rights (SECURITY DEFINER), so
-- the version check and the table lock cannot be skipped. A fixed search_path keeps the
-- function from resolving names through a schema a caller controls.
ALTER FUNCTION append_events(text, integer, uuid[], text[], smallint[], jsonb[], jsonb[])
    SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION append_events(text, integer, uuid[], text[], smallint[], jsonb[], jsonb[])
    FROM PUBLIC;
