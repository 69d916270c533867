"""The spec's flow on KVM past a deploy's disk (test_kvm.py proves that one), through the API
of one stack with its KVM zone, each step checked in libvirt and on the pool's files.

A VM is made in the zone (its disk a copy of the demo guest's) and imported; with it off,
marker A is written with qemu-io, VM snapshot S is taken through the API, then marker B is
written, so a file as of S is told apart from the disk as it is now. From S:
prepareTemplate seeds one standalone qcow2 equal to the disk as of S; with the pool's
kvm.create.full.clone on a deploy gets a standalone copy of that template, with it off a
linked overlay. The linked clone is stopped, started, rebooted, destroyed, recovered and
expunged; the full clone has volumes attached, detached, resized and deleted, refused
while it has VM snapshots. Two linked clones of a second snapshot outlive its deletion
and each other, and its template goes with the last of them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cs import CloudStack

from shared.domain.job import STOP_VM_CMD
from shared.domain.seed import SEED_PREFIX
from shared.domain.volume import GB
from shared.stack._kvm import create_guest
from tests.e2e.helpers import (
    OPERATION,
    audit_events,
    events_of_type,
    finished_job,
    handled,
    logged_operations,
    refused,
    seeds_started,
    snapshot,
    vm_named,
    wait_for,
    wait_for_console,
)
from tests.harness.libvirt import (
    backing_chain,
    disk_as_of,
    domain_disks,
    domain_names,
    pool_file,
    read_marker,
    same_image,
    write_marker,
)

pytestmark = pytest.mark.stack
KVM = True  # the stack runs its KVM zone

ORIGINAL = "kvm-life"  # the VM the markers are written to, made in the zone and imported
FULL_CLONE = "kvm.create.full.clone"
UP, READY = "snapdeploy-guest: up", "snapdeploy-guest: ready"
RESOURCE_IN_USE = 536


def printed(text: str) -> str:
    """The line the demo guest prints for its root disk's marker (tools/guest/init)."""
    return f"snapdeploy-marker vda: {text}"


@dataclass(frozen=True)
class Original:
    vm_id: str
    root: dict[str, Any]  # its root volume, as listVolumes shows it
    root_file: Path
    s: str  # VM snapshot S's id (marker A); the disk holds B now


@dataclass(frozen=True)
class Clones:
    full: dict[str, Any]  # deployed from S with kvm.create.full.clone true
    linked: dict[str, Any]  # deployed from S after it was set back to false



@pytest.fixture(scope="module")
def original(cloud: CloudStack, conn: Any, pool_dir: Path) -> Original:
    """A VM made in libvirt, off, imported by syncInventory; marker A, snapshot S, marker B."""
    create_guest(conn, pool_dir, ORIGINAL, start=False)
    assert cloud.syncInventory()["success"] is True
    vm = wait_for(lambda: cloud.listVirtualMachines(name=ORIGINAL).get("virtualmachine"),
                  f"{ORIGINAL} imported")[0]
    assert (vm["state"], vm["hypervisor"]) == ("Stopped", "KVM")
    [root] = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    root_file = pool_file(pool_dir, root["path"])
    assert root_file == pool_dir / f"{ORIGINAL}.qcow2"
    write_marker(root_file, "life A")
    taken = snapshot(cloud, vm["id"], "life-a")
    write_marker(root_file, "life B")
    return Original(vm["id"], root, root_file, taken)


def _template_of(cloud: CloudStack, snapshot_id: str) -> dict[str, Any] | None:
    found = [t for t in cloud.listTemplates(templatefilter="all").get("template", [])
             if t["vmsnapshotid"] == snapshot_id]
    assert len(found) <= 1, found
    return dict(found[0]) if found else None


def _setting(cloud: CloudStack, pool_id: str) -> str:
    [setting] = cloud.listConfigurations(storageid=pool_id)["configuration"]
    assert setting["name"] == FULL_CLONE, setting
    return str(setting["value"])


def _set_full_clone(cloud: CloudStack, pool_id: str, value: str) -> None:
    changed = cloud.updateConfiguration(name=FULL_CLONE, value=value,
                                        storageid=pool_id)["configuration"]
    assert (changed["name"], changed["value"]) == (FULL_CLONE, value)
    assert _setting(cloud, pool_id) == value


