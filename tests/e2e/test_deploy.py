"""Deploying VMs from VM snapshots through the gateway with the cs client, against vcsim."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from cs import CloudStack, CloudStackApiException

from proto.commands import DEPLOY_SUBJECT, CommandAccepted, CommandRejected, DeployVirtualMachine
from services.gateway.auth import sign
from tests.e2e.helpers import (
    clone_calls,
    fail_text,
    host,
    network,
    offering,
    seeds_started,
    snapshot,
    vm_named,
)
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack


def test_deploy_from_the_current_snapshot_with_chosen_offering_networks_and_host(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = snapshot(cloud, original["id"], "before-upgrade")
    target = host(cloud, "DC0_C0_H2")
    networks = [network(cloud, "VM Network"), network(cloud, "DC0_DVPG0")]
    deployed = cloud.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=offering(cloud, "Small Instance"),
        hostid=target["id"], networkids=",".join(networks), name="web-1",
        displayname="web one")["virtualmachine"]

    assert deployed["state"] == "Running"
    assert deployed["hostid"] == target["id"]
    assert [n["networkid"] for n in deployed["nic"]] == networks
    assert deployed["cpunumber"] == 1 and deployed["memory"] == 512
    assert deployed["vmsnapshotid"] == snap
    in_vcenter = vcsim.vm(deployed["instancename"])
    origin = vcsim.vm("DC0_C0_RP0_VM0")
    assert in_vcenter["power"] == "poweredOn"
    assert in_vcenter["host"] == vcsim.ref_of_host("DC0_C0_H2")
    assert in_vcenter["datastores"] == origin["datastores"]
    assert sorted(in_vcenter["nics"]) == sorted(["VM Network", "dvportgroup-12"])
    assert (in_vcenter["cpu"], in_vcenter["memory"]) == (1, 512)

    # The root volume is on the original's pool and points back at the original's template.
    volumes = cloud.listVolumes(virtualmachineid=deployed["id"])["volume"]
    assert [v["type"] for v in volumes] == ["ROOT"]
    pool_of_original = cloud.listVolumes(virtualmachineid=original["id"])["volume"][0]
    assert volumes[0]["storageid"] == pool_of_original["storageid"]

    # Seeded once, as a template on that pool; the clone request is a linked clone of it.
    templates = [t for t in cloud.listTemplates(templatefilter="all")["template"]
                 if t["vmsnapshotid"] == snap]
    assert len(templates) == 1 and templates[0]["storageid"] == volumes[0]["storageid"]
    clone_requests = clone_calls(stack)
    assert any("createNewChildDiskBacking" in c and deployed["instancename"] in c
               for c in clone_requests), "no linked-clone request named the new VM"

    # Audit: the VM, its NICs and its root volume (named by the volume's id), with the
    # vCenter tasks that made them.
    descriptions = [e["description"] for e in cloud.listEvents()["event"]
                    if deployed["id"] in e["description"] or volumes[0]["id"] in e["description"]]
    for kind in ("VmCreated", "NicCreated", "VolumeCreated", "VmStarted"):
        assert any(d.startswith(kind) and "hypervisor operations" in d for d in descriptions), kind


def test_second_deploy_reuses_the_seeded_template(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = cloud.listVMSnapshot(virtualmachineid=original["id"])["vmSnapshot"][0]["id"]
    assert seeds_started(stack, snap) == 1
    again = cloud.deployVirtualMachine(vmsnapshotid=snap,
                                       serviceofferingid=offering(cloud, "Small Instance"),
                                       name="web-2")["virtualmachine"]
    assert again["state"] == "Running"
    assert seeds_started(stack, snap) == 1
    template = next(t for t in cloud.listTemplates(templatefilter="all")["template"]
                    if t["vmsnapshotid"] == snap)
    template_vm = Path(template["installpath"].split("] ", 1)[1]).parent.name
    seeded_ref = vcsim.ref_of_vm(template_vm)
    calls = [c for c in clone_calls(stack) if again["instancename"] in c]
    assert calls and seeded_ref in calls[-1] and "createNewChildDiskBacking" in calls[-1]
    assert vcsim.vm(again["instancename"])["power"] == "poweredOn"


def test_any_snapshot_of_a_branching_tree_including_one_with_memory(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_C0_RP0_VM1")
    first = snapshot(cloud, original["id"], "one-cpu")
    vcsim.set_cpus("DC0_C0_RP0_VM1", 2)
    with_memory = snapshot(cloud, original["id"], "two-cpus-with-memory", memory=True)
    cloud.revertToVMSnapshot(vmsnapshotid=first)
    branch = snapshot(cloud, original["id"], "branch-of-one-cpu")
    tree = {s["id"]: s for s in cloud.listVMSnapshot(virtualmachineid=original["id"])[
        "vmSnapshot"]}
    assert tree[with_memory]["parent"] == first and tree[branch]["parent"] == first
    assert tree[with_memory]["type"] == "DiskAndMemory" and tree[branch]["current"]
    assert tree[first]["cpunumber"] == 1 and tree[with_memory]["cpunumber"] == 2

    small, large = offering(cloud, "Small Instance"), offering(cloud, "Large Instance")
    from_first = cloud.deployVirtualMachine(vmsnapshotid=first, serviceofferingid=small,
                                            name="from-first")["virtualmachine"]
    from_memory = cloud.deployVirtualMachine(vmsnapshotid=with_memory, serviceofferingid=large,
                                             name="from-memory")["virtualmachine"]
    # vcsim's revert moves the current snapshot but keeps the VM's configuration, so the
    # branch was taken with whatever CPUs it recorded: deploy it with a matching offering.
    branch_offering = small if tree[branch]["cpunumber"] == 1 else large
    from_branch = cloud.deployVirtualMachine(vmsnapshotid=branch,
                                             serviceofferingid=branch_offering,
                                             name="from-branch")["virtualmachine"]
    assert [v["state"] for v in (from_first, from_memory, from_branch)] == ["Running"] * 3
    # The memory state is ignored: the clone boots fresh, with the offering's configuration.
    assert (vcsim.vm(from_memory["instancename"])["cpu"],
            vcsim.vm(from_memory["instancename"])["memory"]) == (2, 2048)
    # The offering is checked against each snapshot's own configuration.
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=with_memory, serviceofferingid=small, name="wrong-cpus"))
    assert "serviceofferingid" in text and "2 virtual CPU" in text


def test_two_deploys_at_once_seed_once(stack: dict[str, Any], cloud: CloudStack) -> None:
    original = vm_named(cloud, "DC0_H0_VM0")
    snap = snapshot(cloud, original["id"], "race")
    small = offering(cloud, "Small Instance")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: cloud.deployVirtualMachine(
            vmsnapshotid=snap, serviceofferingid=small, name=f"race-{n}")["virtualmachine"],
            range(2)))
    assert [r["state"] for r in results] == ["Running", "Running"]
    assert seeds_started(stack, snap) == 1


def test_validation_errors_name_the_parameter(cloud: CloudStack, vcsim: Vcsim,
                                             tmp_path: Path, tiny: str) -> None:
    original = vm_named(cloud, "DC0_H0_VM1")
    snap = snapshot(cloud, original["id"], "for-errors")
    small = offering(cloud, "Small Instance")
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=offering(cloud, "XLarge Instance")))
    assert "serviceofferingid" in text and "4 CPU" in text and "1 virtual CPU" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=str(uuid.uuid4()), serviceofferingid=small))
    assert "vmsnapshotid" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=small, networkids=str(uuid.uuid4())))
    assert "networkids" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=small, templateid=str(uuid.uuid4())))
    assert "template ID or VM snapshot ID" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(serviceofferingid=small))
    assert "vmsnapshotid" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=small, name="not a hostname!"))
    assert "name" in text
    text = fail_text(lambda: cloud.deployVirtualMachine(vmsnapshotid="nope",
                                                         serviceofferingid=small))
    assert "vmsnapshotid" in text and "UUID" in text
    # A host that cannot reach the pool of the original's root volume.
    vcsim.add_local_datastore("DC0_C0_H0", "local-h0", tmp_path / "local-h0")
    vcsim.create_vm("multi-disk", "DC0_C0_H0", "local-h0", ["LocalDS_0"],
                    ["VM Network", "VM Network"])
    cloud.syncInventory()
    multi = vm_named(cloud, "multi-disk")
    multi_snap = snapshot(cloud, multi["id"], "multi")
    text = fail_text(lambda: cloud.deployVirtualMachine(
        vmsnapshotid=multi_snap, serviceofferingid=small,
        hostid=host(cloud, "DC0_C0_H1")["id"]))
    assert "hostid" in text and "cannot reach" in text
    # The host that can: the new VM's root volume is on the original's root pool, data
    # disks stay behind, and the two NICs of the original are kept when none are asked for.
    # The smallest offering: what is left on that one host depends on where this module's
    # earlier deploys were placed (a run left it 1 MB short of the small one's 512 MB).
    deployed = cloud.deployVirtualMachine(
        vmsnapshotid=multi_snap, serviceofferingid=tiny, name="from-multi",
        hostid=host(cloud, "DC0_C0_H0")["id"])["virtualmachine"]
    in_vcenter = vcsim.vm(deployed["instancename"])
    assert len(in_vcenter["disks"]) == 1 and in_vcenter["disks"][0].startswith("[local-h0]")
    assert len(in_vcenter["nics"]) == 2


def test_a_fault_in_the_clone_step_ends_in_error_with_nothing_left(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = cloud.listVMSnapshot(virtualmachineid=original["id"])["vmSnapshot"][0]["id"]
    # The roomiest host, so that placement cannot be what fails.
    target = max(cloud.listHosts()["host"],
                 key=lambda h: h["memorytotal"] - h["memoryallocated"])["name"]
    memory_before = host(cloud, target)["memoryallocated"]
    vcsim.fail("ReconfigVM_Task", "injected: the host refused the new configuration")
    try:
        with pytest.raises(CloudStackApiException) as failed:
            cloud.deployVirtualMachine(vmsnapshotid=snap, hostid=host(cloud, target)["id"],
                                       serviceofferingid=offering(cloud, "Small Instance"),
                                       name="doomed")
    finally:
        vcsim.clear_faults()
    text = failed.value.error["errortext"]
    assert "reconfigure" in text and "injected" in text, text
    vm = vm_named(cloud, "doomed")
    assert vm["state"] == "Error" and "reconfigure" in vm["errortext"]
    assert vm["instancename"] not in vcsim.vm_names()
    for _ in range(50):
        if host(cloud, target)["memoryallocated"] == memory_before:
            break
        time.sleep(0.1)
    assert host(cloud, target)["memoryallocated"] == memory_before
    cloud.destroyVirtualMachine(id=vm["id"], expunge="true")
    assert cloud.listVirtualMachines(name="doomed") == {}


def test_deploy_request_published_on_nats(stack: dict[str, Any], cloud: CloudStack,
                                          vcsim: Vcsim) -> None:
    import asyncio

    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = cloud.listVMSnapshot(virtualmachineid=original["id"])["vmSnapshot"][0]["id"]
    expires = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    unsigned = DeployVirtualMachine(apikey=stack["admin_api_key"], vmsnapshotid=snap,
                                    serviceofferingid=offering(cloud, "Small Instance"),
                                    name="from-nats", expires=expires)
    # Signed like the HTTP call, with the key's secret.
    request = msgspec.structs.replace(unsigned, signature=sign(unsigned.signed_params(),
                                                               stack["admin_secret_key"]))

    async def publish(payload: bytes) -> bytes:
        # As the admin's own NATS identity: the API key pair, replies to its inbox prefix.
        nc = await nats.connect(stack["nats_url"], user=stack["admin_api_key"],
                                password=stack["admin_secret_key"],
                                inbox_prefix=f"_INBOX.{stack['admin_api_key']}")
        try:
            return (await nc.request(DEPLOY_SUBJECT, payload, timeout=10)).data
        finally:
            await nc.close()

    reply = asyncio.run(publish(msgspec.json.encode(request)))
    accepted = msgspec.json.decode(reply, type=CommandAccepted)
    result = cloud.queryAsyncJobResult(jobid=accepted.jobid, fetch_result=False)
    for _ in range(100):
        if result["jobstatus"] != 0:
            break
        time.sleep(0.1)
        result = cloud.queryAsyncJobResult(jobid=accepted.jobid, fetch_result=False)
    assert result["jobstatus"] == 1
    assert result["jobresult"]["virtualmachine"]["id"] == accepted.id
    assert vcsim.vm(result["jobresult"]["virtualmachine"]["instancename"])["power"] == \
        "poweredOn"

    rejected = msgspec.json.decode(asyncio.run(publish(b'{"apikey": 1}')),
                                   type=CommandRejected)
    assert rejected.errorcode == 431 and "malformed" in rejected.errortext
    wrong_key = msgspec.json.encode(msgspec.structs.replace(request, apikey="nobody"))
    assert json.loads(asyncio.run(publish(wrong_key)))["errorcode"] == 401
    # The API key alone, the public half of the pair, deploys nothing.
    assert json.loads(asyncio.run(publish(msgspec.json.encode(unsigned))))["errorcode"] == 401


def test_deleting_the_snapshot_leaves_deployed_vms_and_expunge_removes_them(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    original = vm_named(cloud, "DC0_H0_VM0")
    snap = cloud.listVMSnapshot(virtualmachineid=original["id"])["vmSnapshot"][0]["id"]
    clones = [vm_named(cloud, "race-0"), vm_named(cloud, "race-1")]
    cloud.deleteVMSnapshot(vmsnapshotid=snap)
    assert all(s["id"] != snap for s in cloud.listVMSnapshot().get("vmSnapshot", []))
    for clone in clones:
        assert vcsim.vm(clone["instancename"])["power"] == "poweredOn"
        assert vm_named(cloud, clone["name"])["state"] == "Running"
    cloud.destroyVirtualMachine(id=clones[0]["id"], expunge="true")
    assert clones[0]["instancename"] not in vcsim.vm_names()
    assert cloud.listVirtualMachines(name="race-0") == {}


def test_the_imported_inventory_matches_vcenter(cloud: CloudStack, vcsim: Vcsim) -> None:
    from pyVmomi import vim

    zones = cloud.listZones()["zone"]
    assert [z["name"] for z in zones] == ["DC0"]
    hosts = {h["name"]: h for h in cloud.listHosts()["host"]}
    assert set(hosts) == {p["name"] for _, p in vcsim.props(vim.HostSystem, ["name"])}
    assert all(h["memorytotal"] > 0 and h["cpunumber"] > 0 for h in hosts.values())
    pools = {p["name"]: p for p in cloud.listStoragePools()["storagepool"]}
    assert "LocalDS_0" in pools and set(pools["LocalDS_0"]["hostids"]) == {
        h["id"] for h in hosts.values()}
    assert {"VM Network", "DC0_DVPG0"} <= {n["name"] for n in cloud.listNetworks()["network"]}
    imported = vm_named(cloud, "DC0_H0_VM1")
    [root] = cloud.listVolumes(virtualmachineid=imported["id"])["volume"]
    assert root["type"] == "ROOT" and root["storageid"] == pools["LocalDS_0"]["id"]
    assert root["path"] == vcsim.vm("DC0_H0_VM1")["disks"][0]


def test_sync_notices_what_was_deleted_in_vcenter(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    vcsim.create_vm("short-lived", "DC0_C0_H1", "LocalDS_0", ["LocalDS_0"], ["VM Network"])
    vcsim.take_snapshot("short-lived", "first")
    vcsim.take_snapshot("short-lived", "second")
    cloud.syncInventory()
    vm = vm_named(cloud, "short-lived")
    names = {s["name"] for s in cloud.listVMSnapshot(virtualmachineid=vm["id"])["vmSnapshot"]}
    assert names == {"first", "second"}
    assert len(cloud.listVolumes(virtualmachineid=vm["id"])["volume"]) == 2

    vcsim.remove_snapshot("short-lived", "second")
    cloud.syncInventory()
    left = cloud.listVMSnapshot(virtualmachineid=vm["id"])["vmSnapshot"]
    assert [s["name"] for s in left] == ["first"]

    vcsim.add_portgroup("short-lived-net")
    cloud.syncInventory()
    assert "short-lived-net" in {n["name"] for n in cloud.listNetworks()["network"]}

    vcsim.destroy("short-lived")
    vcsim.destroy_portgroup("short-lived-net")
    cloud.syncInventory()
    assert "short-lived-net" not in {n["name"] for n in cloud.listNetworks()["network"]}
    assert cloud.listVirtualMachines(name="short-lived") == {}
    assert cloud.listVMSnapshot(virtualmachineid=vm["id"]) == {}
    assert cloud.listVolumes(virtualmachineid=vm["id"]) == {}
    assert "ROOT-short-lived" not in {v["name"] for v in cloud.listVolumes().get("volume", [])}
