-- vm_instances.addresses: the guest IPv4 addresses each of a VM's networks gave its NICs
-- ({network id: {"addresses": [...], "cidr": ..., "gateway": ...}}), projected from
-- AddressesAllocated and AddressesReleased. No such event was stored before this
-- migration, so every existing row holds none.
ALTER TABLE vm_instances ADD COLUMN addresses jsonb NOT NULL DEFAULT '{}';
