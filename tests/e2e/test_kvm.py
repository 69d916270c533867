"""On KVM a deployed VM's disk is the snapshot it was deployed from, through the services
and the API of one stack with its KVM zone (a private libvirtd, the demo guest).

A VM with a root and a data disk is made in the zone and imported. With the VM off, each
disk's marker (the 512 bytes at 31 MiB, which the demo guest prints on its serial console)
is written with qemu-io: A, VM snapshot S1 through the API, B, S2, C. A VM deployed from S1
boots and prints A, one from S2 prints B, and each root disk is, for qemu-img compare, the
original's root disk as of its snapshot; a volume made from S1's data disk is that disk as
of S1. The clones outlive S1 and the original. Ten deploys at once from a snapshot never
seeded seed it once. A deploy that fails (the pool out of space for the seed, a network
libvirt cannot start) ends in Error with its step and reason and leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cs import CloudStack

from shared.stack._kvm import create_guest, ensure_network, ensure_pool
from shared.stack.launcher import read_stack
from tests.e2e.helpers import (
    by_name,
    event_positions,
    events_of_type,
    fail_text,
    finished_job,
    host,
    placed_from_snapshot,
    seeds_started,
    snapshot,
    vm_named,
    wait_for,
    wait_for_console,
)
from tests.harness.libvirt import (
    SmallFilesystem,
    backing_chain,
    disk_as_of,
    read_marker,
    same_image,
    write_marker,
)

pytestmark = pytest.mark.stack
KVM = True  # the stack runs its KVM zone

POOL = "pool0"
ORIGINAL = "kvm-marked"  # the VM the markers are written to, made in the zone and imported
DATA_BYTES = 64 * 2**20  # past the marker at 31 MiB
READY = "snapdeploy-guest: ready"
CONCURRENT = 10


def marker(step: str, disk: str) -> str:
    return f"marker {step} {disk}"


def printed(disk: str, text: str) -> str:
    """The line the demo guest prints for a disk's marker (tools/guest/init)."""
    return f"snapdeploy-marker {disk}: {text}"


@dataclass(frozen=True)
class Original:
    vm_id: str
    root_volume: dict[str, Any]
    data_volume: dict[str, Any]
    root_file: Path
    data_file: Path
    s1: str  # VM snapshot ids
    s2: str


@dataclass(frozen=True)
class Clone:
    vm: dict[str, Any]
    disk: Path
    template: dict[str, Any]
    template_file: Path



def _pool_file(pool_dir: Path, location: str) -> Path:
    """The file of a volume location ``<pool>/<file>`` of ``pool_dir``'s pool."""
    pool, _, name = location.partition("/")
    assert pool == pool_dir.name and name and "/" not in name, location
    return pool_dir / name


def _domain_names(conn: Any) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


def _disk_of(conn: Any, name: str) -> Path:
    """The file of the one disk of the domain ``name``."""
    xml = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    [source] = [d.find("source") for d in xml.findall("devices/disk")]
    assert source is not None
    return Path(str(source.get("file")))


def _template_of(cloud: CloudStack, snapshot_id: str) -> dict[str, Any]:
    [template] = [t for t in cloud.listTemplates(templatefilter="all")["template"]
                  if t["vmsnapshotid"] == snapshot_id]
    return dict(template)


