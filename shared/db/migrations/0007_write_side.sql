-- Write-side tables: lookups across streams that handlers decide from, kept by the database in
-- the transaction of the events they summarise (a trigger on events), so they are never
-- behind the store, whoever appends and whether or not the projector runs. They are not
-- read models: the projector never writes them and a rebuild leaves them alone.
--
-- host_capacity: one row per host stream (host-<id>): the host's facts from its latest
-- HostImported, whether it is gone, what is reserved on it, and the stream's version (a
-- placement appends its reservation at that version, so two placements on one host
-- conflict). host_reservations: each VM's reservation on a host.
CREATE TABLE host_capacity (
    host_id            text    PRIMARY KEY,
    name               text    NOT NULL DEFAULT '',
    zone_id            text    NOT NULL DEFAULT '',
    pool_ids           text[]  NOT NULL DEFAULT '{}',
    cpu_mhz_total      bigint  NOT NULL DEFAULT 0,
    memory_mb_total    bigint  NOT NULL DEFAULT 0,
    reserved_cpu_mhz   bigint  NOT NULL DEFAULT 0,
    reserved_memory_mb bigint  NOT NULL DEFAULT 0,
    imported           boolean NOT NULL DEFAULT false,
    gone               boolean NOT NULL DEFAULT false,
    version            integer NOT NULL
);

CREATE TABLE host_reservations (
    host_id   text   NOT NULL,
    vm_id     text   NOT NULL,
    cpu_mhz   bigint NOT NULL,
    memory_mb bigint NOT NULL,
    PRIMARY KEY (host_id, vm_id)
);

-- The same rules as shared.domain.capacity.evolve (the in-memory store folds with that;
-- tests/contract/test_write_side.py checks both give the same answers).
CREATE FUNCTION summarise_host(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    host text := substr(e.stream_id, length('host-') + 1);
BEGIN
    INSERT INTO host_capacity (host_id, version) VALUES (host, e.version)
        ON CONFLICT (host_id) DO UPDATE SET version = excluded.version;
    IF e.type = 'HostImported' THEN
        UPDATE host_capacity SET
            name = e.data ->> 'name',
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

CREATE FUNCTION events_summarise_host() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM summarise_host(NEW);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_host_capacity AFTER INSERT ON events
    FOR EACH ROW WHEN (starts_with(NEW.stream_id, 'host-'))
    EXECUTE FUNCTION events_summarise_host();

-- Events stored before this migration, in their order.
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events WHERE starts_with(stream_id, 'host-') ORDER BY position LOOP
        PERFORM summarise_host(e);
    END LOOP;
END;
$$;

-- snapshot_uses: what depends on a VM snapshot, for removing its templates once it is
-- deleted: the VMs deployed from it (live until expunged) and the pools it was seeded on.
-- seed_templates: a seeded template's id → its seed (the stream spoolref-<snapshot>-<pool>).
CREATE TABLE snapshot_uses (
    vm_snapshot_id text    NOT NULL,
    kind           text    NOT NULL CHECK (kind IN ('vm', 'seed')),
    id             text    NOT NULL,  -- the VM's id, or the pool's
    live           boolean NOT NULL,
    PRIMARY KEY (vm_snapshot_id, kind, id)
);
CREATE INDEX snapshot_uses_by_id ON snapshot_uses (kind, id);

CREATE TABLE seed_templates (
    template_id    text PRIMARY KEY,
    vm_snapshot_id text NOT NULL,
    pool_id        text NOT NULL
);

CREATE FUNCTION summarise_snapshot_use(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF e.type = 'VmDeployRequested' AND e.data ->> 'vm_snapshot_id' IS NOT NULL THEN
        INSERT INTO snapshot_uses VALUES (e.data ->> 'vm_snapshot_id', 'vm', e.data ->> 'vm_id',
                                          true)
            ON CONFLICT DO NOTHING;
    ELSIF e.type = 'VmExpunged' THEN
        UPDATE snapshot_uses SET live = false WHERE kind = 'vm' AND id = e.data ->> 'vm_id';
    ELSIF e.type = 'TemplateSeedStarted' THEN
        INSERT INTO snapshot_uses VALUES (e.data ->> 'vm_snapshot_id', 'seed',
                                          e.data ->> 'pool_id', true)
            ON CONFLICT DO NOTHING;
        INSERT INTO seed_templates VALUES (e.data ->> 'template_id', e.data ->> 'vm_snapshot_id',
                                           e.data ->> 'pool_id')
            ON CONFLICT DO NOTHING;
    END IF;
END;
$$;

CREATE FUNCTION events_summarise_snapshot_use() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM summarise_snapshot_use(NEW);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_snapshot_uses AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('VmDeployRequested', 'VmExpunged', 'TemplateSeedStarted'))
    EXECUTE FUNCTION events_summarise_snapshot_use();

DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events
             WHERE type IN ('VmDeployRequested', 'VmExpunged', 'TemplateSeedStarted')
             ORDER BY position LOOP
        PERFORM summarise_snapshot_use(e);
    END LOOP;
END;
$$;
