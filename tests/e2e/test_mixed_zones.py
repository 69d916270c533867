"""One stack, two kinds of zone: vCenter's datacenter DC0 (vcsim) and the KVM zone KVM0 (a
private libvirtd with the demo VM and its VM snapshot 'fresh'). Both are listed with their
own hypervisor's facts, and a deploy in each runs through the services with that zone's
driver: on KVM a linked qcow2 overlay of the template seeded on the snapshot's pool,
running in libvirt and booting the demo guest."""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cs import CloudStack

from tests.e2e.helpers import by_name, fail_text, offering, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack
KVM = True  # the stack runs its KVM zone too

KVM_ZONE, KVM_HOST, KVM_POOL = "KVM0", "kvm0", "pool0"
DEMO_VM, DEMO_SNAPSHOT = "kvm-demo", "fresh"


def _kvm(stack: dict[str, Any]) -> dict[str, Any]:
    zone = stack.get("kvm")
    assert zone, f"the stack runs no KVM zone: {stack.get('kvm_zones')!r}"
    return dict(zone)


def _image(path: Path) -> dict[str, Any]:
    done = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                          capture_output=True, text=True, check=True)
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def _console(stack: dict[str, Any], name: str, text: str, timeout: float = 120.0) -> str:
    folder = Path(_kvm(stack).get("console_logs") or
                  Path(stack["state_dir"]) / "libvirt" / "log" / "qemu")
    path = folder / f"{name}-console.log"
    deadline = time.monotonic() + timeout
    printed = ""
    while time.monotonic() < deadline:
        printed = path.read_text(errors="replace") if path.exists() else ""
        if text in printed:
            return printed
        time.sleep(0.5)
    raise AssertionError(f"{name} did not print {text!r} in {timeout:.0f}s: {printed[-2000:]}")


def test_both_zones_are_listed_with_their_own_hypervisor(
    cloud: CloudStack, stack: dict[str, Any],
) -> None:
    _kvm(stack)
    zones = {z["name"]: z for z in cloud.listZones()["zone"]}
    assert {"DC0", KVM_ZONE} <= set(zones)
    assert zones["DC0"]["hypervisor"] == "VMware" and zones[KVM_ZONE]["hypervisor"] == "KVM"

    hosts = cloud.listHosts()["host"]
    assert {h["hypervisor"] for h in hosts if h["zoneid"] == zones[KVM_ZONE]["id"]} == {"KVM"}
    assert by_name(hosts, KVM_HOST)["zoneid"] == zones[KVM_ZONE]["id"]
    assert {h["hypervisor"] for h in hosts if h["zoneid"] == zones["DC0"]["id"]} == {"VMware"}

    pools = cloud.listStoragePools()["storagepool"]
    kvm_pool = next(p for p in pools if p["zoneid"] == zones[KVM_ZONE]["id"])
    assert kvm_pool["name"] == KVM_POOL and kvm_pool["type"] == "Filesystem"
    assert {p["type"] for p in pools if p["zoneid"] == zones["DC0"]["id"]} == {"VMFS"}
    dc0_pool = next(p for p in pools if p["zoneid"] == zones["DC0"]["id"])

    # Each pool takes the full-clone setting of its zone's kind.
    [setting] = cloud.listConfigurations(storageid=kvm_pool["id"])["configuration"]
    assert (setting["name"], setting["value"]) == ("kvm.create.full.clone", "false")
    [setting] = cloud.listConfigurations(storageid=dc0_pool["id"])["configuration"]
    assert setting["name"] == "vmware.create.full.clone"
    refused = fail_text(lambda: cloud.updateConfiguration(
        name="vmware.create.full.clone", value="true", storageid=kvm_pool["id"]))
    assert f"storage pool {kvm_pool['id']} is in a KVM zone" in refused
    assert "kvm.create.full.clone" in refused
    changed = cloud.updateConfiguration(name="kvm.create.full.clone", value="false",
                                        storageid=kvm_pool["id"])["configuration"]
    assert (changed["name"], changed["value"]) == ("kvm.create.full.clone", "false")

    networks = cloud.listNetworks(zoneid=zones[KVM_ZONE]["id"])["network"]
    assert {n["broadcasturi"] for n in networks} >= {"kvm://guest0", "kvm://guest1"}
    demo = vm_named(cloud, DEMO_VM)
    assert demo["zoneid"] == zones[KVM_ZONE]["id"] and demo["hypervisor"] == "KVM"
    assert vm_named(cloud, "DC0_C0_RP0_VM0")["hypervisor"] == "VMware"