@pytest.fixture(scope="module")
def original(cloud: CloudStack, conn: Any, pool_dir: Path) -> Original:
    """A VM with a root disk (a copy of the demo guest's) and an empty data disk on pool0,
    made in libvirt and imported by syncInventory; then, with it off, markers A, S1, B, S2,
    C written and taken through the API."""
    domain = create_guest(conn, pool_dir, ORIGINAL, start=False)
    data_file = pool_dir / f"{ORIGINAL}-data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data_file),
                    str(DATA_BYTES)], check=True)
    definition = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = definition.find("devices")
    assert devices is not None
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=str(data_file))
    ET.SubElement(disk, "target", dev="vdb", bus="virtio")
    conn.defineXML(ET.tostring(definition, encoding="unicode"))
    conn.storagePoolLookupByName(POOL).refresh(0)

    assert cloud.syncInventory()["success"] is True
    vm = wait_for(lambda: cloud.listVirtualMachines(name=ORIGINAL).get("virtualmachine"),
                  f"{ORIGINAL} imported")[0]
    assert (vm["state"], vm["hypervisor"]) == ("Stopped", "KVM")
    volumes = {v["type"]: v for v in cloud.listVolumes(virtualmachineid=vm["id"])["volume"]}
    assert set(volumes) == {"ROOT", "DATADISK"}, volumes
    root_file = _pool_file(pool_dir, volumes["ROOT"]["path"])
    assert root_file == pool_dir / f"{ORIGINAL}.qcow2"
    assert _pool_file(pool_dir, volumes["DATADISK"]["path"]) == data_file
    assert volumes["DATADISK"]["size"] == DATA_BYTES

    taken: dict[str, str] = {}
    for step, name in (("A", "S1"), ("B", "S2"), ("C", None)):
        write_marker(root_file, marker(step, "root"))
        write_marker(data_file, marker(step, "data"))
        if name is not None:
            taken[name] = snapshot(cloud, vm["id"], name)
    return Original(vm["id"], volumes["ROOT"], volumes["DATADISK"], root_file, data_file,
                    taken["S1"], taken["S2"])


@pytest.fixture(scope="module")
def clones(cloud: CloudStack, conn: Any, original: Original, tiny: str,
           pool_dir: Path) -> dict[str, Clone]:
    """A VM deployed from each of S1 and S2."""
    out = {}
    for name, snapshot_id in (("S1", original.s1), ("S2", original.s2)):
        vm = cloud.deployVirtualMachine(vmsnapshotid=snapshot_id, serviceofferingid=tiny,
                                        name=f"from-{name.lower()}")["virtualmachine"]
        template = _template_of(cloud, snapshot_id)
        out[name] = Clone(vm, _disk_of(conn, vm["instancename"]), template,
                          _pool_file(pool_dir, template["installpath"]))
    return out


def test_the_snapshots_hold_the_markers_written_before_them(original: Original) -> None:
    # Read from the image files, without snapdeploy: what the deploys below must show.
    for name, step in (("S1", "A"), ("S2", "B")):
        assert read_marker(original.root_file, name) == marker(step, "root")
        assert read_marker(original.data_file, name) == marker(step, "data")
    assert read_marker(original.root_file) == marker("C", "root")
    assert read_marker(original.data_file) == marker("C", "data")


def test_a_vm_deployed_from_each_snapshot_boots_its_root_disk_as_of_that_snapshot(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original,
    clones: dict[str, Clone], pool_dir: Path,
) -> None:
    for name, step in (("S1", "A"), ("S2", "B")):
        clone = clones[name]
        vm = clone.vm
        assert (vm["state"], vm["hypervisor"], vm["vmsnapshotid"]) == \
            ("Running", "KVM", getattr(original, name.lower()))
        assert conn.lookupByName(vm["instancename"]).isActive()
        console = wait_for_console(stack, vm["instancename"], READY)
        # The deployed VM has its snapshot's root disk only.
        markers = [line for line in console.splitlines() if "snapdeploy-marker" in line]
        assert markers == [printed("vda", marker(step, "root"))], console

        # Its disk: a qcow2 overlay on pool0, backed by the template seeded from the
        # snapshot on the same pool; the template stands alone.
        assert clone.disk == pool_dir / f"{vm['instancename']}.qcow2"
        [root] = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
        assert _pool_file(pool_dir, root["path"]) == clone.disk
        assert root["storageid"] == original.root_volume["storageid"]
        assert clone.template["storageid"] == original.root_volume["storageid"]
        chain = backing_chain(clone.disk)
        assert [Path(image["filename"]) for image in chain] == [clone.disk,
                                                                clone.template_file]
        assert [image["format"] for image in chain] == ["qcow2", "qcow2"]

    # Byte for byte (qemu-img compare reads each through its backing chain): each clone's
    # disk is the original's root disk as of its snapshot, and not as of the other one
    # nor as it is now.
    with tempfile.TemporaryDirectory() as work:
        as_of = {name: disk_as_of(original.root_file, name, Path(work) / f"{name}.qcow2")
                 for name in ("S1", "S2")}
        for name, other in (("S1", "S2"), ("S2", "S1")):
            assert same_image(clones[name].disk, as_of[name])
            assert not same_image(clones[name].disk, as_of[other])
            assert not same_image(clones[name].disk, original.root_file)

    # The original is untouched: its disks still hold C.
    assert read_marker(original.root_file) == marker("C", "root")
    assert read_marker(original.data_file) == marker("C", "data")
    assert vm_named(cloud, ORIGINAL)["state"] == "Stopped"


