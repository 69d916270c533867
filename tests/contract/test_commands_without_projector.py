"""The gateway's commands decide from the event store alone: with the projector never run
(the read models empty), each command on a VM, VM snapshot, volume, account or user finds
its target, refuses what its state does not allow with CloudStack's code and text, hides
another account's things, and records its request at the version it checked; a command
whose stream moved on between its check and its append decides again. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from proto import streams
from proto.events import (
    AccountCreated,
    DiskOfferingCreated,
    JobSubmitted,
    PoolImported,
    VmAssigned,
    VmDestroyed,
    VmPowerRequested,
    VmRecovered,
    VmSnapshotDeleteRequested,
    VmSnapshotRequested,
    VmStopped,
    VolumeAllocated,
    VolumeAttached,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeResizeRequested,
)
from services.gateway.api import COMMANDS, Caller, Context, Params
from shared.errors import ApiError
from shared.eventstore import Append, EventStore
from tests.contract.test_placement_without_projector import (
    ADMIN,
    ALICE,
    BOB,
    ROOT,
    SNAPSHOT,
    VM,
    record_cloud,
)
from tests.kit import given

DATA = str(uuid.uuid4())
POOL = str(uuid.uuid4())
DISK_OFFERING = str(uuid.uuid4())


@dataclass(frozen=True)
class Unprojected(Context):
    """A context whose synchronous commands do not wait for the read models to show their
    change (no projector runs here)."""

    async def change(self, caller: Caller, *appends: Append) -> None:
        await self.append(caller, *appends)


async def run(ctx: Context, caller: Caller, command: str, **params: Any) -> dict[str, Any]:
    return await COMMANDS[command.lower()].run(
        ctx, Params(command, {k: str(v) for k, v in params.items()}), caller)


async def refused(ctx: Context, caller: Caller, command: str, **params: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await run(ctx, caller, command, **params)
    return caught.value


async def last(store: EventStore, stream_id: str) -> object:
    return (await store.read_stream(stream_id))[-1].event()


async def test_commands_on_vms_snapshots_and_volumes_decide_from_the_store(
        store: EventStore, pool: asyncpg.Pool) -> None:
    await record_cloud(store)
    await given(store, streams.volume(DATA), VolumeCreated(
        volume_id=DATA, account_id=ALICE.account_id, name="DATA-1", volume_type="DATADISK",
        pool_id="pool-1", size_bytes=2**30, path="[ds-1] data", vm_id=None,
        disk_offering_id=DISK_OFFERING))
    await given(store, streams.disk_offering(DISK_OFFERING), DiskOfferingCreated(
        offering_id=DISK_OFFERING, name="Small", display_text="Small", disk_size_gb=5))
    await given(store, streams.pool(POOL), PoolImported(
        pool_id=POOL, zone_id="zone-1", name="ds-3", ref="p3", url="ds:///3",
        capacity_bytes=100, free_bytes=40, host_ids=[]))
    ctx = Unprojected(store)

    # Another account's VM, snapshot and volume are ids that do not exist for Bob.
    for command, params, text in (
            ("stopVirtualMachine", {"id": VM}, f"invalid parameter id: no virtual machine {VM}"),
            ("deleteVMSnapshot", {"vmsnapshotid": SNAPSHOT},
             f"invalid parameter vmsnapshotid: no VM snapshot {SNAPSHOT}"),
            ("resizeVolume", {"id": DATA, "size": 2}, f"invalid parameter id: no volume {DATA}")):
        hidden = await refused(ctx, BOB, command, **params)
        assert (hidden.code, hidden.text) == (431, f"{text} is visible to your account")

    # The VM is Running: start is refused with its state, stop is recorded at its version.
    started = await refused(ctx, ALICE, "startVirtualMachine", id=VM)
    assert (started.code, started.text) == (536, f"virtual machine {VM} is Running; it can be "
                                            "started when Stopped")
    version = len(await store.read_stream(streams.vm(VM)))
    stop = await run(ctx, ALICE, "stopVirtualMachine", id=VM)
    recorded = await store.read_stream(streams.vm(VM))
    assert [r.version for r in recorded[version:]] == [version + 1, version + 2]
    assert recorded[version].event() == VmPowerRequested(vm_id=VM, job_id=stop["jobid"],
                                                         action="stop")
    assert isinstance(recorded[version + 1].event(), JobSubmitted)

    # The VM has a snapshot: its volumes may not be attached, detached or resized (536).
    attach = await refused(ctx, ALICE, "attachVolume", id=DATA, virtualmachineid=VM)
    assert (attach.code, attach.text) == (536, (
        f"attachVolume is refused: virtual machine {VM} has 1 VM snapshot(s), and volumes of "
        "a VM with VM snapshots cannot be attached, detached or resized; delete its VM "
        "snapshots first"))
    shrink = await refused(ctx, ALICE, "resizeVolume", id=ROOT, size=1)
    assert shrink.text == (f"invalid parameter size: 1 GB does not grow volume {ROOT} "
                           "(1.0 GB); volumes only grow")
    root = await refused(ctx, ALICE, "deleteVolume", id=ROOT)
    assert root.text == (f"invalid parameter id: volume {ROOT} is a root volume; it goes when "
                         "its VM is expunged")

    # A snapshot taken of the VM, and its only snapshot's deletion asked for.
    snap = await run(ctx, ALICE, "createVMSnapshot", virtualmachineid=VM)
    taken = await last(store, streams.vm(VM))
    assert isinstance(taken, JobSubmitted) and taken.job_id == snap["jobid"]
    requested = (await store.read_stream(streams.vm(VM)))[-2].event()
    assert isinstance(requested, VmSnapshotRequested)
    assert requested.name.endswith(f"_snapshot_{snap['id'][:8]}")
    await run(ctx, ALICE, "deleteVMSnapshot", vmsnapshotid=SNAPSHOT)
    assert isinstance((await store.read_stream(streams.vm(VM)))[-2].event(),
                      VmSnapshotDeleteRequested)

    # Stopped, destroyed and recovered, as the stream says after each.
    await given(store, streams.vm(VM), VmStopped(vm_id=VM))
    reboot = await refused(ctx, ALICE, "rebootVirtualMachine", id=VM)
    assert reboot.text == f"virtual machine {VM} is Stopped; it can be rebooted when Running"
    not_destroyed = await refused(ctx, ALICE, "recoverVirtualMachine", id=VM)
    assert not_destroyed.text == (f"invalid parameter id: virtual machine {VM} is Stopped, "
                                  "not Destroyed; only a destroyed VM can be recovered")
    await given(store, streams.vm(VM), VmDestroyed(vm_id=VM))
    again = await refused(ctx, ALICE, "destroyVirtualMachine", id=VM)
    assert again.text == (f"invalid parameter id: virtual machine {VM} is already destroyed; "
                          "pass expunge=true to remove it")
    await run(ctx, ALICE, "recoverVirtualMachine", id=VM)
    assert await last(store, streams.vm(VM)) == VmRecovered(vm_id=VM)

    # An empty volume from a disk offering in the one zone; the data volume resized, then
    # deleted; a deleted volume is gone for its owner too.
    allocated = await run(ctx, ALICE, "createVolume", diskofferingid=DISK_OFFERING)
    first = (await store.read_stream(streams.volume(allocated["id"])))[0].event()
    assert isinstance(first, VolumeAllocated)
    assert (first.zone_id, first.size_bytes) == ("zone-1", 5 * 2**30)
    await run(ctx, ALICE, "resizeVolume", id=DATA, size=3)
    assert isinstance((await store.read_stream(streams.volume(DATA)))[-2].event(),
                      VolumeResizeRequested)
    await run(ctx, ALICE, "deleteVolume", id=DATA)
    assert await last(store, streams.volume(DATA)) == VolumeDeleteRequested(volume_id=DATA)

    # Assigned to Erin's account (admin), with its volume and its snapshots.
    erin = str(uuid.uuid4())
    await given(store, streams.account(erin), AccountCreated(account_id=erin, name="erin",
                                                             role="user"))
    await run(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM, accountid=erin)
    assigned = await last(store, streams.vm(VM))
    assert assigned == VmAssigned(vm_id=VM, account_id=erin, volume_ids=[ROOT],
                                  snapshot_ids=[SNAPSHOT])
    gone = await refused(ctx, ALICE, "stopVirtualMachine", id=VM)
    assert gone.code == 431
    nobody = str(uuid.uuid4())
    no_account = await refused(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM,
                               accountid=nobody)
    assert no_account.text == f"invalid parameter accountid: no account {nobody}"

    # A pool's full-clone setting is its zone's kind's (zone-1 was imported before kinds
    # were recorded: a vCenter datacenter).
    await run(ctx, ADMIN, "updateConfiguration", name="vmware.create.full.clone", value="true",
              storageid=POOL)
    other = await refused(ctx, ADMIN, "updateConfiguration", name="kvm.create.full.clone",
                          value="true", storageid=POOL)
    assert other.text == (f"invalid parameter name: storage pool {POOL} is in a VMware zone, "
                          "whose pools take vmware.create.full.clone, not kvm.create.full.clone")

    # Nothing above read the read models: they are empty.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM vm_instances") == 0
        assert await conn.fetchval("SELECT count(*) FROM catalog") == 0


async def test_a_command_whose_stream_moved_on_decides_again(store: EventStore) -> None:
    """Commands on one volume sent at once each decide on the volume as it is stored."""
    await record_cloud(store)
    ctx = Unprojected(store)
    volume_id = str(uuid.uuid4())
    await given(store, streams.volume(volume_id), VolumeCreated(
        volume_id=volume_id, account_id=ALICE.account_id, name="DATA-2",
        volume_type="DATADISK", pool_id="pool-1", size_bytes=2**30, path="[ds-1] d2",
        vm_id=None, disk_offering_id=None))
    # Eight resizes at once: each is checked against the stream as it stood when it
    # appended (a stale one decides again), none is lost, none appended on a stale version.
    answers = await asyncio.gather(*(run(ctx, ALICE, "resizeVolume", id=volume_id, size=s)
                                     for s in range(2, 10)), return_exceptions=True)
    assert all(not isinstance(a, BaseException) for a in answers), answers
    recorded = await store.read_stream(streams.volume(volume_id))
    assert [r.version for r in recorded] == list(range(1, 18))
    assert sum(isinstance(r.event(), VolumeResizeRequested) for r in recorded) == 8
    # The attached state is what detach decides on.
    await given(store, streams.volume(volume_id), VolumeAttachRequested(
        volume_id=volume_id, vm_id=VM, job_id="j", attach=True),
        VolumeAttached(volume_id=volume_id, vm_id=VM, device_key=2001))
    snapshot_free = await refused(ctx, ALICE, "detachVolume", id=volume_id)
    assert snapshot_free.code == 536  # record_cloud's VM has its snapshot
    await given(store, streams.volume(volume_id), VolumeDetached(volume_id=volume_id,
                                                                 vm_id=VM))
    detached = await refused(ctx, ALICE, "detachVolume", id=volume_id)
    assert detached.text == (f"invalid parameter id: volume {volume_id} is not an attached "
                             "data volume")


async def test_account_names_are_unique_in_the_store(store: EventStore) -> None:
    ctx = Unprojected(store)
    params = {"username": "carol", "password": "pw", "email": "c@example.com",
              "firstname": "C", "lastname": "L"}
    answers = await asyncio.gather(*(run(ctx, ADMIN, "createAccount", **params)
                                     for _ in range(5)), return_exceptions=True)
    created = [a for a in answers if not isinstance(a, BaseException)]
    taken = [a for a in answers if isinstance(a, ApiError)]
    assert len(created) == 1 and len(taken) == 4
    assert {(t.code, t.text) for t in taken} == {(431, (
        "invalid parameter account: an account or user named 'carol' exists already"))}
    assert await store.account_named("CAROL") == created[0]["account"]["id"]
    # The limit is set on the account the name finds in the store.
    limit = await run(ctx, ADMIN, "updateResourceLimit", account="Carol", resourcetype=0,
                      max=2)
    assert limit["resourcelimit"]["accountid"] == created[0]["account"]["id"]
    assert limit["resourcelimit"]["max"] == 2
    missing = await refused(ctx, ADMIN, "updateResourceLimit", account="dave",
                            resourcetype=0, max=2)
    assert missing.text == "invalid parameter account: no account dave is visible to your " \
        "account"
