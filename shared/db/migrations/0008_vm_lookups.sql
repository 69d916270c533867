-- More write-side lookups across streams, kept like those of 0007 by a trigger on events in
-- the transaction of the events they summarise; the same rules are in
-- shared/eventstore/_memory.py (tests/contract/test_write_side.py checks both agree).
--
-- vm_index: every VM the store knows, deployed or imported: its name in the hypervisor (a
-- deployed VM's instance name), its owner, whether it started, whether it ended (expunged,
-- or its deploy failed) and whether a destroy is under way (its stream's last event is the
-- request). The cloner, the volume service and the inventory sync decide from it.
CREATE TABLE vm_index (
    vm_id         text    PRIMARY KEY,
    instance_name text,
    imported      boolean NOT NULL DEFAULT false,
    account_id    text    NOT NULL DEFAULT '',
    started       boolean NOT NULL DEFAULT false,
    ended         boolean NOT NULL DEFAULT false,
    destroying    boolean NOT NULL DEFAULT false
);

-- volume_links: each volume's VM. imported_with: the VM whose VmImported describes the
-- disk (NULL for volumes snapdeploy made); vm_id: the VM it is attached to now (NULL when
-- detached); live: false once deleted, or expunged with its VM.
CREATE TABLE volume_links (
    volume_id     text    PRIMARY KEY,
    imported_with text,
    vm_id         text,
    live          boolean NOT NULL DEFAULT true
);
CREATE INDEX volume_links_by_vm ON volume_links (vm_id) WHERE live;

-- vm_snapshot_refs: each VM snapshot's VM and its id in the hypervisor (a new snapshot's
-- parent is found by it); live: false once deleted.
CREATE TABLE vm_snapshot_refs (
    snapshot_id text    PRIMARY KEY,
    vm_id       text    NOT NULL,
    ref         text    NOT NULL,
    live        boolean NOT NULL
);
CREATE INDEX vm_snapshot_refs_by_vm ON vm_snapshot_refs (vm_id, ref);

-- inventory_objects: each zone, host, pool and network stream an inventory sync imported,
-- with its kind and id, and whether it is gone since.
CREATE TABLE inventory_objects (
    stream_id text    PRIMARY KEY,
    kind      text    NOT NULL,
    object_id text    NOT NULL,
    gone      boolean NOT NULL
);

