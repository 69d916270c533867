"""A hostile tenant: Bob tries every command that takes an id on Alice's things.

For each, Bob must get exactly the answer he gets for an id that does not exist (the ids
aside), and nothing may change: no event is recorded for Bob's account, no capacity is
reserved, Alice's VM, snapshot, template and volumes stay as they were.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from cs import CloudStack, CloudStackApiException

from tests.e2e.helpers import (
    account,
    nats_client,
    nats_deploy,
    offering,
    refused,
    snapshot,
    stream_events,
    vm_named,
)

pytestmark = pytest.mark.stack

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def answer(client: CloudStack, command: str, params: dict[str, str]) -> Any:
    """What ``command`` answers, with every id in it blanked: an error's code and text, or
    the response."""
    try:
        result = getattr(client, command)(fetch_result=False, **params)
    except CloudStackApiException as exc:
        return ("error", exc.error["errorcode"], UUID.sub("<id>", str(exc.error["errortext"])))
    return ("ok", UUID.sub("<id>", repr(result)))


def store_query(stack: dict[str, Any], sql: str, *args: object) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_bob_gets_nothing_of_alices_and_changes_nothing(stack: dict[str, Any],
                                                        cloud: CloudStack) -> None:
    alice, alice_account = account(cloud, stack, "alice")
    bob, bob_account = account(cloud, stack, "bob")
    alice_user = alice.listAccounts()["account"][0]["user"][0]["id"]

    # Alice's things: a VM, a snapshot of it, its seeded template, a VM deployed from that,
    # a volume copied from the snapshot, an empty volume, and their jobs.
    vm = vm_named(cloud, "DC0_H0_VM0")
    cloud.assignVirtualMachine(virtualmachineid=vm["id"], accountid=alice_account)
    snap = snapshot(alice, vm["id"], "alices")
    template = alice.prepareTemplate(vmsnapshotid=snap)["template"][0]
    small = offering(alice, "Small Instance")
    clone = alice.deployVirtualMachine(templateid=template["id"], serviceofferingid=small,
                                       name="alices-clone")["virtualmachine"]
    assert clone["state"] == "Running"
    [root] = alice.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    copied = alice.createVolume(vmsnapshotid=snap, volumeid=root["id"])["volume"]
    disk_offering = cloud.createDiskOffering(name="hostile-1g", disksize="1")["diskoffering"]
    empty = alice.createVolume(diskofferingid=disk_offering["id"], name="alices-empty")["volume"]
    bobs_volume = bob.createVolume(diskofferingid=disk_offering["id"], name="bobs")["volume"]
    job = alice.listAsyncJobs()["asyncjobs"][0]["jobid"]
    alices = {vm["id"], snap, template["id"], clone["id"], root["id"], copied["id"],
              empty["id"], job, alice_user, alice_account}

    bob_events = store_query(stack, "SELECT count(*) FROM events"
                             " WHERE metadata ->> 'account_id' = $1", bob_account)
    reservations = store_query(stack, "SELECT count(*) FROM events"
                               " WHERE type = 'CapacityReserved'")

    probes: list[tuple[str, dict[str, str]]] = [
        ("deployVirtualMachine", {"vmsnapshotid": snap, "serviceofferingid": small}),
        ("deployVirtualMachine", {"templateid": template["id"], "serviceofferingid": small}),
        ("prepareTemplate", {"vmsnapshotid": snap}),
        ("prepareTemplate", {"templateid": template["id"]}),
        ("listTemplates", {"templatefilter": "self", "id": template["id"]}),
        ("listTemplates", {"templatefilter": "self"}),
        ("listVMSnapshot", {"vmsnapshotid": snap}),
        ("listVMSnapshot", {"virtualmachineid": vm["id"]}),
        ("createVMSnapshot", {"virtualmachineid": vm["id"]}),
        ("deleteVMSnapshot", {"vmsnapshotid": snap}),
        ("revertToVMSnapshot", {"vmsnapshotid": snap}),
        ("listVirtualMachines", {"id": clone["id"]}),
        ("stopVirtualMachine", {"id": clone["id"]}),
        ("startVirtualMachine", {"id": clone["id"]}),
        ("rebootVirtualMachine", {"id": clone["id"]}),
        ("destroyVirtualMachine", {"id": clone["id"], "expunge": "true"}),
        ("recoverVirtualMachine", {"id": clone["id"]}),
        ("listVolumes", {"id": copied["id"]}),
        ("listVolumes", {"virtualmachineid": vm["id"]}),
        ("createVolume", {"vmsnapshotid": snap, "volumeid": root["id"]}),
        ("deleteVolume", {"id": empty["id"]}),
        ("attachVolume", {"id": empty["id"], "virtualmachineid": clone["id"]}),
        ("attachVolume", {"id": bobs_volume["id"], "virtualmachineid": clone["id"]}),
        ("detachVolume", {"id": copied["id"]}),
        ("resizeVolume", {"id": copied["id"], "size": "100"}),
        ("queryAsyncJobResult", {"jobid": job}),
        ("registerUserKeys", {"id": alice_user}),
        ("listAccounts", {"id": alice_account}),
        ("assignVirtualMachine", {"virtualmachineid": clone["id"], "accountid": bob_account}),
    ]
    for command, params in probes:
        missing = {k: str(uuid.uuid4()) if v in alices else v for k, v in params.items()}
        assert answer(bob, command, params) == answer(bob, command, missing), (command, params)

    # The NATS door: Bob's own signed requests naming Alice's snapshot or template.
    assert bob.key and bob.secret
    for fields in ({"vmsnapshotid": snap}, {"templateid": template["id"]}):
        missing = {name: str(uuid.uuid4()) for name in fields}
        got, expected = (nats_deploy(stack, bob.key, bob.secret, serviceofferingid=small,
                                     **request) for request in (fields, missing))
        assert got["errorcode"] == expected["errorcode"] == 431, (got, expected)
        assert UUID.sub("<id>", got["errortext"]) == UUID.sub("<id>", expected["errortext"])

    # What Bob may list shows none of Alice's things.
    for listed in (bob.listVirtualMachines(), bob.listVMSnapshot(), bob.listVolumes(),
                   bob.listTemplates(templatefilter="self"), bob.listAsyncJobs(),
                   bob.listEvents(), bob.listAccounts()):
        assert not alices & set(UUID.findall(repr(listed))), listed

    # Nothing changed: no event for Bob's account, no capacity reserved, Alice's intact.
    assert store_query(stack, "SELECT count(*) FROM events WHERE metadata ->> 'account_id' = $1",
                       bob_account) == bob_events
    assert store_query(stack, "SELECT count(*) FROM events WHERE type = 'CapacityReserved'"
                       ) == reservations
    assert vm_named(alice, "alices-clone")["state"] == "Running"
    assert [s["id"] for s in alice.listVMSnapshot(vmsnapshotid=snap)["vmSnapshot"]] == [snap]
    assert [t["id"] for t in alice.listTemplates(templatefilter="self")["template"]] == \
        [template["id"]]
    assert {v["id"] for v in alice.listVolumes()["volume"]} >= {copied["id"], empty["id"]}

    # The audit streams: on NATS, Bob may not subscribe to Alice's subject, to all accounts'
    # or to the event stream, and hears nothing of what Alice does; nor on SSE.
    errors: list[str] = []
    heard: list[bytes] = []

    async def hear(msg: Any) -> None:
        heard.append(msg.data)

    async def listen() -> str:
        assert bob.key and bob.secret
        nc = await nats_client(stack, bob.key, bob.secret, errors)
        try:
            for subject in (f"snapdeploy.audit.{alice_account}.>", "snapdeploy.audit.>",
                            "snapdeploy.events.>"):
                await nc.subscribe(subject, cb=hear)
            await nc.flush()
            taken = await asyncio.to_thread(snapshot, alice, vm["id"], "while-bob-listens")
            await asyncio.sleep(1)
            return taken
        finally:
            await nc.close()

    taken = asyncio.run(listen())
    refusals = [e for e in errors if "permissions violation" in e.lower()]
    assert heard == [] and len(refusals) == 3, errors
    alice_lines = stream_events(stack, alice.key or "", alice.secret or "", until=taken)
    assert any(taken in line for line in alice_lines)
    bob_lines = stream_events(stack, bob.key, bob.secret, until=taken)
    assert not alices & set(UUID.findall("".join(bob_lines))) and taken not in "".join(bob_lines)


def test_a_vms_snapshots_and_templates_follow_it_to_its_new_owner(
    stack: dict[str, Any], cloud: CloudStack
) -> None:
    carol, carol_account = account(cloud, stack, "carol")
    dave, dave_account = account(cloud, stack, "dave")
    vm = vm_named(cloud, "DC0_H0_VM1")
    cloud.assignVirtualMachine(virtualmachineid=vm["id"], accountid=carol_account)
    snap = snapshot(carol, vm["id"], "carols")
    template = carol.prepareTemplate(vmsnapshotid=snap)["template"][0]
    assert template["accountid"] == carol_account

    cloud.assignVirtualMachine(virtualmachineid=vm["id"], accountid=dave_account)
    # Carol no longer reaches the VM, its snapshot or its template ...
    for call, param in (
        (lambda: carol.revertToVMSnapshot(vmsnapshotid=snap), "vmsnapshotid"),
        (lambda: carol.deleteVMSnapshot(vmsnapshotid=snap), "vmsnapshotid"),
        (lambda: carol.prepareTemplate(templateid=template["id"]), "templateid"),
        (lambda: carol.deployVirtualMachine(templateid=template["id"],
                                            serviceofferingid=offering(carol, "Small Instance")),
         "templateid"),
    ):
        error = refused(call)
        assert error["errorcode"] == 431 and param in error["errortext"], error
    assert carol.listVMSnapshot() == {} and carol.listTemplates(templatefilter="self") == {}
    # ... and Dave, the new owner, does.
    assert [s["id"] for s in dave.listVMSnapshot()["vmSnapshot"]] == [snap]
    [listed] = dave.listTemplates(templatefilter="self")["template"]
    assert listed["id"] == template["id"] and listed["accountid"] == dave_account
    deployed = dave.deployVirtualMachine(templateid=template["id"],
                                         serviceofferingid=offering(dave, "Small Instance"),
                                         name="daves")["virtualmachine"]
    assert deployed["state"] == "Running" and deployed["accountid"] == dave_account


def test_one_tenant_cannot_take_all_capacity(stack: dict[str, Any], cloud: CloudStack) -> None:
    erin, erin_account = account(cloud, stack, "erin")
    vm = vm_named(cloud, "DC0_C0_RP0_VM1")
    cloud.assignVirtualMachine(virtualmachineid=vm["id"], accountid=erin_account)
    snap = snapshot(erin, vm["id"], "erins")
    small = offering(erin, "Small Instance")
    # CloudStack's defaults, until an admin sets a limit; users may read, not set, them.
    defaults = {r["resourcetypename"]: r["max"] for r in
                erin.listResourceLimits()["resourcelimit"]}
    assert defaults == {"user_vm": 20, "volume": 20, "template": 20, "cpu": 40, "memory": 40960}
    assert refused(lambda: erin.updateResourceLimit(account="erin", resourcetype="0",
                                                    max="100"))["errorcode"] == 531
    held = len(erin.listVirtualMachines()["virtualmachine"])
    updated = cloud.updateResourceLimit(account="erin", resourcetype="0", max=str(held + 2))
    assert updated["resourcelimit"]["max"] == held + 2
    assert updated["resourcelimit"]["resourcetypename"] == "user_vm"

    # Four deploys at once against room for two: exactly two are accepted.
    def deploy(n: int) -> Any:
        return answer(erin, "deployVirtualMachine", {"vmsnapshotid": snap,
                                                     "serviceofferingid": small,
                                                     "name": f"erin-{n}"})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(deploy, range(4)))
    accepted = [a for a in answers if a[0] == "ok"]
    refusals = [a for a in answers if a[0] == "error"]
    assert len(accepted) == 2 and len(refusals) == 2, answers
    for _, code, text in refusals:
        assert code == 535 and "'user_vm'" in text and "name=erin" in text, text
    assert store_query(stack, "SELECT count(*) FROM events WHERE type = 'VmDeployRequested'"
                       " AND data ->> 'account_id' = $1", erin_account) == 2

    # Memory counts the offering's memory of every VM the account holds.
    cloud.updateResourceLimit(account="erin", resourcetype="9", max="1")
    error = refused(lambda: erin.createVolume(vmsnapshotid=snap, volumeid=vm["id"]))
    assert error["errorcode"] == 431  # a volume is not memory: only its own checks apply
    cloud.updateResourceLimit(account="erin", resourcetype="0", max="-1")
    error = refused(lambda: erin.deployVirtualMachine(vmsnapshotid=snap,
                                                      serviceofferingid=small))
    assert error["errorcode"] == 535 and "'memory'" in error["errortext"], error
    [memory] = erin.listResourceLimits(resourcetype="9")["resourcelimit"]
    assert memory["max"] == 1 and memory["account"] == "erin"


def test_the_services_database_role_cannot_rewrite_history(stack: dict[str, Any]) -> None:
    """The stack's services connect as a role that is no superuser and may not change or
    delete events; the schema's owner is a different role."""

    async def probe() -> tuple[bool, str, str]:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            superuser = await conn.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE events SET type = 'Forged'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM events")
            user: str = await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()
        owner = await asyncpg.connect(stack["database_admin_url"])
        try:
            owner_name: str = await owner.fetchval("SELECT current_user")
        finally:
            await owner.close()
        return bool(superuser), user, owner_name

    superuser, user, owner = asyncio.run(probe())
    assert not superuser and user != owner