def _deploy(cloud: CloudStack, snapshot_id: str, offering: str, name: str) -> dict[str, Any]:
    vm = dict(cloud.deployVirtualMachine(vmsnapshotid=snapshot_id, serviceofferingid=offering,
                                         name=name)["virtualmachine"])
    assert (vm["state"], vm["hypervisor"], vm["vmsnapshotid"]) == \
        ("Running", "KVM", snapshot_id), vm
    return vm


@pytest.fixture(scope="module")
def clones(cloud: CloudStack, original: Original, tiny: str) -> Clones:
    """A deploy from S with the pool's kvm.create.full.clone set to true, then one with it
    set back to false."""
    pool_id = original.root["storageid"]
    assert _setting(cloud, pool_id) == "false"  # KVM's default: linked clones
    _set_full_clone(cloud, pool_id, "true")
    try:
        full = _deploy(cloud, original.s, tiny, "life-full")
    finally:
        _set_full_clone(cloud, pool_id, "false")
    return Clones(full, _deploy(cloud, original.s, tiny, "life-linked"))


def _job(cloud: CloudStack, answer: dict[str, Any]) -> dict[str, Any]:
    """The finished job of an async command's answer; it must have succeeded."""
    job = finished_job(cloud, answer["jobid"])
    assert job["jobstatus"] == 1, job
    return job


def _shut_off(conn: Any, name: str) -> bool:
    return bool(conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_SHUTOFF)


def _ops_naming(stack: dict[str, Any], service: str, text: str) -> list[tuple[str, str]]:
    """The operations a service's driver logged whose description names ``text``."""
    return [(op, what) for op, what in logged_operations(stack, service).items()
            if text in what]


def test_prepare_template_seeds_the_snapshot_once_as_a_standalone_qcow2_on_its_pool(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original, pool_dir: Path,
) -> None:
    zone_id = vm_named(cloud, ORIGINAL)["zoneid"]
    assert seeds_started(stack, original.s) == 0  # never deployed from
    [template] = cloud.prepareTemplate(vmsnapshotid=original.s)["template"]
    assert (template["hypervisor"], template["format"], template["isready"]) == \
        ("KVM", "QCOW2", True)
    assert (template["vmsnapshotid"], template["storageid"], template["zoneid"]) == \
        (original.s, original.root["storageid"], zone_id)
    assert _template_of(cloud, original.s) == template

    # Again: the same template, nothing seeded anew.
    assert cloud.prepareTemplate(vmsnapshotid=original.s)["template"] == [template]
    assert seeds_started(stack, original.s) == 1
    assert events_of_type(stack, "TemplateSeeded", vm_snapshot_id=original.s) == 1

    # Its file: a qcow2 of its own on the snapshot's pool, the root disk as of S (marker A),
    # not as it is now (B).
    template_file = pool_file(pool_dir, template["installpath"])
    assert template_file == pool_dir / f"{SEED_PREFIX}{template['id']}.qcow2"
    [image] = backing_chain(template_file)
    assert image["format"] == "qcow2" and "backing-filename" not in image, image
    assert image["virtual-size"] == original.root["size"]
    assert read_marker(template_file) == "life A"
    with tempfile.TemporaryDirectory() as work:
        as_of = disk_as_of(original.root_file, "life-a", Path(work) / "as-of-s.qcow2")
        assert same_image(template_file, as_of)
    assert not same_image(template_file, original.root_file)
    assert read_marker(original.root_file) == "life B"

    # The audit trail names the seed's operations, which the seeder's driver logged.
    [created] = [e for e in cloud.listEvents(type="TEMPLATE.CREATE")["event"]
                 if template["id"] in e["description"]]
    assert created["level"] == "INFO"
    source = conn.lookupByName(ORIGINAL).UUIDString()
    logged = logged_operations(stack, "seeder")
    assert [logged.get(op) for op in OPERATION.findall(created["description"])] == [
        f"full copy of the root disk as of snapshot {source}/life-a to {template_file}",
        f"base snapshot of template {template_file.stem}"], (created, logged)


