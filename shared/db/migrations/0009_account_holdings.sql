-- account_holdings: what each account holds, as its resource limits count it, kept like the
-- lookups of 0007 and 0008 by a trigger on events in the transaction of the events it
-- summarises, so a limits decision never waits for the projector. The same rules are in
-- shared/eventstore/_memory.py (tests/contract/test_write_side.py checks both agree).
--
-- One row per VM (its owner, CPUs, memory and CloudStack state; gone once expunged, back
-- when imported again), per volume (owner and state; gone once deleted, or expunged with
-- its VM), per seeded template (the VM snapshot and pool it was seeded from; gone once
-- removed) and per VM snapshot (its owner only: a template counts for the owner of the
-- snapshot it was seeded from). held: whether the row counts against its account: a VM
-- neither Error, Destroyed nor expunged; a volume neither failed, being deleted, deleted
-- nor expunged; a template not removed. A deploy's root volume counts from the request on,
-- as the VM's state Starting.
CREATE TABLE account_holdings (
    kind           text    NOT NULL CHECK (kind IN ('vm', 'volume', 'template', 'vmsnapshot')),
    id             text    NOT NULL,
    account_id     text    NOT NULL DEFAULT '',
    state          text    NOT NULL DEFAULT '',
    cpu_number     bigint  NOT NULL DEFAULT 0,
    memory_mb      bigint  NOT NULL DEFAULT 0,
    vm_snapshot_id text,
    pool_id        text,
    gone           boolean NOT NULL DEFAULT false,
    held           boolean GENERATED ALWAYS AS (NOT gone AND CASE kind
                       WHEN 'vm' THEN state NOT IN ('Error', 'Destroyed', 'Expunging')
                       WHEN 'volume' THEN state NOT IN ('Error', 'Destroy', 'Expunged')
                       WHEN 'template' THEN true
                       ELSE false END) STORED,
    PRIMARY KEY (kind, id)
);
CREATE INDEX account_holdings_by_account ON account_holdings (account_id, kind);
CREATE INDEX account_holdings_templates ON account_holdings (vm_snapshot_id)
    WHERE kind = 'template';

