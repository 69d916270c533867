"""vCenter restarts under a running stack: the services notice, log in again and carry on,
and an inventory sync settles the VMs the restart took away."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack

from tests.e2e.helpers import events_of_type, offering, snapshot, vm_named, wait_for
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack

# The services that hold a vCenter session.
WITH_VCENTER = ("planner", "seeder", "cloner", "volume")
# Generous bounds for "happens at all": a health check runs every 5 s and a vCenter call
# fails after the stack's 5 s timeout; before the fix a deploy sat Starting for minutes.
NOTICED_WITHIN_S = 60.0
DEPLOY_WITHIN_S = 60


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def health_becomes(name: str, url: str, status: int) -> dict[str, Any]:
    """The body of ``url`` once it answers ``status``."""

    def check() -> dict[str, Any] | None:
        got, body = health(url)
        return body if got == status else None

    found: dict[str, Any] = wait_for(check, f"{name} /healthz {status}",
                                     timeout=NOTICED_WITHIN_S)
    return found


def vcsim_pid(stack: dict[str, Any]) -> int:
    info = json.loads((Path(stack["state_dir"]) / "stack.json").read_text())
    return int(info["servers"]["vcsim"]["pid"])


def test_a_vcenter_restart_is_noticed_logged_in_again_and_synced(
    stack: dict[str, Any], cloud: CloudStack
) -> None:
    small = offering(cloud, "Small Instance")
    source = vm_named(cloud, "DC0_C0_RP0_VM0")
    before_snap = snapshot(cloud, source["id"], "before-restart")
    before = cloud.deployVirtualMachine(vmsnapshotid=before_snap, serviceofferingid=small,
                                        name="before-restart")["virtualmachine"]
    assert before["state"] == "Running"
    urls = {name: stack["services"][name]["health_url"] for name in WITH_VCENTER}
    assert all(health(url)[0] == 200 for url in urls.values())

    # vCenter stops answering: every service says so, naming vcenter.
    old_pid = vcsim_pid(stack)
    os.kill(old_pid, signal.SIGSTOP)
    try:
        for name, url in urls.items():
            body = health_becomes(name, url, 503)
            assert body["checks"]["vcenter"] != "ok", (name, body)
            assert body["checks"]["postgres"] == "ok" and body["checks"]["nats"] == "ok"
    finally:
        # Killed; the launcher starts a new vcsim with a fresh inventory, which knows none
        # of the services' sessions.
        os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: vcsim_pid(stack) != old_pid, "vcsim restarted", timeout=NOTICED_WITHIN_S)
    for name, url in urls.items():
        body = health_becomes(name, url, 200)
        assert body["checks"]["vcenter"] == "ok"
    relogged = [name for name in WITH_VCENTER
                if "logged in again" in Path(stack["services"][name]["log"]).read_text()]
    assert relogged, "no service logged in to vCenter again"

    fresh = Vcsim(stack["vcenter_url"], stack["vcenter_user"], stack["vcenter_password"])
    assert before["instancename"] not in fresh.vm_names()

    # A new deploy runs at once: a snapshot taken now, seeded and cloned in the new vCenter.
    quick = CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                       secret=stack["admin_secret_key"], fetch_result=True, poll_interval=0.2,
                       job_timeout=DEPLOY_WITHIN_S)
    started = time.monotonic()
    after_snap = snapshot(quick, source["id"], "after-restart")
    after = quick.deployVirtualMachine(vmsnapshotid=after_snap, serviceofferingid=small,
                                       name="after-restart")["virtualmachine"]
    assert after["state"] == "Running", after
    assert time.monotonic() - started < 2 * DEPLOY_WITHIN_S
    assert fresh.vm(after["instancename"])["power"] == "poweredOn"

    # The sync: the VM deployed before the restart is gone (expunged with its volumes, its
    # capacity released); the snapshot taken before it is gone too; what vCenter still
    # has (the new snapshot and VM) stays.
    quick.syncInventory()
    listed = {v["id"]: v for v in cloud.listVirtualMachines().get("virtualmachine", [])}
    assert before["id"] not in listed
    assert listed[after["id"]]["state"] == "Running"
    assert events_of_type(stack, "VmExpunged", vm_id=before["id"]) == 1
    wait_for(lambda: events_of_type(stack, "CapacityReleased", vm_id=before["id"]) == 1,
             "the capacity of the vanished VM released")
    snapshots = {s["id"] for s in cloud.listVMSnapshot().get("vmSnapshot", [])}
    assert after_snap in snapshots and before_snap not in snapshots
    assert events_of_type(stack, "VmSnapshotDeleted", snapshot_id=after_snap) == 0
    assert events_of_type(stack, "VmExpunged", vm_id=after["id"]) == 0

    # A second sync finds nothing more to settle.
    quick.syncInventory()
    assert events_of_type(stack, "VmExpunged", vm_id=before["id"]) == 1
