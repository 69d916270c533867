"""The vSphere requests the VMware driver builds, checked without a vCenter."""

from __future__ import annotations

import itertools

from pyVmomi import vim

from proto.events import dvs_binding
from shared.drivers import vmware
from shared.drivers.base import CloneRequest, NetworkBinding
from shared.drivers.vmware import (
    FULL_CLONE,
    LINKED_CLONE,
    clone_spec,
    poll_pauses,
    reconfigure_spec,
    seed_spec,
)

STANDARD = NetworkBinding("network-6", "VM Network")
SWITCH = "50 2e 65 e4 5b 7b 1a 6f-b5 9d 3c 43 2a 16 0c 63"  # vSphere's uuids have spaces
DISTRIBUTED = NetworkBinding("dvportgroup-12", "DC0_DVPG0", dvs_binding(SWITCH, "dvportgroup-12"))


def request(**overrides: object) -> CloneRequest:
    values: dict[str, object] = dict(
        name="i-1-VM", template_ref="vm-77", base_snapshot_ref="snapshot-79",
        host_ref="host-47", pool_ref="datastore-59", linked=True, cpu_number=2, cpu_mhz=2000,
        memory_mb=1024, networks=[DISTRIBUTED, STANDARD])
    values.update(overrides)
    return CloneRequest(**values)  # type: ignore[arg-type]


def test_linked_clone_names_the_base_snapshot_host_and_pool() -> None:
    spec = clone_spec(request(), "resgroup-23")
    assert spec.location.diskMoveType == LINKED_CLONE
    assert spec.snapshot._moId == "snapshot-79"
    assert spec.location.host._moId == "host-47"
    assert spec.location.datastore._moId == "datastore-59"
    assert spec.location.pool._moId == "resgroup-23"
    assert spec.powerOn is False and spec.template is False


def test_full_clone_when_the_pool_asks_for_it() -> None:
    spec = clone_spec(request(linked=False), "resgroup-23")
    assert spec.location.diskMoveType == FULL_CLONE and spec.snapshot is None


def nic(key: int) -> vim.vm.device.VirtualEthernetCard:
    return vim.vm.device.VirtualE1000(key=key)


def disk(key: int, unit: int) -> vim.vm.device.VirtualDisk:
    return vim.vm.device.VirtualDisk(key=key, controllerKey=1000, unitNumber=unit)


def test_reconfigure_replaces_every_nic_by_the_requested_ones() -> None:
    spec = reconfigure_spec(request(), [disk(204, 0), nic(4000), nic(4001)])
    removed = [c.device.key for c in spec.deviceChange if c.operation == "remove"]
    added = [c.device for c in spec.deviceChange if c.operation == "add"]
    assert removed == [4000, 4001]
    assert isinstance(added[0].backing,
                      vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
    assert added[0].backing.port.portgroupKey == "dvportgroup-12"
    assert added[0].backing.port.switchUuid == SWITCH
    assert added[1].backing.deviceName == "VM Network"
    assert (spec.numCPUs, spec.memoryMB, spec.cpuAllocation.limit) == (2, 1024, 2000)


def test_seed_copies_only_the_root_disk_and_no_nics() -> None:
    spec = seed_spec("snapshot-74", "datastore-59", [disk(205, 1), disk(204, 0), nic(4000)])
    removed = sorted(c.device.key for c in spec.config.deviceChange)
    assert removed == [205, 4000]  # the data disk (unit 1) and the NIC
    assert spec.location.diskMoveType == FULL_CLONE
    assert spec.snapshot._moId == "snapshot-74"


def test_a_task_is_read_again_after_pauses_of_about_half_the_time_waited() -> None:
    """A task that ends after t is seen done by about 1.5 t: each pause (once past the
    first) is at most half of what was waited before it, until the cap."""
    pauses = list(itertools.islice(poll_pauses(), 40))
    assert pauses[0] == vmware.POLL_FIRST_S
    waited = pauses[0]
    for pause in pauses[1:]:
        assert pause <= waited / 2 + vmware.POLL_FIRST_S + 1e-12  # doubling: 2 ms after 1
        assert pause <= vmware.POLL_CAP_S
        waited += pause
    assert pauses[-1] == vmware.POLL_CAP_S  # long tasks are read at the cap's pace
    assert sum(1 for p in pauses if p < vmware.POLL_CAP_S) < 12  # and reach it quickly
