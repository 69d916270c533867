"""prepareTemplate, createVolume from VM snapshots, and the life of a VM deployed from one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack, CloudStackApiException
from pyVmomi import vim

from tests.e2e.helpers import (
    by_name,
    clone_calls,
    copy_calls,
    events_of_type,
    fail_text,
    offering,
    seeds_started,
    snapshot,
    vm_named,
    wait_for,
)
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack


def datastore_path(vcsim: Vcsim, path: str) -> Path:
    """The local file behind ``[datastore] dir/file.vmdk`` in vcsim."""
    name, rest = path[1:].split("] ", 1)
    url = dict((p["name"], p["summary.url"]) for _, p in
               vcsim.props(vim.Datastore, ["name", "summary.url"]))[name]
    return Path(url) / rest


def test_prepare_template_seeds_once_and_later_deploys_do_no_seeding(
    stack: dict[str, Any], cloud: CloudStack
) -> None:
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = snapshot(cloud, original["id"], "golden")
    root_pool = cloud.listVolumes(virtualmachineid=original["id"])["volume"][0]["storageid"]
    text = fail_text(lambda: cloud.prepareTemplate(vmsnapshotid=snap,
                                                   storageid="00000000-0000-0000-0000-000000000001"))
    assert "storageid" in text and root_pool in text
    first = cloud.prepareTemplate(vmsnapshotid=snap, storageid=root_pool)["template"][0]
    again = cloud.prepareTemplate(vmsnapshotid=snap)["template"][0]
    assert first["id"] == again["id"] and first["vmsnapshotid"] == snap
    assert first["storageid"] == root_pool
    assert seeds_started(stack, snap) == 1
    seed_name = first["installpath"].split("] ", 1)[1].split("/", 1)[0]
    assert len([c for c in clone_calls(stack) if f">{seed_name}</name>" in c]) == 1

    small = offering(cloud, "Small Instance")
    for n in range(3):
        deployed = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                              name=f"golden-{n}")["virtualmachine"]
        assert deployed["state"] == "Running"
    assert seeds_started(stack, snap) == 1
    assert len([c for c in clone_calls(stack) if f">{seed_name}</name>" in c]) == 1
    listed = [t for t in cloud.listTemplates(templatefilter="all")["template"]
              if t["vmsnapshotid"] == snap]
    assert [t["id"] for t in listed] == [first["id"]]


def test_create_volume_copies_the_disk_named_by_the_snapshots_own_configuration(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_H0_VM1")
    [root] = cloud.listVolumes(virtualmachineid=original["id"])["volume"]
    content = os.urandom(64 * 1024)
    flat = datastore_path(vcsim, root["path"].replace(".vmdk", "-flat.vmdk"))
    flat.write_bytes(content)
    older = snapshot(cloud, original["id"], "older")
    snapshot(cloud, original["id"], "newer")

    volume = cloud.createVolume(vmsnapshotid=older, volumeid=root["id"],
                                name="restored-root")["volume"]
    assert volume["state"] == "Ready" and volume["type"] == "DATADISK"
    assert volume["size"] == root["size"] and volume["storageid"] == root["storageid"]
    assert "virtualmachineid" not in volume
    assert volume["id"] in [v["id"] for v in cloud.listVolumes()["volume"]]
    # The request names the disk of the snapshot's configuration...
    snapshot_disk = next(s for s in cloud.listVMSnapshot(vmsnapshotid=older)["vmSnapshot"])
    assert snapshot_disk["id"] == older
    calls = [c for c in copy_calls(stack) if volume["id"] in c]
    assert len(calls) == 1 and root["path"] in calls[0]
    # ...and vcsim copied its bytes.
    copied = datastore_path(vcsim, volume["path"].replace(".vmdk", "-flat.vmdk"))
    assert copied.read_bytes() == content

    # A volume that was not part of that VM at snapshot time is refused, by name.
    other = vm_named(cloud, "DC0_C0_RP0_VM1")
    [foreign] = cloud.listVolumes(virtualmachineid=other["id"])["volume"]
    text = fail_text(lambda: cloud.createVolume(vmsnapshotid=older, volumeid=foreign["id"]))
    assert "volumeid" in text and foreign["id"] in text
    text = fail_text(lambda: cloud.createVolume(vmsnapshotid=older, volumeid=root["id"],
                                                diskofferingid=root["id"]))
    assert "diskofferingid" in text


def test_volume_operations_refused_on_a_vm_with_snapshots_and_working_without(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_H0_VM1")
    [root] = cloud.listVolumes(virtualmachineid=original["id"], type="ROOT")["volume"][:1]
    older = cloud.listVMSnapshot(virtualmachineid=original["id"])["vmSnapshot"][0]["id"]
    spare = cloud.createVolume(vmsnapshotid=older, volumeid=root["id"], name="spare")["volume"]

    with pytest.raises(CloudStackApiException) as refused:
        cloud.attachVolume(id=spare["id"], virtualmachineid=original["id"])
    assert refused.value.error["errorcode"] == 536
    assert "VM snapshot" in refused.value.error["errortext"]
    with pytest.raises(CloudStackApiException) as refused_resize:
        cloud.resizeVolume(id=root["id"], size=20)
    assert refused_resize.value.error["errorcode"] == 536

    fresh = cloud.deployVirtualMachine(vmsnapshotid=older,
                                       serviceofferingid=offering(cloud, "Small Instance"),
                                       name="no-snapshots")["virtualmachine"]
    attached = cloud.attachVolume(id=spare["id"], virtualmachineid=fresh["id"])["volume"]
    assert attached["virtualmachineid"] == fresh["id"]
    assert spare["path"] in vcsim.vm(fresh["instancename"])["disks"]
    resized = cloud.resizeVolume(id=spare["id"], size=20)["volume"]
    assert resized["size"] == 20 * 1024**3
    detached = cloud.detachVolume(id=spare["id"])["volume"]
    assert "virtualmachineid" not in detached
    assert spare["path"] not in vcsim.vm(fresh["instancename"])["disks"]

    # Expunging a VM keeps its data disks, detached, as CloudStack does.
    cloud.attachVolume(id=spare["id"], virtualmachineid=fresh["id"])
    cloud.destroyVirtualMachine(id=fresh["id"], expunge="true")
    assert fresh["instancename"] not in vcsim.vm_names()
    kept = cloud.listVolumes(id=spare["id"])["volume"][0]
    assert kept["state"] == "Ready" and "virtualmachineid" not in kept
    assert datastore_path(vcsim, spare["path"].replace(".vmdk", "-flat.vmdk")).exists()
    assert cloud.listVolumes(virtualmachineid=fresh["id"]) == {}


def test_a_vm_deployed_from_a_snapshot_lives_like_any_other(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    origin = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = cloud.listVMSnapshot(virtualmachineid=origin["id"])["vmSnapshot"][0]["id"]
    small = offering(cloud, "Small Instance")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                    name="lifer")["virtualmachine"]
    name = vm["instancename"]
    assert cloud.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    assert vcsim.vm(name)["power"] == "poweredOff"
    assert cloud.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert vcsim.vm(name)["power"] == "poweredOn"
    assert cloud.rebootVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"

    # Its own snapshots, and deploying from them.
    own = snapshot(cloud, vm["id"], "lifer-snap")
    child = cloud.deployVirtualMachine(vmsnapshotid=own, serviceofferingid=small,
                                       name="lifer-child")["virtualmachine"]
    assert child["state"] == "Running" and vcsim.vm(child["instancename"])["power"] == "poweredOn"

    destroyed = cloud.destroyVirtualMachine(id=vm["id"])["virtualmachine"]
    assert destroyed["state"] == "Destroyed" and vcsim.vm(name)["power"] == "poweredOff"
    recovered = cloud.recoverVirtualMachine(id=vm["id"])["virtualmachine"]
    assert recovered["state"] == "Stopped"
    cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
    assert name not in vcsim.vm_names()
    assert cloud.listVirtualMachines(id=vm["id"]) == {}
    [root] = [v for v in cloud.listVolumes(virtualmachineid=child["id"])["volume"]]
    assert root["state"] == "Ready"
    assert all(v.get("virtualmachineid") != vm["id"] for v in cloud.listVolumes()["volume"])


def test_a_deleted_snapshots_template_is_collected_once_its_last_vm_is_expunged(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    origin = vm_named(cloud, "DC0_C0_RP0_VM1")
    snap = snapshot(cloud, origin["id"], "short-lived")
    small = offering(cloud, "Small Instance") if cloud.listVMSnapshot(vmsnapshotid=snap)[
        "vmSnapshot"][0]["cpunumber"] == 1 else offering(cloud, "Large Instance")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                    name="last-user")["virtualmachine"]
    [template] = [t for t in cloud.listTemplates(templatefilter="all")["template"]
                  if t["vmsnapshotid"] == snap]
    seed_name = template["installpath"].split("] ", 1)[1].split("/", 1)[0]

    cloud.deleteVMSnapshot(vmsnapshotid=snap)
    assert seed_name in vcsim.vm_names()  # still used by last-user
    assert vcsim.vm(vm["instancename"])["power"] == "poweredOn"
    assert events_of_type(stack, "TemplateRemoved", vm_snapshot_id=snap) == 0

    cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
    wait_for(lambda: seed_name not in vcsim.vm_names(), "the unused template to be removed")
    # The removal is recorded once, right after vCenter's task; the list follows.
    wait_for(lambda: events_of_type(stack, "TemplateRemoved", vm_snapshot_id=snap) == 1,
             "the TemplateRemoved event")
    wait_for(lambda: all(t["vmsnapshotid"] != snap
                         for t in cloud.listTemplates(templatefilter="all").get("template", [])),
             "listTemplates to drop the removed template")
    assert events_of_type(stack, "TemplateRemoved", vm_snapshot_id=snap) == 1
    assert any(e["type"] == "TEMPLATE.DELETE" for e in cloud.listEvents()["event"])


def test_create_volume_from_a_data_disk_of_an_older_snapshot(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    vcsim.create_vm("two-disks", "DC0_C0_H1", "LocalDS_0", ["LocalDS_0"], ["VM Network"])
    cloud.syncInventory()
    vm = vm_named(cloud, "two-disks")
    volumes = cloud.listVolumes(virtualmachineid=vm["id"])["volume"]
    data = next(v for v in volumes if v["type"] == "DATADISK")
    content = os.urandom(32 * 1024)
    datastore_path(vcsim, data["path"].replace(".vmdk", "-flat.vmdk")).write_bytes(content)
    older = snapshot(cloud, vm["id"], "with-data")
    snapshot(cloud, vm["id"], "later")
    copy = cloud.createVolume(vmsnapshotid=older, volumeid=data["id"])["volume"]
    assert copy["size"] == data["size"] and copy["storageid"] == data["storageid"]
    copied = datastore_path(vcsim, copy["path"].replace(".vmdk", "-flat.vmdk"))
    assert copied.read_bytes() == content


def test_an_empty_volume_is_made_on_its_first_attach_and_deleted_once_detached(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    small = by_name(cloud.listDiskOfferings()["diskoffering"], "Small")
    volume = cloud.createVolume(diskofferingid=small["id"], name="scratch")["volume"]
    assert volume["state"] == "Allocated" and volume["size"] == 5 * 1024**3
    assert "path" not in volume and "virtualmachineid" not in volume
    assert "fixed size of 5 GB" in fail_text(
        lambda: cloud.createVolume(diskofferingid=small["id"], size=7))

    snap = snapshot(cloud, vm_named(cloud, "DC0_C0_RP0_VM0")["id"], "scratch-base")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, name="with-scratch",
                                    serviceofferingid=offering(cloud, "Small Instance"),
                                    )["virtualmachine"]
    attached = cloud.attachVolume(id=volume["id"], virtualmachineid=vm["id"])["volume"]
    assert attached["state"] == "Ready" and attached["virtualmachineid"] == vm["id"]
    assert attached["path"] in vcsim.vm(vm["instancename"])["disks"]
    [root] = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    assert attached["storageid"] == root["storageid"]  # made beside the VM's root disk
    made = datastore_path(vcsim, attached["path"])
    assert made.exists()

    assert "detach it first" in fail_text(lambda: cloud.deleteVolume(id=volume["id"]))
    assert "root volume" in fail_text(lambda: cloud.deleteVolume(id=root["id"]))
    cloud.detachVolume(id=volume["id"])
    # A detached volume grows through vCenter's virtual disk manager.
    resized = cloud.resizeVolume(id=volume["id"], size=8)["volume"]
    assert resized["size"] == 8 * 1024**3 and "virtualmachineid" not in resized
    assert cloud.deleteVolume(id=volume["id"])["success"] in (True, "true")
    wait_for(lambda: cloud.listVolumes(id=volume["id"]) == {}, "the volume to be expunged")
    assert not made.exists()

    never_used = cloud.createVolume(diskofferingid=small["id"])["volume"]
    cloud.deleteVolume(id=never_used["id"])
    wait_for(lambda: cloud.listVolumes(id=never_used["id"]) == {}, "the Allocated volume gone")