def test_full_clone_setting_makes_a_standalone_copy_and_linked_again_when_off(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original, clones: Clones,
    pool_dir: Path,
) -> None:
    template = _template_of(cloud, original.s)
    assert template is not None
    template_file = pool_file(pool_dir, template["installpath"])
    disks = {}
    for vm in (clones.full, clones.linked):
        [root] = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
        disk = pool_dir / f"{vm['instancename']}.qcow2"
        assert pool_file(pool_dir, root["path"]) == disk
        assert root["storageid"] == original.root["storageid"]
        assert domain_disks(conn, vm["instancename"]) == {"vda": disk}
        assert conn.lookupByName(vm["instancename"]).isActive()
        disks[vm["id"]] = disk
        # Either way the disk is the template's bytes (the guest mounts its root read-only).
        assert same_image(disk, template_file)

    # Full: a qcow2 with no backing file, its own copy.
    [image] = backing_chain(disks[clones.full["id"]])
    assert image["format"] == "qcow2" and "backing-filename" not in image, image
    # Linked: an overlay of the template.
    chain = backing_chain(disks[clones.linked["id"]])
    assert [Path(i["filename"]) for i in chain] == [disks[clones.linked["id"]], template_file]

    # The cloner's driver logged one operation making each disk: a copy, an overlay.
    template_domain = template_file.stem
    assert [what for _, what in _ops_naming(stack, "cloner", str(disks[clones.full["id"]]))] \
        == [f"full clone of {template_file} to {disks[clones.full['id']]}"]
    assert [what for _, what in _ops_naming(stack, "cloner", str(disks[clones.linked["id"]]))] \
        == [f"linked clone {disks[clones.linked['id']]} backed by {template_file}"]
    assert template_domain in domain_names(conn)  # the template: defined, never started
    assert not conn.lookupByName(template_domain).isActive()
    assert _setting(cloud, original.root["storageid"]) == "false"

    # The full clone boots the snapshot's disk: marker A.
    console = wait_for_console(stack, clones.full["instancename"], READY)
    assert printed("life A") in console, console


