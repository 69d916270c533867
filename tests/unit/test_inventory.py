"""What an inventory sync records from vCenter's view: pure, no vCenter."""

from __future__ import annotations

from datetime import UTC, datetime

from proto import streams
from proto.events import (
    HostImported,
    InventoryObjectGone,
    PoolImported,
    VmExpunged,
    VmImported,
    VmSnapshotDeleted,
    VmSnapshotTaken,
    VmStopped,
)
from shared.domain.inventory import (
    DeployedVm,
    object_id,
    observed,
    snapshot_description,
    vanished,
)
from shared.domain.seed import template_name
from shared.drivers.base import (
    DiskInfo,
    HostInfo,
    Inventory,
    NetworkInfo,
    NicInfo,
    PoolInfo,
    SnapshotInfo,
    VmInfo,
)

T0 = datetime(2026, 11, 28, tzinfo=UTC)
ROOT = DiskInfo("204", "[ds1] web/web.vmdk", "datastore-1", 10 * 2**30)
DATA = DiskInfo("205", "[ds2] web/data.vmdk", "datastore-2", 2**30)


def snap(ref: str, parent: str | None, description: str = "") -> SnapshotInfo:
    return SnapshotInfo(ref, ref, description, T0, False, parent, 1, 512, [ROOT, DATA],
                        [NicInfo("4000", "network-6", "aa")])


def inventory(*vms: VmInfo) -> Inventory:
    return Inventory(
        "datacenter-1", "DC0",
        [HostInfo("host-1", "h1", "c1", 2, 2000, 4 * 2**30, ["datastore-1", "datastore-2"])],
        [PoolInfo("datastore-1", "ds1", "ds:///1", 2**40, 2**39, ["host-1"])],
        [NetworkInfo("network-6", "VM Network")],
        list(vms),
    )


def vm(name: str, *, template: bool = False, snapshots: list[SnapshotInfo] | None = None,
       current: str | None = None) -> VmInfo:
    return VmInfo(f"vm-{name}", name, "uuid", template, "host-1", 1, 512, True, [ROOT, DATA],
                  [NicInfo("4000", "network-6", "aa")], snapshots or [], current)


def test_ids_are_stable_and_link_objects() -> None:
    events = dict(observed(inventory(vm("web")), "admin", set()))
    host = events[streams.host(object_id("host", "host-1"))]
    pool = events[streams.pool(object_id("pool", "datastore-1"))]
    assert isinstance(host, HostImported) and isinstance(pool, PoolImported)
    assert object_id("pool", "datastore-1") in host.pool_ids
    assert pool.host_ids == [host.host_id]
    web = events[streams.vm(object_id("vm", "vm-web"))]
    assert isinstance(web, VmImported)
    assert [d.root for d in web.disks] == [True, False]
    assert web.disks[1].pool_id == object_id("pool", "datastore-2")
    assert observed(inventory(vm("web")), "admin", set()) == list(events.items())


def test_templates_seeds_and_own_vms_are_not_imported() -> None:
    seen = observed(inventory(vm("golden", template=True), vm(template_name("s", "p")),
                              vm("i-1-VM"), vm("web")), "admin", {"i-1-VM"})
    names = [e.name for _, e in seen if isinstance(e, VmImported)]
    assert names == ["web"]


def test_snapshot_tree_with_configs_and_ids_of_snapshots_taken_through_snapdeploy() -> None:
    tagged = snapshot_description("nightly", "0f8fad5b-d9cb-469f-a165-70867728950e")
    tree = [snap("snapshot-1", None), snap("snapshot-2", "snapshot-1", tagged)]
    seen = [e for _, e in observed(inventory(vm("web", snapshots=tree, current="snapshot-2")),
                                   "admin", set()) if isinstance(e, VmSnapshotTaken)]
    first, second = seen
    assert second.snapshot_id == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert second.parent_id == first.snapshot_id == object_id("snapshot", "snapshot-1")
    assert (first.current, second.current) == (False, True)
    assert second.cpu_number == 1 and [d.root for d in second.disks] == [True, False]


