-- A VM's volumes and VM snapshots found by the VM (listVolumes and listVMSnapshot with
-- virtualmachineid, a VM's expunge): without it each lookup read every object of its kind.
CREATE INDEX catalog_by_vm ON catalog (kind, (data ->> 'vm_id'));