def test_a_kvm_vm_stops_starts_reboots_is_destroyed_recovered_and_expunged(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, clones: Clones, pool_dir: Path,
) -> None:
    vm_id, name = clones.linked["id"], clones.linked["instancename"]
    disk = pool_dir / f"{name}.qcow2"
    template_file = Path(backing_chain(disk)[1]["filename"])
    uuid = conn.lookupByName(name).UUIDString()

    def state() -> str:
        return str(vm_named(cloud, "life-linked")["state"])

    stopped = _job(cloud, cloud.stopVirtualMachine(id=vm_id, fetch_result=False))
    assert (stopped["cmd"], stopped["jobinstanceid"]) == (STOP_VM_CMD, vm_id)
    assert stopped["jobresult"]["virtualmachine"]["state"] == "Stopped"
    assert _shut_off(conn, name) and state() == "Stopped"

    started = _job(cloud, cloud.startVirtualMachine(id=vm_id, fetch_result=False))
    assert started["jobresult"]["virtualmachine"]["state"] == "Running"
    assert conn.lookupByName(name).isActive() and state() == "Running"
    # Its QEMU started anew, so its console log too: one boot, of the snapshot's disk.
    console = wait_for_console(stack, name, READY)
    assert (console.count(UP), console.count(READY)) == (1, 1), console
    assert printed("life A") in console, console

    rebooted = _job(cloud, cloud.rebootVirtualMachine(id=vm_id, fetch_result=False))
    assert rebooted["jobresult"]["virtualmachine"]["state"] == "Running"
    console = wait_for_console(stack, name, READY, times=2)
    assert console.count(UP) == 2 and console.count(printed("life A")) == 2, console
    assert conn.lookupByName(name).isActive() and state() == "Running"

    destroyed = _job(cloud, cloud.destroyVirtualMachine(id=vm_id, fetch_result=False))
    assert destroyed["jobresult"]["virtualmachine"]["state"] == "Destroyed"
    assert _shut_off(conn, name) and state() == "Destroyed"
    assert disk.exists()  # destroyed, not expunged: the VM and its disk stay

    recovered = cloud.recoverVirtualMachine(id=vm_id)["virtualmachine"]
    assert recovered["state"] == "Stopped" and state() == "Stopped"
    assert _shut_off(conn, name)
    assert domain_disks(conn, name) == {"vda": disk}

    expunged = _job(cloud, cloud.destroyVirtualMachine(id=vm_id, expunge="true",
                                                       fetch_result=False))
    assert expunged["jobinstanceid"] == vm_id
    assert name not in domain_names(conn)
    assert not disk.exists()
    assert cloud.listVirtualMachines(name="life-linked") == {}
    assert template_file.exists()  # S is not deleted, and the full clone was made from it

    # Every change the cloner's driver made to this VM, in order, under its own id.
    done = _ops_naming(stack, "cloner", name)
    assert [what for _, what in done] == [
        f"linked clone {disk} backed by {template_file}",  # the deploy
        f"1 CPUs, 256 MiB and 1 NICs for {name}",
        f"power-on of {name}",
        f"power-off of {name}",  # stop
        f"power-on of {name}",  # start
        f"reset of {name}",  # reboot
        f"power-off of {name}",  # destroy (recover changes nothing in libvirt)
        f"removal of {name} ({uuid}) with its disks",  # expunge
    ], done
    ids = [op for op, _ in done]

    # What the API exposes of them: listEvents names the clone's, reconfiguration's and
    # power-on's operations, the start's and the reboot's; stops, destroys, the recovery and
    # the expunge have none to name (nor do the job results).
    shown = sorted((e["type"], e["description"].split(" ")[0],
                    OPERATION.findall(e["description"]))
                   for e in cloud.listEvents(keyword=vm_id)["event"])
    assert shown == sorted([
        ("VM.CREATE", "VmDeployRequested", []), ("VM.CREATE", "VmCreated", ids[0:1]),
        ("NIC.CREATE", "NicCreated", ids[1:2]), ("VOLUME.CREATE", "VolumeCreated", ids[0:1]),
        ("VM.START", "VmStarted", ids[0:3]),  # the deploy
        ("VM.STOP", "VmStopped", []), ("VM.START", "VmStarted", ids[4:5]),
        ("VM.REBOOT", "VmRebooted", ids[5:6]),
        ("VM.DESTROY", "VmDestroyed", []), ("VM.RECOVER", "VmRecovered", []),
        ("VM.DESTROY", "VmDestroyed", []), ("VM.EXPUNGE", "VmExpunged", []),
    ]), shown
    # The audit stream carries the same, in order.
    trail = [(kind, data) for kind, data in audit_events(
        stack, lambda kind, data: kind == "VmExpunged" and data["vm_id"] == vm_id)
        if data.get("vm_id") == vm_id and kind.startswith("Vm")
        and kind not in ("VmDeployRequested", "VmPlaced", "VmAwaitingTemplate", "VmSourceReady")]
    assert [(kind, OPERATION.findall(str(data))) for kind, data in trail] == [
        ("VmCreated", [ids[0]]), ("VmStarted", ids[0:3]),  # the deploy
        ("VmPowerRequested", []), ("VmStopped", []),
        ("VmPowerRequested", []), ("VmStarted", [ids[4]]),
        ("VmPowerRequested", []), ("VmRebooted", [ids[5]]),
        ("VmDestroyRequested", []), ("VmDestroyed", []),
        ("VmRecovered", []),
        ("VmDestroyRequested", []), ("VmDestroyed", []), ("VmExpunged", []),
    ], trail
    for job in (stopped, started, rebooted, destroyed, expunged):
        assert not OPERATION.search(str(job)), job


