"""vCenter calls that hang past their timeout, with and without having done their work."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack

from tests.e2e.conftest import VCENTER_TIMEOUT_S
from tests.e2e.helpers import fail_text, offering, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack

HANG_MS = (VCENTER_TIMEOUT_S + 3) * 1000


def seeded_snapshot(cloud: CloudStack) -> str:
    """A snapshot of the first VM, seeded already, so a deploy's only clone is its own."""
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    taken = cloud.listVMSnapshot(virtualmachineid=original["id"]).get("vmSnapshot")
    snap = str(taken[0]["id"]) if taken else snapshot(cloud, original["id"], "faults")
    cloud.prepareTemplate(vmsnapshotid=snap)
    return snap


def cloner_log(stack: dict[str, Any]) -> str:
    return Path(stack["services"]["cloner"]["log"]).read_text()


def test_a_clone_call_that_hangs_and_fails_is_retried_and_the_vm_runs(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    snap = seeded_snapshot(cloud)
    vcsim.fail("CloneVM_Task", "injected: no answer", delay_ms=HANG_MS, max_count=1)
    try:
        vm = cloud.deployVirtualMachine(vmsnapshotid=snap, name="hung-clone",
                                        serviceofferingid=offering(cloud, "Small Instance"))
    finally:
        vcsim.clear_faults()
    vm = vm_named(cloud, "hung-clone")
    assert vm["state"] == "Running"
    assert vcsim.count_named(vm["instancename"]) == 1
    assert f"deploy of VM {vm['id']} stopped at clone in vCenter" in cloner_log(stack)


def test_a_power_on_that_outlives_its_timeout_then_succeeds_leaves_one_running_vm(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    """The half-success: vCenter powers the VM on after the cloner stopped waiting. The
    retry removes that VM and deploys again; one VM remains, and it runs."""
    snap = seeded_snapshot(cloud)
    vcsim.delay("PowerOnVM_Task", HANG_MS, for_ms=VCENTER_TIMEOUT_S * 1000)
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, name="late-power-on",
                                    serviceofferingid=offering(cloud, "Small Instance"))
    vm = vm_named(cloud, "late-power-on")
    assert vm["state"] == "Running"
    assert vcsim.count_named(vm["instancename"]) == 1
    assert vcsim.vm(vm["instancename"])["power"] == "poweredOn"
    assert f"deploy of VM {vm['id']} stopped at power-on in vCenter" in cloner_log(stack)


def test_the_same_request_sent_twice_deploys_one_vm(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    """A client that lost the answer sends the request again with the same requestid."""
    snap = seeded_snapshot(cloud)
    client = CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                        secret=stack["admin_secret_key"])  # answers without waiting for jobs
    params = {"vmsnapshotid": snap, "name": "retried", "requestid": "order-4711",
              "serviceofferingid": offering(cloud, "Small Instance")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.deployVirtualMachine(**params), range(4)))
    assert len({(a["id"], a["jobid"]) for a in answers}) == 1
    cloud.queryAsyncJobResult(jobid=answers[0]["jobid"])
    vm = vm_named(cloud, "retried")
    assert vm["state"] == "Running" and vm["id"] == answers[0]["id"]
    assert len(cloud.listVirtualMachines(name="retried")["virtualmachine"]) == 1
    assert vcsim.count_named(vm["instancename"]) == 1

    again = client.deployVirtualMachine(**params)
    assert (again["id"], again["jobid"]) == (answers[0]["id"], answers[0]["jobid"])
    text = fail_text(lambda: client.deployVirtualMachine(**{**params, "name": "other"}))
    assert "requestid" in text and "order-4711" in text and "different" in text
