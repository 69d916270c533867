-- An append no longer notifies in its own transaction. PostgreSQL makes the commits of
-- transactions that NOTIFY take turns, each through its flush to disk (so that
-- notifications arrive in commit order): appends that ran side by side (0025) still
-- never shared a flush. The store's client now announces its commits on
-- 'snapdeploy_events' after they commit, in a transaction of its own that does not wait
-- for the disk (shared.eventstore's Announcer); followers still poll, so a lost
-- announcement only delays them.
--
-- append_events() is restated whole, as 0025 left it, without its pg_notify().
CREATE OR REPLACE FUNCTION append_events(
    p_stream   text,
    p_expected integer,
    p_ids      uuid[],
    p_types    text[],
    p_schemas  smallint[],
    p_data     jsonb[],
    p_metadata jsonb[]
) RETURNS SETOF events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    current_version integer;
BEGIN
    PERFORM lock_appends(ARRAY[p_stream], p_types);
    SELECT coalesce(max(version), 0) INTO current_version FROM events WHERE stream_id = p_stream;
    IF p_expected <> -1 AND current_version <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, not %', p_stream, current_version, p_expected
            USING ERRCODE = 'SD409', DETAIL = current_version::text;
    END IF;
    RETURN QUERY
        INSERT INTO events (event_id, stream_id, version, type, schema, data, metadata)
        SELECT e.id, p_stream, current_version + e.n::integer, e.type, e.schema, e.data, e.meta
        FROM unnest(p_ids, p_types, p_schemas, p_data, p_metadata)
             WITH ORDINALITY AS e(id, type, schema, data, meta, n)
        ORDER BY e.n
        RETURNING *;
END;
$$;