def test_volumes_of_a_kvm_vm_with_vm_snapshots_are_refused_and_done_once_they_are_deleted(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, clones: Clones, pool_dir: Path,
) -> None:
    vm_id, name = clones.full["id"], clones.full["instancename"]
    root_disk = pool_dir / f"{name}.qcow2"
    offering = cloud.createDiskOffering(name="kvm-1g", displaytext="1 GB",
                                        disksize=1)["diskoffering"]["id"]

    def empty_volume(label: str) -> dict[str, Any]:
        made = cloud.createVolume(diskofferingid=offering, name=label,
                                  zoneid=clones.full["zoneid"])["volume"]
        assert (made["state"], made["type"], made["size"]) == ("Allocated", "DATADISK", GB)
        return dict(made)

    def volume(volume_id: str) -> dict[str, Any]:
        [found] = cloud.listVolumes(id=volume_id)["volume"]
        return dict(found)

    # Guests take a hot-plugged disk out only once booted (ACPI): wait for it.
    wait_for_console(stack, name, READY)
    first = empty_volume("life-data-1")
    attached = _job(cloud, cloud.attachVolume(id=first["id"], virtualmachineid=vm_id,
                                              fetch_result=False))["jobresult"]["volume"]
    first_file = pool_dir / f"{first['id']}.qcow2"
    assert (attached["state"], attached["virtualmachineid"], attached["path"]) == \
        ("Ready", vm_id, f"{pool_dir.name}/{first['id']}.qcow2")
    assert domain_disks(conn, name) == {"vda": root_disk, "vdb": first_file}

    taken = [snapshot(cloud, vm_id, f"life-full-{n}") for n in (1, 2)]
    second = empty_volume("life-data-2")
    second_file = pool_dir / f"{second['id']}.qcow2"
    for command, call in (
        ("attachVolume", lambda: cloud.attachVolume(id=second["id"], virtualmachineid=vm_id)),
        ("detachVolume", lambda: cloud.detachVolume(id=first["id"])),
        ("resizeVolume", lambda: cloud.resizeVolume(id=first["id"], size=2)),
    ):
        error = refused(call)
        assert error["errorcode"] == RESOURCE_IN_USE, error
        assert error["errortext"] == (
            f"{command} is refused: virtual machine {vm_id} has 2 VM snapshot(s), and "
            "volumes of a VM with VM snapshots cannot be attached, detached or resized; "
            "delete its VM snapshots first"), error
    # Nothing changed, in snapdeploy or in libvirt.
    assert domain_disks(conn, name) == {"vda": root_disk, "vdb": first_file}
    assert backing_chain(first_file)[0]["virtual-size"] == GB
    assert not second_file.exists() and volume(second["id"])["state"] == "Allocated"
    assert volume(first["id"])["size"] == GB

    for snapshot_id in taken:
        _job(cloud, cloud.deleteVMSnapshot(vmsnapshotid=snapshot_id, fetch_result=False))
    assert cloud.listVMSnapshot(virtualmachineid=vm_id) == {}

    # Now each is done, and seen in libvirt.
    attached = _job(cloud, cloud.attachVolume(id=second["id"], virtualmachineid=vm_id,
                                              fetch_result=False))["jobresult"]["volume"]
    assert (attached["state"], attached["virtualmachineid"]) == ("Ready", vm_id)
    assert domain_disks(conn, name) == {"vda": root_disk, "vdb": first_file,
                                        "vdc": second_file}
    [image] = backing_chain(second_file)
    assert (image["format"], image["virtual-size"]) == ("qcow2", GB)

    resized = _job(cloud, cloud.resizeVolume(id=second["id"], size=2,
                                             fetch_result=False))["jobresult"]["volume"]
    assert resized["size"] == 2 * GB
    assert backing_chain(second_file)[0]["virtual-size"] == 2 * GB

    for made, file in ((second, second_file), (first, first_file)):
        detached = _job(cloud, cloud.detachVolume(id=made["id"],
                                                  fetch_result=False))["jobresult"]["volume"]
        assert detached["state"] == "Ready" and "virtualmachineid" not in detached, detached
        assert file not in domain_disks(conn, name).values()
        assert file.exists()
    assert domain_disks(conn, name) == {"vda": root_disk}

    assert cloud.deleteVolume(id=second["id"]) == {"success": True}
    wait_for(lambda: not second_file.exists(), f"{second_file.name} removed from the pool")
    wait_for(lambda: cloud.listVolumes(id=second["id"]).get("volume", []) == [],
             "the deleted volume gone from listVolumes")
    assert first_file.exists() and backing_chain(first_file)[0]["virtual-size"] == GB

    # Each change under an operation id the volume service's driver logged, and that its
    # audit events name.
    location = f"{pool_dir.name}/{second['id']}.qcow2"
    done = _ops_naming(stack, "volume", location)
    assert [what for _, what in done] == [
        f"creating and attaching {location} to {name} as vdc",
        f"resize of {location} to {2 * GB} bytes",
        f"detach of {location} from {name}",
        f"deleting {location}",
    ], done
    for cs_type, (op, _) in zip(("VOLUME.ATTACH", "VOLUME.RESIZE", "VOLUME.DETACH",
                                 "VOLUME.DELETE"), done, strict=True):
        assert len([e for e in cloud.listEvents(type=cs_type)["event"]
                    if OPERATION.findall(e["description"]) == [op]]) == 1, (cs_type, op)
    trail = audit_events(stack, lambda kind, data: kind == "VolumeDeleted"
                         and data["volume_id"] == second["id"])
    assert [(kind, data.get("task_id")) for kind, data in trail
            if data.get("volume_id") == second["id"] and "task_id" in data] == [
        ("VolumeCreated", done[0][0]), ("VolumeAttached", done[0][0]),  # its first attach
        ("VolumeResized", done[1][0]), ("VolumeDetached", done[2][0]),
        ("VolumeDeleted", done[3][0])]