def test_a_volume_from_a_snapshots_data_disk_is_that_disk_as_of_the_snapshot(
    cloud: CloudStack, original: Original, pool_dir: Path,
) -> None:
    data = original.data_volume
    with tempfile.TemporaryDirectory() as work:
        for name, step in (("S1", "A"), ("S2", "B")):
            made = cloud.createVolume(vmsnapshotid=getattr(original, name.lower()),
                                      volumeid=data["id"],
                                      name=f"data-as-of-{name.lower()}")["volume"]
            assert made["state"] == "Ready" and made["type"] == "DATADISK"
            assert made["storageid"] == data["storageid"]
            assert made["size"] == data["size"] == DATA_BYTES
            assert made["path"] == f"{POOL}/{made['id']}.qcow2"
            copy = _pool_file(pool_dir, made["path"])
            info = backing_chain(copy)
            assert len(info) == 1 and info[0]["format"] == "qcow2"  # a file of its own
            assert info[0]["virtual-size"] == DATA_BYTES
            assert read_marker(copy) == marker(step, "data")
            as_of = disk_as_of(original.data_file, name, Path(work) / f"data-{name}.qcow2")
            assert same_image(copy, as_of)
            assert not same_image(copy, original.data_file)


def test_concurrent_deploys_from_a_new_snapshot_seed_it_once_and_clone_it_each(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original, tiny: str,
    pool_dir: Path,
) -> None:
    # Never deployed from, so never seeded: the deploys below race for its seed.
    fresh = snapshot(cloud, original.vm_id, "burst")
    assert seeds_started(stack, fresh) == 0

    def deploy(index: int) -> dict[str, Any]:
        client = CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                            secret=stack["admin_secret_key"], fetch_result=True,
                            poll_interval=0.2, job_timeout=180)
        answer: dict[str, Any] = client.deployVirtualMachine(
            vmsnapshotid=fresh, serviceofferingid=tiny, name=f"burst-{index}")
        return dict(answer["virtualmachine"])

    def placed_burst() -> bool:
        return placed_from_snapshot(stack, fresh) == CONCURRENT

    # The seeder is held (SIGSTOP) until every deploy is placed, so that they all race for
    # the seed whatever the timing; once resumed it seeds, and each deploy clones it.
    seeder = stack["services"]["seeder"]["pid"]
    os.kill(seeder, signal.SIGSTOP)
    with ThreadPoolExecutor(CONCURRENT) as threads:
        running = threads.map(deploy, range(CONCURRENT))
        try:
            wait_for(placed_burst, "every deploy placed while the seeder is held", 60)
        finally:
            os.kill(seeder, signal.SIGCONT)
        vms = list(running)
    assert [vm["state"] for vm in vms] == ["Running"] * CONCURRENT, vms
    assert len({vm["id"] for vm in vms}) == len({vm["instancename"] for vm in vms}) \
        == CONCURRENT

    # One seed, one template on the snapshot's pool; the deploys did race for it: all were
    # placed before it was seeded.
    assert seeds_started(stack, fresh) == 1
    [seeded] = event_positions(stack, "TemplateSeeded", vm_snapshot_id=fresh)
    placed = [p for vm in vms for p in event_positions(stack, "VmPlaced", vm_id=vm["id"])]
    assert len(placed) == CONCURRENT
    assert all(p < seeded for p in placed), (placed, seeded)
    template = _template_of(cloud, fresh)
    assert template["storageid"] == original.root_volume["storageid"]
    template_file = _pool_file(pool_dir, template["installpath"])
    assert backing_chain(template_file)[0].get("backing-filename") is None

    # In libvirt: ten running domains, each with its own overlay of that template.
    disks = set()
    for vm in vms:
        assert conn.lookupByName(vm["instancename"]).isActive()
        disk = _disk_of(conn, vm["instancename"])
        assert disk == pool_dir / f"{vm['instancename']}.qcow2"
        chain = backing_chain(disk)
        assert [Path(image["filename"]) for image in chain] == [disk, template_file]
        disks.add(disk)
    assert len(disks) == CONCURRENT

    # One of them boots the snapshot's disk (C was on the disks when it was taken); the
    # others are removed without waiting for their guests.
    first, *others = vms

    def expunge(vm: dict[str, Any]) -> None:
        client = CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                            secret=stack["admin_secret_key"], fetch_result=True,
                            poll_interval=0.2, job_timeout=180)
        client.destroyVirtualMachine(id=vm["id"], expunge="true")

    with ThreadPoolExecutor(CONCURRENT) as threads:
        list(threads.map(expunge, others))
    console = wait_for_console(stack, first["instancename"], READY)
    assert printed("vda", marker("C", "root")) in console
    expunge(first)
    assert not {vm["instancename"] for vm in vms} & _domain_names(conn)
    assert not [disk for disk in disks if disk.exists()]
    assert template_file.exists()