CREATE FUNCTION summarise_vm_lookups(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    vm text;
BEGIN
    IF starts_with(e.stream_id, 'vm-') THEN
        vm := substr(e.stream_id, length('vm-') + 1);
        UPDATE vm_index SET destroying = (e.type = 'VmDestroyRequested') WHERE vm_id = vm;
        IF e.type = 'VmDeployRequested' THEN
            INSERT INTO vm_index (vm_id, instance_name, account_id)
                VALUES (vm, e.data ->> 'instance_name', e.data ->> 'account_id')
                ON CONFLICT (vm_id) DO NOTHING;
        ELSIF e.type = 'VmImported' THEN
            INSERT INTO vm_index (vm_id, imported, account_id)
                VALUES (vm, true, e.data ->> 'account_id')
                ON CONFLICT (vm_id) DO UPDATE SET imported = true, ended = false;
            INSERT INTO volume_links (volume_id, imported_with, vm_id, live)
                SELECT d ->> 'volume_id', vm, vm, true
                FROM jsonb_array_elements(e.data -> 'disks') AS d
                ON CONFLICT (volume_id) DO UPDATE
                SET imported_with = excluded.imported_with, vm_id = excluded.vm_id, live = true;
        ELSIF e.type = 'VmStarted' THEN
            UPDATE vm_index SET started = true WHERE vm_id = vm;
        ELSIF e.type IN ('VmExpunged', 'VmDeployFailed') THEN
            UPDATE vm_index SET ended = true WHERE vm_id = vm;
            IF e.type = 'VmExpunged' THEN
                UPDATE volume_links SET live = false WHERE volume_id IN (
                    SELECT jsonb_array_elements_text(e.data -> 'volume_ids'));
            END IF;
        ELSIF e.type = 'VmAssigned' THEN
            UPDATE vm_index SET account_id = e.data ->> 'account_id' WHERE vm_id = vm;
        END IF;
    END IF;
    IF e.type = 'VolumeCreated' THEN
        INSERT INTO volume_links (volume_id, vm_id, live)
            VALUES (e.data ->> 'volume_id', e.data ->> 'vm_id', true)
            ON CONFLICT (volume_id) DO UPDATE SET vm_id = excluded.vm_id, live = true;
    ELSIF e.type = 'VolumeAttached' THEN
        INSERT INTO volume_links (volume_id, vm_id, live)
            VALUES (e.data ->> 'volume_id', e.data ->> 'vm_id', true)
            ON CONFLICT (volume_id) DO UPDATE SET vm_id = excluded.vm_id;
    ELSIF e.type = 'VolumeDetached' THEN
        UPDATE volume_links SET vm_id = NULL WHERE volume_id = e.data ->> 'volume_id';
    ELSIF e.type = 'VolumeDeleted' THEN
        UPDATE volume_links SET live = false WHERE volume_id = e.data ->> 'volume_id';
    ELSIF e.type = 'VmSnapshotTaken' THEN
        INSERT INTO vm_snapshot_refs VALUES (e.data ->> 'snapshot_id', e.data ->> 'vm_id',
                                             e.data ->> 'ref', true)
            ON CONFLICT (snapshot_id) DO UPDATE
            SET vm_id = excluded.vm_id, ref = excluded.ref, live = true;
    ELSIF e.type = 'VmSnapshotDeleted' THEN
        UPDATE vm_snapshot_refs SET live = false WHERE snapshot_id = e.data ->> 'snapshot_id';
    ELSIF e.type IN ('ZoneImported', 'HostImported', 'PoolImported', 'NetworkImported') THEN
        INSERT INTO inventory_objects VALUES (
            e.stream_id, lower(substr(e.type, 1, length(e.type) - length('Imported'))),
            e.data ->> (lower(substr(e.type, 1, length(e.type) - length('Imported'))) || '_id'),
            false)
            ON CONFLICT (stream_id) DO UPDATE
            SET kind = excluded.kind, object_id = excluded.object_id, gone = false;
    ELSIF e.type = 'InventoryObjectGone' THEN
        INSERT INTO inventory_objects VALUES (e.stream_id, e.data ->> 'kind',
                                              e.data ->> 'object_id', true)
            ON CONFLICT (stream_id) DO UPDATE SET gone = true;
    END IF;
END;
$$;

CREATE FUNCTION events_summarise_vm_lookups() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM summarise_vm_lookups(NEW);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_vm_lookups AFTER INSERT ON events
    FOR EACH ROW WHEN (starts_with(NEW.stream_id, 'vm-') OR NEW.type IN (
        'VolumeCreated', 'VolumeAttached', 'VolumeDetached', 'VolumeDeleted',
        'VmSnapshotTaken', 'VmSnapshotDeleted', 'ZoneImported', 'HostImported',
        'PoolImported', 'NetworkImported', 'InventoryObjectGone'))
    EXECUTE FUNCTION events_summarise_vm_lookups();

-- Events stored before this migration, in their order.
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events
             WHERE starts_with(stream_id, 'vm-') OR type IN (
                 'VolumeCreated', 'VolumeAttached', 'VolumeDetached', 'VolumeDeleted',
                 'VmSnapshotTaken', 'VmSnapshotDeleted', 'ZoneImported', 'HostImported',
                 'PoolImported', 'NetworkImported', 'InventoryObjectGone')
             ORDER BY position LOOP
        PERFORM summarise_vm_lookups(e);
    END LOOP;
END;
$$;