CREATE FUNCTION summarise_holdings(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    vm text;
    vm_state text;
    volume text;
BEGIN
    IF starts_with(e.stream_id, 'vm-') THEN
        vm := substr(e.stream_id, length('vm-') + 1);
        IF e.type = 'VmDeployRequested' THEN
            INSERT INTO account_holdings (kind, id, account_id, state, cpu_number, memory_mb)
                VALUES ('vm', vm, e.data ->> 'account_id', 'Starting',
                        (e.data ->> 'cpu_number')::bigint, (e.data ->> 'memory_mb')::bigint)
                ON CONFLICT (kind, id) DO UPDATE SET account_id = excluded.account_id,
                    state = excluded.state, cpu_number = excluded.cpu_number,
                    memory_mb = excluded.memory_mb, gone = false;
        ELSIF e.type = 'VmImported' THEN
            -- An imported VM keeps the owner it was given (assignVirtualMachine); its
            -- disks take the import's.
            INSERT INTO account_holdings (kind, id, account_id, state, cpu_number, memory_mb)
                VALUES ('vm', vm, e.data ->> 'account_id',
                        CASE WHEN (e.data ->> 'powered_on')::boolean THEN 'Running'
                             ELSE 'Stopped' END,
                        (e.data ->> 'cpu_number')::bigint, (e.data ->> 'memory_mb')::bigint)
                ON CONFLICT (kind, id) DO UPDATE SET state = excluded.state,
                    cpu_number = excluded.cpu_number, memory_mb = excluded.memory_mb,
                    gone = false;
            INSERT INTO account_holdings (kind, id, account_id, state)
                SELECT 'volume', d ->> 'volume_id', e.data ->> 'account_id', 'Ready'
                FROM jsonb_array_elements(e.data -> 'disks') AS d
                ON CONFLICT (kind, id) DO UPDATE SET account_id = excluded.account_id;
        ELSIF e.type = 'VmAssigned' THEN
            UPDATE account_holdings SET account_id = e.data ->> 'account_id'
                WHERE kind = 'vm' AND id = vm;
            INSERT INTO account_holdings (kind, id, account_id, state)
                SELECT 'volume', v, e.data ->> 'account_id', 'Ready'
                FROM jsonb_array_elements_text(e.data -> 'volume_ids') AS v
                ON CONFLICT (kind, id) DO UPDATE SET account_id = excluded.account_id;
            INSERT INTO account_holdings (kind, id, account_id)
                SELECT 'vmsnapshot', s, e.data ->> 'account_id'
                FROM jsonb_array_elements_text(e.data -> 'snapshot_ids') AS s
                ON CONFLICT (kind, id) DO UPDATE SET account_id = excluded.account_id;
        ELSIF e.type = 'VmExpunged' THEN
            UPDATE account_holdings SET gone = true WHERE kind = 'vm' AND id = vm;
            INSERT INTO account_holdings (kind, id, state, gone)
                SELECT 'volume', v, 'Destroy', true
                FROM jsonb_array_elements_text(e.data -> 'volume_ids') AS v
                ON CONFLICT (kind, id) DO UPDATE SET state = 'Destroy', gone = true;
        END IF;
        -- The states of shared.domain.vm.state_after, and a revert's.
        vm_state := CASE e.type
            WHEN 'VmPlaced' THEN 'Starting'
            WHEN 'VmStarted' THEN 'Running'
            WHEN 'VmDeployFailed' THEN 'Error'
            WHEN 'VmStopped' THEN 'Stopped'
            WHEN 'VmRecovered' THEN 'Stopped'
            WHEN 'VmDestroyed' THEN 'Destroyed'
            WHEN 'VmExpunged' THEN 'Expunging'
            WHEN 'VmReverted' THEN CASE WHEN (e.data ->> 'powered_on')::boolean THEN 'Running'
                                        ELSE 'Stopped' END
        END;
        IF vm_state IS NOT NULL THEN
            UPDATE account_holdings SET state = vm_state WHERE kind = 'vm' AND id = vm;
        END IF;
    END IF;

    IF e.type IN ('VolumeFromSnapshotRequested', 'VolumeAllocated', 'VolumeCreated',
                  'VolumeDeleteRequested', 'VolumeDeleted', 'VolumeFailed') THEN
        volume := e.data ->> 'volume_id';
        -- A volume's row starts with its first event, as the catalog's does.
        INSERT INTO account_holdings (kind, id, state) VALUES ('volume', volume, 'Ready')
            ON CONFLICT (kind, id) DO NOTHING;
        IF e.type IN ('VolumeFromSnapshotRequested', 'VolumeAllocated') THEN
            UPDATE account_holdings SET account_id = e.data ->> 'account_id', state = 'Allocated'
                WHERE kind = 'volume' AND id = volume;
        ELSIF e.type = 'VolumeCreated' THEN
            UPDATE account_holdings SET account_id = e.data ->> 'account_id', state = 'Ready'
                WHERE kind = 'volume' AND id = volume;
        ELSIF e.type = 'VolumeDeleteRequested' THEN
            UPDATE account_holdings SET state = 'Destroy' WHERE kind = 'volume' AND id = volume;
        ELSIF e.type = 'VolumeDeleted' THEN
            UPDATE account_holdings SET state = 'Expunged', gone = true
                WHERE kind = 'volume' AND id = volume;
        ELSE
            UPDATE account_holdings SET state = 'Error' WHERE kind = 'volume' AND id = volume;
        END IF;
    ELSIF e.type = 'VmSnapshotTaken' THEN
        INSERT INTO account_holdings (kind, id, account_id)
            VALUES ('vmsnapshot', e.data ->> 'snapshot_id', e.data ->> 'account_id')
            ON CONFLICT (kind, id) DO UPDATE SET account_id = excluded.account_id;
    ELSIF e.type = 'TemplateSeeded' THEN
        INSERT INTO account_holdings (kind, id, vm_snapshot_id, pool_id)
            VALUES ('template', e.data ->> 'template_id', e.data ->> 'vm_snapshot_id',
                    e.data ->> 'pool_id')
            ON CONFLICT (kind, id) DO UPDATE SET vm_snapshot_id = excluded.vm_snapshot_id,
                pool_id = excluded.pool_id, gone = false;
    ELSIF e.type = 'TemplateRemoved' THEN
        UPDATE account_holdings SET gone = true
            WHERE kind = 'template' AND vm_snapshot_id = e.data ->> 'vm_snapshot_id'
            AND pool_id = e.data ->> 'pool_id';
    END IF;
END;
$$;

CREATE FUNCTION events_summarise_holdings() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM summarise_holdings(NEW);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_account_holdings AFTER INSERT ON events
    FOR EACH ROW WHEN (starts_with(NEW.stream_id, 'vm-') OR NEW.type IN (
        'VolumeFromSnapshotRequested', 'VolumeAllocated', 'VolumeCreated',
        'VolumeDeleteRequested', 'VolumeDeleted', 'VolumeFailed', 'VmSnapshotTaken',
        'TemplateSeeded', 'TemplateRemoved'))
    EXECUTE FUNCTION events_summarise_holdings();

-- Events stored before this migration, in their order.
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events
             WHERE starts_with(stream_id, 'vm-') OR type IN (
                 'VolumeFromSnapshotRequested', 'VolumeAllocated', 'VolumeCreated',
                 'VolumeDeleteRequested', 'VolumeDeleted', 'VolumeFailed', 'VmSnapshotTaken',
                 'TemplateSeeded', 'TemplateRemoved')
             ORDER BY position LOOP
        PERFORM summarise_holdings(e);
    END LOOP;
END;
$$;
