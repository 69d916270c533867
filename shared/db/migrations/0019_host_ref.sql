-- A host's hypervisor id (its latest HostImported's ref) in host_capacity, so the cloner and
-- the planner read one host (Store.host) from host_capacity and host_reservations instead of
-- folding a stream that holds a reservation and a release per VM ever placed on the host.
ALTER TABLE host_capacity ADD COLUMN ref text NOT NULL DEFAULT '';

CREATE OR REPLACE FUNCTION summarise_host(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    host text := substr(e.stream_id, length('host-') + 1);
BEGIN
    INSERT INTO host_capacity (host_id, version) VALUES (host, e.version)
        ON CONFLICT (host_id) DO UPDATE SET version = excluded.version;
    IF e.type = 'HostImported' THEN
        UPDATE host_capacity SET
            name = e.data ->> 'name',
            ref = coalesce(e.data ->> 'ref', ''),
            zone_id = e.data ->> 'zone_id',
            pool_ids = ARRAY(SELECT jsonb_array_elements_text(e.data -> 'pool_ids')),
            cpu_mhz_total = (e.data ->> 'cpu_cores')::bigint * (e.data ->> 'cpu_mhz')::bigint,
            memory_mb_total = (e.data ->> 'memory_bytes')::bigint / (1024 * 1024),
            imported = true,
            gone = false
        WHERE host_id = host;
    ELSIF e.type = 'InventoryObjectGone' THEN
        UPDATE host_capacity SET gone = true WHERE host_id = host;
    ELSIF e.type = 'CapacityReserved' THEN
        INSERT INTO host_reservations (host_id, vm_id, cpu_mhz, memory_mb)
            VALUES (host, e.data ->> 'vm_id', (e.data ->> 'cpu_mhz')::bigint,
                    (e.data ->> 'memory_mb')::bigint)
            ON CONFLICT (host_id, vm_id) DO UPDATE
            SET cpu_mhz = excluded.cpu_mhz, memory_mb = excluded.memory_mb;
    ELSIF e.type = 'CapacityReleased' THEN
        DELETE FROM host_reservations WHERE host_id = host AND vm_id = e.data ->> 'vm_id';
    END IF;
    IF e.type IN ('CapacityReserved', 'CapacityReleased') THEN
        UPDATE host_capacity SET (reserved_cpu_mhz, reserved_memory_mb) =
            (SELECT coalesce(sum(cpu_mhz), 0), coalesce(sum(memory_mb), 0)
             FROM host_reservations WHERE host_id = host)
        WHERE host_id = host;
    END IF;
END;
$$;

-- The hosts imported before this migration: the ref of each one's latest HostImported.
UPDATE host_capacity c SET ref = coalesce(latest.ref, '')
FROM (SELECT DISTINCT ON (stream_id) substr(stream_id, length('host-') + 1) AS host_id, data ->> 'ref' AS ref
      FROM events WHERE starts_with(stream_id, 'host-') AND type = 'HostImported'
      ORDER BY stream_id, position DESC) latest
WHERE c.host_id = latest.host_id;