def test_template_collection_never_removes_a_file_a_clones_chain_needs(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original, tiny: str,
    pool_dir: Path, clones: Clones,
) -> None:
    s2 = snapshot(cloud, original.vm_id, "life-b")  # marker B
    first = _deploy(cloud, s2, tiny, "life-gc-1")
    last = _deploy(cloud, s2, tiny, "life-gc-2")
    template = _template_of(cloud, s2)
    assert template is not None
    template_file = pool_file(pool_dir, template["installpath"])
    template_domain = template_file.stem
    assert template_domain in domain_names(conn)
    disks = {vm["id"]: pool_dir / f"{vm['instancename']}.qcow2" for vm in (first, last)}
    for disk in disks.values():
        assert [Path(i["filename"]) for i in backing_chain(disk)] == [disk, template_file]
    # The last one waits, off, for its boot after the others are gone.
    _job(cloud, cloud.stopVirtualMachine(id=last["id"], fetch_result=False))

    _job(cloud, cloud.deleteVMSnapshot(vmsnapshotid=s2, fetch_result=False))
    assert s2 not in {s["id"] for s in cloud.listVMSnapshot(virtualmachineid=original.vm_id)
                      .get("vmSnapshot", [])}
    wait_for(lambda: handled(stack, "seeder", "VmSnapshotDeleted", snapshot_id=s2),
             "the seeder handled the snapshot's deletion")
    assert template_file.exists() and _template_of(cloud, s2) == template

    _job(cloud, cloud.destroyVirtualMachine(id=first["id"], expunge="true",
                                            fetch_result=False))
    wait_for(lambda: handled(stack, "seeder", "VmExpunged", vm_id=first["id"]),
             "the seeder handled the first clone's expunge")
    assert not disks[first["id"]].exists()
    assert template_file.exists() and _template_of(cloud, s2) == template
    assert template_domain in domain_names(conn)
    assert events_of_type(stack, "TemplateRemoved", vm_snapshot_id=s2) == 0
    # The other clone's chain still resolves, and it boots from it: marker B.
    last_disk = disks[last["id"]]
    assert [Path(i["filename"]) for i in backing_chain(last_disk)] == [last_disk, template_file]
    _job(cloud, cloud.startVirtualMachine(id=last["id"], fetch_result=False))
    console = wait_for_console(stack, last["instancename"], READY)
    assert console.count(READY) == 1 and printed("life B") in console, console

    _job(cloud, cloud.destroyVirtualMachine(id=last["id"], expunge="true", fetch_result=False))
    wait_for(lambda: not template_file.exists(), "the template collected")
    wait_for(lambda: _template_of(cloud, s2) is None, "the template gone from listTemplates")
    assert template_domain not in domain_names(conn)
    assert not last_disk.exists()
    assert events_of_type(stack, "TemplateRemoved", vm_snapshot_id=s2) == 1
    # Its audit event names the pool it left; the seeder's driver logged its removal.
    [removed] = cloud.listEvents(type="TEMPLATE.DELETE")["event"]
    assert removed["description"] == f"TemplateRemoved pool_id {template['storageid']}"
    [(_, what)] = _ops_naming(stack, "seeder", f"removal of {template_domain} ")
    assert what.endswith(" with its disks"), what

    # S's template stays: S is not deleted, and the full clone made from it still runs.
    kept = _template_of(cloud, original.s)
    assert kept is not None and pool_file(pool_dir, kept["installpath"]).exists()
    assert conn.lookupByName(clones.full["instancename"]).isActive()
