-- Fewer writes of the write side's summaries per event. Every event of a VM's stream ran
-- summarise_holdings (0009) and rewrote its vm_index row (0008: whether a destroy is under
-- way), though most of them change neither: a deploy's eight events rewrote vm_index
-- eight times and account_holdings three, each a new row version, its WAL and its index
-- entries.
--
-- An update that changes nothing in a row is skipped (PostgreSQL's own
-- suppress_redundant_updates_trigger), and summarise_holdings runs only for the events
-- whose types it reads (those its body names; for a VM's stream, the states of
-- shared.domain.vm.state_after, a revert's, and its creation, import, assignment and
-- expunge).
CREATE TRIGGER vm_index_changed_only BEFORE UPDATE ON vm_index
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
CREATE TRIGGER account_holdings_changed_only BEFORE UPDATE ON account_holdings
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();

DROP TRIGGER events_account_holdings ON events;
CREATE TRIGGER events_account_holdings AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN (
        'VmDeployRequested', 'VmImported', 'VmAssigned', 'VmExpunged', 'VmPlaced',
        'VmStarted', 'VmDeployFailed', 'VmStopped', 'VmRecovered', 'VmDestroyed',
        'VmReverted',
        'VolumeFromSnapshotRequested', 'VolumeAllocated', 'VolumeCreated',
        'VolumeDeleteRequested', 'VolumeDeleted', 'VolumeFailed', 'VmSnapshotTaken',
        'TemplateSeeded', 'TemplateRemoved'))
    EXECUTE FUNCTION events_summarise_holdings();