def test_a_seed_on_a_pool_without_room_fails_the_deploy_and_leaves_nothing(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, tiny: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A second pool of the host on a 4 MiB file system (mounted where both the libvirt
    # daemon and the services see it), holding a VM whose disk takes most of it: the seed's
    # full copy of that disk cannot fit. snapdeploy does not check a pool's free space
    # before it seeds, so the deploy is accepted and the copy itself fails.
    work = tmp_path_factory.mktemp("small-pool")
    daemon = read_stack(Path(stack["state_dir"]))["servers"]["libvirtd"]["pid"]
    with SmallFilesystem(work / "pool.img", work / "small0", 4 * 2**20, daemon) as small:
        pool = ensure_pool(conn, "small0", small.folder)
        try:
            create_guest(conn, small.folder, "kvm-on-small", start=False)
            source_file = small.folder / "kvm-on-small.qcow2"
            assert cloud.syncInventory()["success"] is True
            source = wait_for(
                lambda: cloud.listVirtualMachines(name="kvm-on-small").get("virtualmachine"),
                "kvm-on-small imported")[0]
            [root] = cloud.listVolumes(virtualmachineid=source["id"], type="ROOT")["volume"]
            assert by_name(cloud.listStoragePools()["storagepool"], "small0")["id"] \
                == root["storageid"]
            taken = snapshot(cloud, source["id"], "no-room")
            needed = os.stat(source_file).st_blocks * 512
            assert small.free_bytes() < needed  # the copy cannot fit, and is all it needs

            accepted = cloud.deployVirtualMachine(vmsnapshotid=taken, serviceofferingid=tiny,
                                                  name="on-a-full-pool", fetch_result=False)
            result = finished_job(cloud, accepted["jobid"])
            assert (result["jobstatus"], result["jobinstanceid"]) == (2, accepted["id"])
            text = result["jobresult"]["errortext"]
            assert text.startswith(f"deploy of VM on-a-full-pool ({accepted['id']}) failed "
                                   "at seed: seeding the template failed: "), text
            assert "No space left on device" in text, text
            vm = vm_named(cloud, "on-a-full-pool")
            assert (vm["state"], vm["errortext"]) == ("Error", text)

            # Nothing of the seed or the VM is left: no partial copy, no template, no domain.
            assert sorted(p.name for p in small.folder.iterdir()) == \
                ["kvm-on-small.qcow2", "lost+found"]
            assert events_of_type(stack, "TemplateSeedFailed", vm_snapshot_id=taken) == 1
            assert events_of_type(stack, "TemplateSeeded", vm_snapshot_id=taken) == 0
            assert [t for t in cloud.listTemplates(templatefilter="all")["template"]
                    if t["vmsnapshotid"] == taken and t["isready"]] == []
            assert vm["instancename"] not in _domain_names(conn)
            assert not [n for n in _domain_names(conn)
                        if n.startswith("snapdeploy-seed-")
                        and str(_disk_of(conn, n)).startswith(str(small.folder))]

            cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
            cloud.destroyVirtualMachine(id=source["id"], expunge="true")
            assert not source_file.exists()
        finally:
            if "kvm-on-small" in _domain_names(conn):
                conn.lookupByName("kvm-on-small").undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            pool.destroy()
            pool.undefine()


def test_a_network_that_does_not_exist_is_refused_naming_networkids(
    cloud: CloudStack, original: Original, tiny: str,
) -> None:
    missing = "0a1b2c3d-0000-4000-8000-00000000dead"
    before = len(cloud.listVirtualMachines().get("virtualmachine", []))
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=original.s2, serviceofferingid=tiny, networkids=missing,
        name="nowhere"))
    assert text.startswith("invalid parameter networkids:") and missing in text, text
    assert cloud.listVirtualMachines(name="nowhere") == {}
    assert len(cloud.listVirtualMachines().get("virtualmachine", [])) == before


