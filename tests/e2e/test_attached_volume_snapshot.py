"""A volume made through the API and attached to a VM keeps its own id in the VM snapshots
taken afterwards: createVolume from such a snapshot names it by that id, and an inventory
sync over the VM records no second volume for its disk. On vcsim, with a VM deployed from a
snapshot and with a VM found by a sync."""

from __future__ import annotations

from typing import Any

import pytest
from cs import CloudStack

from tests.e2e.helpers import by_name, offering, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack


def volumes(cloud: CloudStack) -> list[dict[str, Any]]:
    return list(cloud.listVolumes(listall=True).get("volume", []))


def empty_volume_attached(cloud: CloudStack, vm_id: str, name: str) -> dict[str, Any]:
    small = by_name(cloud.listDiskOfferings()["diskoffering"], "Small")
    volume = cloud.createVolume(diskofferingid=small["id"], name=name)["volume"]
    assert volume["state"] == "Allocated"
    attached = cloud.attachVolume(id=volume["id"], virtualmachineid=vm_id)["volume"]
    assert attached["id"] == volume["id"] and attached["virtualmachineid"] == vm_id
    assert attached["state"] == "Ready"
    return dict(attached)


def copied_from_snapshot(cloud: CloudStack, vm_id: str, volume: dict[str, Any],
                         name: str) -> None:
    """A VM snapshot of ``vm_id`` names ``volume`` by its id: a copy of it from the
    snapshot is Ready, on its pool, of its size."""
    snap = snapshot(cloud, vm_id, f"{name}-snap")
    copy = cloud.createVolume(vmsnapshotid=snap, volumeid=volume["id"],
                              name=f"{name}-copy")["volume"]
    assert copy["state"] == "Ready" and copy["type"] == "DATADISK"
    assert copy["storageid"] == volume["storageid"] and copy["size"] == volume["size"]
    assert copy["path"] != volume["path"]


def no_phantom_after_sync(cloud: CloudStack, vm_id: str, volume: dict[str, Any]) -> None:
    """After a sync, the volume's disk is listed once, as that volume, unchanged, and the
    VM's volumes are what they were."""
    before = {v["id"]: v for v in volumes(cloud)}
    of_vm = sorted(v["id"] for v in cloud.listVolumes(virtualmachineid=vm_id)["volume"])
    cloud.syncInventory()
    after = {v["id"]: v for v in volumes(cloud)}
    assert sorted(after) == sorted(before)
    assert [v["id"] for v in after.values() if v.get("path") == volume["path"]] == \
        [volume["id"]]
    kept = after[volume["id"]]
    assert (kept["name"], kept["account"], kept["type"], kept["virtualmachineid"]) == (
        volume["name"], volume["account"], "DATADISK", vm_id)
    assert sorted(v["id"] for v in cloud.listVolumes(virtualmachineid=vm_id)["volume"]) == \
        of_vm


def test_a_deployed_vms_snapshot_names_its_attached_volume_by_the_volumes_id(
    cloud: CloudStack
) -> None:
    base = snapshot(cloud, vm_named(cloud, "DC0_C0_RP0_VM0")["id"], "attach-base")
    vm = cloud.deployVirtualMachine(vmsnapshotid=base, name="with-data",
                                    serviceofferingid=offering(cloud, "Small Instance"),
                                    )["virtualmachine"]
    volume = empty_volume_attached(cloud, vm["id"], "deployed-data")

    copied_from_snapshot(cloud, vm["id"], volume, "deployed-data")
    no_phantom_after_sync(cloud, vm["id"], volume)


def test_an_imported_vms_snapshot_names_its_attached_volume_and_a_sync_adds_none(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    vcsim.create_vm("found-later", "DC0_C0_H1", "LocalDS_0", [], ["VM Network"])
    cloud.syncInventory()
    vm = vm_named(cloud, "found-later")
    volume = empty_volume_attached(cloud, vm["id"], "imported-data")
    assert volume["path"] in vcsim.vm("found-later")["disks"]
    no_phantom_after_sync(cloud, vm["id"], volume)

    copied_from_snapshot(cloud, vm["id"], volume, "imported-data")
    # The sync finds the snapshot as it was recorded, with the volume's disk.
    no_phantom_after_sync(cloud, vm["id"], volume)
