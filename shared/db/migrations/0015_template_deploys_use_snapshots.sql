-- A VM deployed from a seeded template (deployVirtualMachine templateid=) depends on the VM
-- snapshot the template was seeded from, as one deployed from the snapshot does: its disk
-- is backed by that template, so the template is not collected while the VM lives. Before
-- this migration snapshot_uses counted only deploys naming vm_snapshot_id. The same rule is
-- in shared/eventstore/_memory.py (tests/contract/test_write_side.py checks both agree).
CREATE OR REPLACE FUNCTION summarise_snapshot_use(e events) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF e.type = 'VmDeployRequested' AND e.data ->> 'vm_snapshot_id' IS NOT NULL THEN
        INSERT INTO snapshot_uses VALUES (e.data ->> 'vm_snapshot_id', 'vm', e.data ->> 'vm_id',
                                          true)
            ON CONFLICT DO NOTHING;
    ELSIF e.type = 'VmDeployRequested' AND e.data ->> 'template_id' IS NOT NULL THEN
        INSERT INTO snapshot_uses
            SELECT st.vm_snapshot_id, 'vm', e.data ->> 'vm_id', true
            FROM seed_templates st WHERE st.template_id = e.data ->> 'template_id'
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

-- Deploys from templates stored before this migration (expunged ones no longer depend).
INSERT INTO snapshot_uses
    SELECT st.vm_snapshot_id, 'vm', d.data ->> 'vm_id',
           NOT EXISTS (SELECT 1 FROM events x WHERE x.type = 'VmExpunged'
                       AND x.data ->> 'vm_id' = d.data ->> 'vm_id')
    FROM events d JOIN seed_templates st ON st.template_id = d.data ->> 'template_id'
    WHERE d.type = 'VmDeployRequested' AND d.data ->> 'vm_snapshot_id' IS NULL
    ON CONFLICT DO NOTHING;
