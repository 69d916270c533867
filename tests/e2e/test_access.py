"""Who may do what: one account cannot see or use another's snapshots, jobs or events."""

from __future__ import annotations

from typing import Any

import pytest
from cs import CloudStack

from tests.e2e.helpers import account, offering, refused, stream_events, vm_named

pytestmark = pytest.mark.stack


def test_accounts_see_and_use_only_their_own(stack: dict[str, Any], cloud: CloudStack) -> None:
    alice, alice_account = account(cloud, stack, "alice")
    bob, _ = account(cloud, stack, "bob")
    assert [a["name"] for a in bob.listAccounts()["account"]] == ["bob"]
    assert {"alice", "bob", "admin"} <= {a["name"] for a in cloud.listAccounts()["account"]}
    assert alice.listVirtualMachines() == {}

    vm = vm_named(cloud, "DC0_H0_VM0")
    cloud.assignVirtualMachine(virtualmachineid=vm["id"], accountid=alice_account)
    assert [v["id"] for v in alice.listVirtualMachines()["virtualmachine"]] == [vm["id"]]
    # Its volumes move with it.
    volumes = cloud.listVolumes(virtualmachineid=vm["id"])["volume"]
    assert volumes and {v["id"] for v in alice.listVolumes()["volume"]} == \
        {v["id"] for v in volumes}
    taken = alice.createVMSnapshot(virtualmachineid=vm["id"], name="alices")["vmsnapshot"]
    small = offering(alice, "Small Instance")
    deployed = alice.deployVirtualMachine(vmsnapshotid=taken["id"], serviceofferingid=small,
                                          name="alices-clone")["virtualmachine"]
    assert deployed["state"] == "Running" and deployed["accountid"] == alice_account

    # Bob sees none of it and can use none of it; each refusal names the parameter.
    assert bob.listVirtualMachines() == {} and bob.listVMSnapshot() == {}
    assert bob.listVolumes() == {}
    for call, param in (
        (lambda: bob.deployVirtualMachine(vmsnapshotid=taken["id"], serviceofferingid=small),
         "vmsnapshotid"),
        (lambda: bob.createVolume(vmsnapshotid=taken["id"], volumeid=vm["id"]), "vmsnapshotid"),
        (lambda: bob.deleteVMSnapshot(vmsnapshotid=taken["id"]), "vmsnapshotid"),
        (lambda: bob.prepareTemplate(vmsnapshotid=taken["id"]), "vmsnapshotid"),
        (lambda: bob.destroyVirtualMachine(id=deployed["id"]), "id"),
    ):
        error = refused(call)
        assert error["errorcode"] == 431 and param in error["errortext"], error
    jobs = [j["jobid"] for j in alice.listAsyncJobs()["asyncjobs"]]
    assert jobs and bob.listAsyncJobs() == {}
    error = refused(lambda: bob.queryAsyncJobResult(jobid=jobs[0], fetch_result=False))
    assert error["errorcode"] == 431 and "jobid" in error["errortext"]
    assert refused(lambda: bob.listHosts())["errorcode"] == 531
    assert refused(lambda: bob.createAccount(username="mallory", password="x", email="m@x",
                                             firstname="m", lastname="m"))["errorcode"] == 531

    # The audit stream: Alice's events reach Alice, not Bob.
    assert alice.key and alice.secret and bob.key and bob.secret
    alice_lines = stream_events(stack, alice.key, alice.secret, until=deployed["id"])
    bob_lines = stream_events(stack, bob.key, bob.secret, until=deployed["id"])
    assert any(deployed["id"] in line for line in alice_lines)
    assert not any(deployed["id"] in line or taken["id"] in line for line in bob_lines)

    # Every change is attributed to the account and user that made it.
    mine = [e for e in cloud.listEvents()["event"] if deployed["id"] in e["description"]]
    assert mine and all(e["accountid"] == alice_account and e["account"] == "alice"
                        for e in mine)
    assert any(e["username"] == "alice" for e in mine)