def test_a_kvm_snapshot_deploys_a_linked_clone_running_in_libvirt_and_vcsim_still_deploys(
    cloud: CloudStack, stack: dict[str, Any], vcsim: Vcsim,
) -> None:
    kvm = _kvm(stack)
    zones = {z["name"]: z["id"] for z in cloud.listZones()["zone"]}
    demo = vm_named(cloud, DEMO_VM)
    [fresh] = [s for s in cloud.listVMSnapshot(virtualmachineid=demo["id"])["vmSnapshot"]
               if s["name"] == DEMO_SNAPSHOT]
    small = offering(cloud, "Small Instance")

    vm = cloud.deployVirtualMachine(vmsnapshotid=fresh["id"], serviceofferingid=small,
                                    name="kvm-clone-1")["virtualmachine"]
    assert vm["state"] == "Running", vm
    assert vm["zoneid"] == zones[KVM_ZONE] and vm["hypervisor"] == "KVM"

    # The template was seeded on the snapshot's pool, as a KVM template.
    [root] = cloud.listVolumes(virtualmachineid=demo["id"], type="ROOT")["volume"]
    [template] = [t for t in cloud.listTemplates(templatefilter="all")["template"]
                  if t["vmsnapshotid"] == fresh["id"]]
    assert (template["hypervisor"], template["format"]) == ("KVM", "QCOW2")
    assert template["storageid"] == root["storageid"] and template["zoneid"] == zones[KVM_ZONE]

    # In libvirt: a running domain whose disk is a qcow2 overlay backed by the template's
    # file on the same pool.
    conn = libvirt.open(kvm["uri"])
    try:
        domain = conn.lookupByName(vm["instancename"])
        assert domain.isActive()
        disk_source = ET.fromstring(domain.XMLDesc(0)).find("devices/disk/source")
        assert disk_source is not None
        disk = Path(str(disk_source.get("file")))
    finally:
        conn.close()
    pool_folder = Path(kvm["pool_folder"])
    assert disk.parent == pool_folder, disk
    image = _image(disk)
    assert image["format"] == "qcow2"
    backing = Path(image["backing-filename"])
    backing = backing if backing.is_absolute() else disk.parent / backing
    assert backing.parent == pool_folder
    assert template["installpath"].endswith(backing.name), (template["installpath"], backing)
    assert _image(backing).get("backing-filename") is None  # the template stands alone
    _console(stack, vm["instancename"], "snapdeploy-guest: ready")

    [clone_root] = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    assert clone_root["storageid"] == root["storageid"]

    # A volume from the snapshot's disk is a qcow2 file the KVM driver puts on the pool.
    copy = cloud.createVolume(vmsnapshotid=fresh["id"], volumeid=root["id"],
                              name="kvm-copy")["volume"]
    assert copy["state"] == "Ready" and copy["storageid"] == root["storageid"]
    assert copy["path"] == f"{KVM_POOL}/{copy['id']}.qcow2"
    assert _image(pool_folder / f"{copy['id']}.qcow2")["format"] == "qcow2"

    # vCenter's zone deploys as before, beside it.
    source = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = snapshot(cloud, source["id"], "beside-kvm")
    other = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                       name="dc0-clone-1")["virtualmachine"]
    assert other["state"] == "Running" and other["zoneid"] == zones["DC0"]
    assert other["hypervisor"] == "VMware"
    assert vcsim.vm(other["instancename"])["power"] == "poweredOn"

    # Each zone's VM is stopped and expunged by its own hypervisor.
    cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
    conn = libvirt.open(kvm["uri"])
    try:
        assert vm["instancename"] not in [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()
    assert not disk.exists()
