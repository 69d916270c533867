-- account_holdings (migration 0009) follows a VM's offering change: the CPUs and memory a
-- VM holds against its account's limits are those of its last VmServiceChanged. Kept by a
-- trigger in the transaction of the event, like the rest of the table; the same rule is in
-- shared/eventstore/_memory.py (tests/contract/test_write_side.py checks both agree).
CREATE FUNCTION events_holdings_service_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE account_holdings SET cpu_number = (NEW.data ->> 'cpu_number')::bigint,
                                memory_mb = (NEW.data ->> 'memory_mb')::bigint
        WHERE kind = 'vm' AND id = NEW.data ->> 'vm_id';
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_holdings_service_change AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type = 'VmServiceChanged')
    EXECUTE FUNCTION events_holdings_service_change();

-- Changes stored before this migration: each VM's last one.
UPDATE account_holdings h SET cpu_number = (c.data ->> 'cpu_number')::bigint,
                              memory_mb = (c.data ->> 'memory_mb')::bigint
    FROM (SELECT DISTINCT ON (data ->> 'vm_id') data FROM events
          WHERE type = 'VmServiceChanged' ORDER BY data ->> 'vm_id', position DESC) c
    WHERE h.kind = 'vm' AND h.id = c.data ->> 'vm_id';