def test_what_vcenter_no_longer_shows_is_expunged_or_deleted() -> None:
    still = streams.vm("vm-kept")
    seen = [(still, VmImported(vm_id="vm-kept", zone_id="z", account_id="a", name="kept",
                               ref="vm-1", host_id="h", cpu_number=1, memory_mb=512,
                               powered_on=True, disks=[], nics=[])),
            (streams.vm_snapshot("snap-kept"), VmStopped(vm_id="unused"))]
    gone = vanished(seen, {"vm-kept": ["vol-1"], "vm-gone": ["vol-2", "vol-3"]},
                    {"snap-kept": "vm-kept", "snap-gone": "vm-kept", "snap-of-gone": "vm-gone"})
    assert gone == [
        (streams.vm_snapshot("snap-gone"), VmSnapshotDeleted(snapshot_id="snap-gone",
                                                             vm_id="vm-kept")),
        (streams.vm_snapshot("snap-of-gone"), VmSnapshotDeleted(snapshot_id="snap-of-gone",
                                                                vm_id="vm-gone")),
        (streams.vm("vm-gone"), VmExpunged(vm_id="vm-gone", volume_ids=["vol-2", "vol-3"])),
    ]
    assert vanished(seen, {"vm-kept": ["vol-1"]}, {"snap-kept": "vm-kept"}) == []


def test_hosts_pools_networks_and_zones_no_longer_shown_are_gone() -> None:
    seen = [(streams.host("h-kept"), VmStopped(vm_id="unused"))]
    objects = {streams.host("h-kept"): ("host", "h-kept"),
               streams.host("h-gone"): ("host", "h-gone"),
               streams.network("n-gone"): ("network", "n-gone")}
    assert vanished(seen, {}, {}, objects) == [
        (streams.host("h-gone"), InventoryObjectGone(kind="host", object_id="h-gone")),
        (streams.network("n-gone"), InventoryObjectGone(kind="network", object_id="n-gone")),
    ]


def test_deployed_vms_gone_from_vcenter_are_expunged_with_their_snapshots() -> None:
    deployed = {
        "vm-gone": DeployedVm("i-1234-aaaaaaaa-VM", ["vol-root", "vol-data"], ["snap-of-gone"]),
        "vm-there": DeployedVm("i-1234-bbbbbbbb-VM", ["vol-there"], ["snap-of-there"]),
    }
    # vCenter restarted with a fresh inventory: its own VMs, and a new deploy's VM.
    names = {"DC0_H0_VM0", "i-1234-bbbbbbbb-VM", "i-1234-cccccccc-VM"}
    assert vanished([], {}, {}, deployed=deployed, vm_names=names) == [
        (streams.vm_snapshot("snap-of-gone"),
         VmSnapshotDeleted(snapshot_id="snap-of-gone", vm_id="vm-gone")),
        (streams.vm("vm-gone"), VmExpunged(vm_id="vm-gone", volume_ids=["vol-data",
                                                                        "vol-root"])),
    ]


def test_deployed_vms_still_in_vcenter_keep_their_snapshots() -> None:
    """Deployed VMs are not described by ``seen``: their snapshots are not taken for gone
    because of that, only because their VM is."""
    deployed = {"vm-a": DeployedVm("i-1-a-VM", ["vol-a"], ["snap-1", "snap-2"])}
    assert vanished([], {}, {}, deployed=deployed, vm_names={"i-1-a-VM"}) == []
    assert vanished([], {}, {}, deployed={}, vm_names=set()) == []


def test_a_deployed_vm_is_found_by_its_name_not_by_an_object_id_reused() -> None:
    """After a restart vCenter may give a new VM the object id the deployed one had; only
    the instance name says whether the deployed VM is still there."""
    seen = observed(inventory(vm("i-9-new-VM")), "admin", {"i-9-new-VM"})
    deployed = {object_id("vm", "vm-i-9-new-VM"): DeployedVm("i-9-old-VM", ["vol"], [])}
    gone = vanished(seen, {}, {}, deployed=deployed, vm_names={"i-9-new-VM"})
    assert [type(e) for _, e in gone] == [VmExpunged]