def test_a_libvirt_error_mid_clone_ends_the_vm_in_error_with_nothing_left(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original, tiny: str,
    pool_dir: Path, clones: dict[str, Clone],
) -> None:
    # A network imported while active, then stopped in libvirt: the clone's overlay is
    # made and its domain defined, and libvirt refuses to start it on that network.
    down = ensure_network(conn, "guest-down", "sdbr9")
    try:
        assert cloud.syncInventory()["success"] is True
        network_id = wait_for(lambda: next((n["id"] for n in cloud.listNetworks()["network"]
                                            if n["name"] == "guest-down"), None),
                              "guest-down imported")
        down.destroy()
        assert not down.isActive()
        templates = {t["id"] for t in cloud.listTemplates(templatefilter="all")["template"]}
        assert clones["S2"].template["id"] in templates  # S2 is seeded: the clone step fails

        reserved = host(cloud, "kvm0")["memoryallocated"]
        accepted = cloud.deployVirtualMachine(vmsnapshotid=original.s2, serviceofferingid=tiny,
                                              networkids=network_id, name="on-a-down-network",
                                              fetch_result=False)
        result = finished_job(cloud, accepted["jobid"])
        assert (result["jobstatus"], result["jobinstanceid"]) == (2, accepted["id"])
        text = result["jobresult"]["errortext"]
        assert text == (f"deploy of VM on-a-down-network ({accepted['id']}) failed at "
                        "power-on: libvirt call failed: Requested operation is not valid: "
                        "network 'guest-down' is not active"), text
        vm = vm_named(cloud, "on-a-down-network")
        assert (vm["state"], vm["errortext"]) == ("Error", text)
        # The overlay and the domain made before libvirt refused are gone.
        assert vm["instancename"] not in _domain_names(conn)
        assert not (pool_dir / f"{vm['instancename']}.qcow2").exists()
        assert not [p for p in pool_dir.iterdir() if vm["instancename"] in p.name]
        assert {t["id"] for t in cloud.listTemplates(templatefilter="all")["template"]} \
            == templates
        # Its reservation on the host is released.
        wait_for(lambda: host(cloud, "kvm0")["memoryallocated"] == reserved,
                 "the failed VM's memory released")
        cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
    finally:
        down.undefine()


def test_the_clones_outlive_their_snapshot_and_the_original(
    cloud: CloudStack, stack: dict[str, Any], conn: Any, original: Original,
    clones: dict[str, Clone],
) -> None:
    cloud.deleteVMSnapshot(vmsnapshotid=original.s1)
    assert original.s1 not in {s["id"] for s in
                               cloud.listVMSnapshot(virtualmachineid=original.vm_id)
                               .get("vmSnapshot", [])}
    cloud.destroyVirtualMachine(id=original.vm_id, expunge="true")
    assert ORIGINAL not in _domain_names(conn)
    assert not original.root_file.exists()
    assert cloud.listVirtualMachines(name=ORIGINAL) == {}

    for name, step in (("S1", "A"), ("S2", "B")):
        clone = clones[name]
        # The backing chain still resolves: the overlay, then its template.
        chain = backing_chain(clone.disk)
        assert [Path(image["filename"]) for image in chain] == [clone.disk,
                                                                clone.template_file]
        assert read_marker(clone.template_file) == marker(step, "root")
        # The guest boots again from it: its console shows the marker a second time.
        line = printed("vda", marker(step, "root"))
        assert wait_for_console(stack, clone.vm["instancename"], READY).count(line) == 1
        cloud.rebootVirtualMachine(id=clone.vm["id"])
        console = wait_for_console(stack, clone.vm["instancename"], READY, times=2)
        assert console.count(line) == 2, console
        assert vm_named(cloud, clone.vm["name"])["state"] == "Running"
