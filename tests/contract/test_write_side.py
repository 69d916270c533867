"""The write side's promises, kept alike by PostgreSQL's EventStore and the in-memory store:
commits all or nothing with the inbox; hosts' capacity, the lookups across streams and
each account's holdings never behind the store (on PostgreSQL, triggers keep them, for
events stored before the triggers too); one limits decision per account at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import typing
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest

from proto import streams
from proto.events import (
    AccountCreated,
    AddressesAllocated,
    AddressesReleased,
    AnyEvent,
    CapacityReleased,
    CapacityReserved,
    Disk,
    Event,
    InventoryObjectGone,
    NetworkImported,
    NetworkRangeSet,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedStarted,
    UserCreated,
    VmAssigned,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmDestroyRequested,
    VmExpunged,
    VmImported,
    VmPlaced,
    VmRecovered,
    VmReverted,
    VmServiceChanged,
    VmSnapshotDeleted,
    VmSnapshotTaken,
    VmStarted,
    VmStopped,
    VolumeAllocated,
    VolumeAttached,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
)
from shared import db
from shared.db import create_pool, migrate
from shared.domain import capacity, network
from shared.domain.limits import Usage
from shared.eventstore import (
    NO_STREAM,
    Append,
    ConcurrencyError,
    EventStore,
    Holding,
    MemoryEventStore,
    NameTaken,
    NewEvent,
    Store,
    VmEntry,
)
from tests.kit import META, deploy, host

MIGRATIONS = Path(__file__).parents[2] / "shared" / "db" / "migrations"


async def old_schema(conn: asyncpg.Connection, last: int) -> None:
    """The schema as migrations 1 to ``last`` made it, recorded as applied: an install from
    before the later ones."""
    await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                       " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    for path in sorted(MIGRATIONS.glob("[0-9]*_*.sql")):
        if int(path.name[:4]) <= last:
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                               int(path.name[:4]), path.name)


def migrations_from(first: int) -> list[int]:
    """The versions of the migrations from ``first`` on."""
    numbers = (int(path.name[:4]) for path in MIGRATIONS.glob("[0-9]*_*.sql"))
    return sorted(n for n in numbers if n >= first)

# A host's life: imported, reservations made and released, gone, imported again smaller.
HOST_LIFE: list[tuple[str, Event]] = [
    ("h1", host("h1", ["p1", "p2"], cpu_cores=8, memory_mb=16384)),
    ("h2", host("h2", ["p2"])),
    ("h1", CapacityReserved(host_id="h1", vm_id="v1", cpu_mhz=2000, memory_mb=2048)),
    ("h1", CapacityReserved(host_id="h1", vm_id="v2", cpu_mhz=1000, memory_mb=1024)),
    ("h2", CapacityReserved(host_id="h2", vm_id="v3", cpu_mhz=500, memory_mb=512)),
    ("h1", CapacityReleased(host_id="h1", vm_id="v1")),
    ("h1", CapacityReleased(host_id="h1", vm_id="v1")),
    ("h2", InventoryObjectGone(kind="host", object_id="h2")),
    ("h3", host("h3", ["p1"])),
    ("h3", InventoryObjectGone(kind="host", object_id="h3")),
    ("h3", host("h3", ["p3"], memory_mb=2048)),
    ("h1", host("h1", ["p1"], cpu_cores=4, memory_mb=8192)),
]


@pytest.fixture(params=["postgres", "memory"])
async def any_store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryEventStore()
        return
    pool = await create_pool(database_url, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield EventStore(pool)
    finally:
        await pool.close()


SNAPSHOT_LIFE: list[tuple[str, Event]] = [
    (streams.vm("v1"), deploy("v1", vm_snapshot_id="s1")),
    (streams.vm("v2"), deploy("v2", vm_snapshot_id="s1")),
    (streams.vm("v3"), deploy("v3", vm_snapshot_id=None, template_id="t1")),
    (streams.vm("v4"), deploy("v4", vm_snapshot_id="s2")),
    (streams.seed("s1", "p1"), TemplateSeedStarted(vm_snapshot_id="s1", pool_id="p1",
                                                   template_id="t1", name="seed-t1")),
    (streams.seed("s1", "p2"), TemplateSeedStarted(vm_snapshot_id="s1", pool_id="p2",
                                                   template_id="t2", name="seed-t2")),
    (streams.seed("s1", "p1"), TemplateSeedStarted(vm_snapshot_id="s1", pool_id="p1",
                                                   template_id="t1", name="seed-t1")),
    (streams.vm("v1"), VmExpunged(vm_id="v1")),
    (streams.vm("v3"), VmExpunged(vm_id="v3")),
    # Deployed from a template seeded from s1: it depends on s1 as v2 does.
    (streams.vm("v5"), deploy("v5", vm_snapshot_id=None, template_id="t2")),
]




def disk(volume_id: str, root: bool) -> Disk:
    """Root disks as recorded when keys were vSphere's numbers, data disks with a driver's
    opaque key: the lookups read both alike."""
    return Disk(volume_id=volume_id, path=f"[ds] {volume_id}", pool_id="p1", size_bytes=2**30,
                root=root, device_key=2000 if root else None, key=None if root else "vdb")


def imported_vm(vm_id: str, *disks: Disk, account_id: str = "acct-0") -> VmImported:
    return VmImported(vm_id=vm_id, zone_id="z1", account_id=account_id, name=vm_id,
                      ref=f"ref-{vm_id}", host_id="h1", cpu_number=1, memory_mb=512,
                      powered_on=True, disks=list(disks), nics=[])


def volume(volume_id: str, vm_id: str | None, account_id: str = "acct-1") -> VolumeCreated:
    return VolumeCreated(volume_id=volume_id, account_id=account_id, name=volume_id,
                         volume_type="DATADISK", pool_id="p1", size_bytes=2**30,
                         path=f"[ds] {volume_id}", vm_id=vm_id)


def taken(snapshot_id: str, vm_id: str, ref: str,
          account_id: str = "acct-0") -> VmSnapshotTaken:
    return VmSnapshotTaken(snapshot_id=snapshot_id, vm_id=vm_id, account_id=account_id,
                           name=snapshot_id, description="", ref=ref, parent_id=None,
                           created=datetime(2026, 11, 29, tzinfo=UTC), memory=False,
                           cpu_number=1, memory_mb=512, disks=[], nics=[])


# VMs deployed, failed, destroyed and imported; their volumes and snapshots.
VM_LIFE: list[tuple[str, Event]] = [
    (streams.vm("w1"), deploy("w1")),
    (streams.vm("w1"), VmStarted(vm_id="w1", host_id="h1", hypervisor_ref="r-w1")),
    (streams.volume("r1"), VolumeCreated(
        volume_id="r1", account_id="acct-1", name="ROOT-w1", volume_type="ROOT",
        pool_id="p1", size_bytes=2**30, path="[ds] r1", vm_id="w1")),
    (streams.volume("d1"), volume("d1", None)),
    (streams.volume("d1"), VolumeAttached(volume_id="d1", vm_id="w1", device_key=2001)),
    (streams.volume("d2"), volume("d2", "w1")),
    (streams.volume("d2"), VolumeDetached(volume_id="d2", vm_id="w1")),
    (streams.volume("d2"), VolumeDeleted(volume_id="d2")),
    (streams.vm("w2"), deploy("w2")),
    (streams.vm("w2"), VmDeployFailed(vm_id="w2", step="plan", reason="no host")),
    (streams.vm("i1"), imported_vm("i1", disk("i1-root", True), disk("i1-data", False))),
    (streams.vm("i1"), VmAssigned(vm_id="i1", account_id="acct-2")),
    (streams.volume("i1-data"), VolumeDetached(volume_id="i1-data", vm_id="i1")),
    (streams.vm("i2"), imported_vm("i2", disk("i2-root", True))),
    (streams.vm("i2"), VmExpunged(vm_id="i2", volume_ids=["i2-root"])),
    (streams.vm("w3"), deploy("w3")),
    (streams.vm("w3"), VmStarted(vm_id="w3", host_id="h1", hypervisor_ref="r-w3")),
    (streams.vm("w3"), VmDestroyRequested(vm_id="w3", job_id="j3", expunge=True)),
    (streams.vm("w3"), VmDestroyed(vm_id="w3")),
    (streams.vm("w3"), VmExpunged(vm_id="w3")),
    (streams.vm("w1"), VmDestroyRequested(vm_id="w1", job_id="j1", expunge=True)),
    (streams.vm_snapshot("s1"), taken("s1", "i1", "sr-1")),
    (streams.vm_snapshot("s2"), taken("s2", "i1", "sr-2")),
    (streams.vm_snapshot("s2"), VmSnapshotDeleted(snapshot_id="s2", vm_id="i1")),
]


def owned_deploy(vm_id: str, account_id: str, cpu_number: int = 1,
                 memory_mb: int = 1024) -> VmDeployRequested:
    return msgspec.structs.replace(deploy(vm_id, cpu_number=cpu_number, memory_mb=memory_mb),
                                   account_id=account_id)


def seeded(snapshot_id: str, pool_id: str) -> TemplateSeeded:
    return TemplateSeeded(vm_snapshot_id=snapshot_id, pool_id=pool_id,
                          template_id=streams.seed_template_id(snapshot_id, pool_id),
                          template_ref="t", base_snapshot_ref="b", install_path="[ds] t",
                          task_ids=[])


# What two accounts hold, as the resource limits count it: VMs in every state, volumes in
# every state, a VM assigned with its volume and snapshot (and the template seeded from it),
# a template removed, a VM expunged with its root volume and imported again.
HOLDINGS_LIFE: list[tuple[str, Event]] = [
    (streams.vm("x1"), owned_deploy("x1", "h-a", 2, 2048)),
    (streams.vm("x1"), VmPlaced(vm_id="x1", host_id="h1", pool_id="p1", cpu_number=2,
                                cpu_speed=1000, memory_mb=2048)),
    (streams.vm("x2"), owned_deploy("x2", "h-a")),
    (streams.vm("x2"), VmStarted(vm_id="x2", host_id="h1", hypervisor_ref="r-x2")),
    (streams.vm("x2"), VmStopped(vm_id="x2")),
    (streams.vm("x2"), VmServiceChanged(vm_id="x2", service_offering_id="large", cpu_number=2,
                                        cpu_speed=1000, memory_mb=2048)),
    (streams.vm("x2"), VmReverted(snapshot_id="none", vm_id="x2", powered_on=True)),
    (streams.vm("x3"), owned_deploy("x3", "h-a")),
    (streams.vm("x3"), VmDeployFailed(vm_id="x3", step="plan", reason="no host")),
    (streams.vm("x4"), owned_deploy("x4", "h-a")),
    (streams.vm("x4"), VmStarted(vm_id="x4", host_id="h1", hypervisor_ref="r-x4")),
    (streams.vm("x4"), VmDestroyed(vm_id="x4")),
    (streams.vm("x4"), VmRecovered(vm_id="x4")),
    (streams.vm("x5"), owned_deploy("x5", "h-a")),
    (streams.vm("x5"), VmStarted(vm_id="x5", host_id="h1", hypervisor_ref="r-x5")),
    (streams.volume("xr5"), volume("xr5", "x5", "h-a")),
    (streams.vm("x5"), VmDestroyed(vm_id="x5")),
    (streams.vm("x5"), VmExpunged(vm_id="x5", volume_ids=["xr5"])),
    (streams.vm("y1"), imported_vm("y1", disk("y1-root", True), account_id="h-b")),
    (streams.vm_snapshot("ys1"), taken("ys1", "y1", "ysr-1", "h-b")),
    (streams.seed("ys1", "p1"), seeded("ys1", "p1")),
    (streams.vm("y1"), VmAssigned(vm_id="y1", account_id="h-a", volume_ids=["y1-root"],
                                  snapshot_ids=["ys1"])),
    (streams.vm("y2"), imported_vm("y2", disk("y2-root", True), account_id="h-b")),
    (streams.vm_snapshot("ys2"), taken("ys2", "y2", "ysr-2", "h-b")),
    (streams.seed("ys2", "p1"), seeded("ys2", "p1")),
    (streams.seed("ys2", "p1"), TemplateRemoved(vm_snapshot_id="ys2", pool_id="p1")),
    (streams.vm("y2"), VmExpunged(vm_id="y2", volume_ids=["y2-root"])),
    (streams.vm("y2"), imported_vm("y2", disk("y2-root", True), account_id="h-b")),
    (streams.volume("xv1"), VolumeFromSnapshotRequested(
        volume_id="xv1", job_id="j", account_id="h-a", user_id="u", name="xv1",
        vm_snapshot_id="ys1", source_volume_id="y1-root", source_path="[ds] y1-root",
        pool_id="p1", size_bytes=2**30)),
    (streams.volume("xv2"), VolumeAllocated(
        volume_id="xv2", job_id="j", account_id="h-a", user_id="u", name="xv2", zone_id="z1",
        disk_offering_id="small", size_bytes=2**30)),
    (streams.volume("xv3"), volume("xv3", None, "h-a")),
    (streams.volume("xv3"), VolumeDeleteRequested(volume_id="xv3")),
    (streams.volume("xv4"), VolumeAllocated(
        volume_id="xv4", job_id="j", account_id="h-a", user_id="u", name="xv4", zone_id="z1",
        disk_offering_id="small", size_bytes=2**30)),
    (streams.volume("xv4"), VolumeFailed(volume_id="xv4", reason="refused")),
    (streams.volume("xv5"), volume("xv5", None, "h-b")),
]


# An account and its user, of different names.
NAMES_LIFE: list[tuple[str, Event]] = [
    (streams.account("n-1"), AccountCreated(account_id="n-1", name="Zed", role="user")),
    (streams.user("nu-1"), UserCreated(user_id="nu-1", account_id="n-1", username="Zoe",
                                       email="z@example.com", firstname="Z", lastname="Z")),
]


async def live_host_life(store: Store) -> None:
    """A history, appended one event at a time through ``append``: an old schema has only
    that function (0004), not ``commit_events`` (0017)."""
    for host_id, event in HOST_LIFE:
        await store.append(streams.host(host_id), [NewEvent(event, META)])
    for stream_id, event in [*SNAPSHOT_LIFE, *VM_LIFE, *HOLDINGS_LIFE, *NAMES_LIFE]:
        await store.append(stream_id, [NewEvent(event, META)])


async def lookups(store: Store) -> tuple[object, ...]:
    """Every answer of the lookups of migrations 0008-0010 and 0019 for the lives above."""
    vm_ids = ["w1", "w2", "w3", "i1", "i2", "none"]
    return (await store.vms(), await store.attached_volumes(vm_ids),
            [await store.volume_origin(v) for v in ("r1", "i1-data", "i2-root", "none")],
            await store.vm_snapshots(vm_ids), await store.vm_snapshots(vm_ids, deleted=True),
            [await store.holding(kind, i) for kind, i in (
                ("vm", "x2"), ("vm", "y1"), ("vm", "x5"), ("volume", "xr5"), ("volume", "y1-root"),
                ("volume", "xv3"), ("vmsnapshot", "ys1"), ("vm", "none"))],
            [await store.snapshot_by_ref("i1", r) for r in ("sr-1", "sr-2", "sr-3")],
            await store.inventory_objects(),
            [await store.holdings(a) for a in ("acct-0", "acct-1", "acct-2", "h-a", "h-b")],
            [await store.name_taken(a, u) for a, u in (
                ("Zed", "new"), ("new", "ZOE"), ("zoe", "new"), ("new", "zed"), ("new", "new"))],
            [await store.account_named(n) for n in ("ZED", "zoe", "none")],
            [await store.host(h) for h in ("h1", "h2", "h3", "none")])


async def memory_life() -> MemoryEventStore:
    memory = MemoryEventStore()
    await live_host_life(memory)
    return memory


async def test_vms_volumes_snapshots_and_imported_objects_are_what_the_streams_say(
        any_store: Store) -> None:
    await live_host_life(any_store)
    vms = {v.id: v for v in await any_store.vms()}
    assert [v.id for v in await any_store.vms()] == sorted(vms)
    assert vms["w1"] == VmEntry("w1", "i-acct-w1-VM", False, "acct-1", True, False, True)
    assert vms["w2"] == VmEntry("w2", "i-acct-w2-VM", False, "acct-1", False, True, False)
    assert vms["w3"] == VmEntry("w3", "i-acct-w3-VM", False, "acct-1", True, True, False)
    assert vms["i1"] == VmEntry("i1", None, True, "acct-2", False, False, False)
    assert vms["i2"] == VmEntry("i2", None, True, "acct-0", False, True, False)
    assert await any_store.attached_volumes(["w1", "i1", "i2"]) == {
        "w1": ["d1", "r1"], "i1": ["i1-root"]}
    assert [await any_store.volume_origin(v) for v in ("r1", "i1-data", "nothing")] == [
        None, "i1", None]
    assert await any_store.vm_snapshots(["i1", "w1"]) == {"i1": ["s1"]}
    assert await any_store.snapshot_by_ref("i1", "sr-2") == "s2"
    assert await any_store.snapshot_by_ref("w1", "sr-1") is None
    assert await any_store.inventory_objects() == {
        "host-h1": ("host", "h1", False), "host-h2": ("host", "h2", True),
        "host-h3": ("host", "h3", False)}
    assert await any_store.inventory_objects(["host-h2", "host-h9"]) == {
        "host-h2": ("host", "h2", True)}


async def test_snapshot_uses_and_seeded_templates_are_what_the_streams_say(
        any_store: Store) -> None:
    await live_host_life(any_store)
    assert await any_store.snapshot_uses("s1") == (["v2", "v5"], ["p1", "p2"])
    assert await any_store.snapshot_uses("s2") == (["v4"], [])
    assert await any_store.snapshot_uses("s3") == ([], [])
    assert await any_store.template_seed("t2") == ("s1", "p2")
    assert await any_store.template_seed("t3") is None


async def test_each_accounts_holdings_are_what_the_streams_say(any_store: Store) -> None:
    await live_host_life(any_store)
    # x1 Starting (its root volume counts), x2 changed to 2 CPUs and 2 GB then reverted to
    # Running, x4 recovered, y1 assigned
    # with its root volume and its snapshot's template; x3 failed, x5 expunged with its root.
    assert await any_store.holdings("h-a") == Usage(user_vm=4, volume=4, template=1, cpu=6,
                                                    memory=2048 + 2048 + 1024 + 512)
    # y2 imported again (its root volume stays expunged); ys2's template removed.
    assert await any_store.holdings("h-b") == Usage(user_vm=1, volume=1, cpu=1, memory=512)
    # w1 (destroy requested) with r1 and d1, v2, v4 and v5 Starting; w2 failed; w3, v1 and v3
    # expunged; d2 deleted.
    assert await any_store.holdings("acct-1") == Usage(user_vm=4, volume=5, cpu=4, memory=4096)
    assert await any_store.holdings("nobody") == Usage()


async def test_one_holding_is_its_owner_state_and_whether_it_is_gone(any_store: Store) -> None:
    await live_host_life(any_store)
    assert await any_store.holding("vm", "x2") == Holding("h-a", "Running", False)
    assert await any_store.holding("vm", "y1") == Holding("h-a", "Running", False)
    assert await any_store.holding("vm", "x5") == Holding("h-a", "Expunging", True)
    assert await any_store.holding("volume", "xr5") == Holding("h-a", "Destroy", True)
    assert await any_store.holding("volume", "y1-root") == Holding("h-a", "Ready", False)
    assert await any_store.holding("volume", "xv2") == Holding("h-a", "Allocated", False)
    assert await any_store.holding("volume", "xv3") == Holding("h-a", "Destroy", False)
    assert await any_store.holding("vmsnapshot", "ys1") == Holding("h-a", "", False)
    assert await any_store.holding("vm", "none") is None
    assert await any_store.vm_snapshots(["i1"], deleted=True) == {"i1": ["s1", "s2"]}


async def test_account_and_user_names_are_unique_in_the_store(any_store: Store) -> None:
    await live_host_life(any_store)
    # An account's name may not be any account's or user's; a username not another user's.
    assert [await any_store.name_taken(a, u) for a, u in (
        ("ZED", "new"), ("zoe", "new"), ("new", "zoe"), ("new", "zed"), ("new", "new"))] == [
        True, True, True, False, False]
    assert await any_store.account_named("zed") == "n-1"
    assert await any_store.account_named("zoe") is None
    assert await any_store.account_users("n-1") == ["nu-1"]
    assert await any_store.account_users("nobody") == []
    # A commit that names an account taken fails whole, as a version conflict would.
    with pytest.raises(NameTaken):
        await any_store.commit([
            Append(streams.account("n-2"), [AccountCreated(account_id="n-2", name="zed",
                                                           role="user")], NO_STREAM),
            Append(streams.user("nu-2"), [UserCreated(
                user_id="nu-2", account_id="n-2", username="new", email="e", firstname="f",
                lastname="l")], NO_STREAM)], META)
    assert await any_store.read_stream(streams.account("n-2")) == []
    assert await any_store.read_stream(streams.user("nu-2")) == []
    assert not await any_store.name_taken("other", "new")


async def test_one_limits_decision_per_account_at_a_time(any_store: Store) -> None:
    await live_host_life(any_store)
    order: list[str] = []

    async def decide(name: str, account_id: str, hold_s: float) -> Usage:
        async with any_store.account_decision(account_id) as held:
            order.append(f"{name} in")
            await asyncio.sleep(hold_s)
            if name == "first":
                await any_store.commit([Append(streams.vm("x6"), [owned_deploy("x6", "h-b")])],
                                       META)
            order.append(f"{name} out")
            return held

    first = asyncio.create_task(decide("first", "h-b", 0.3))
    await asyncio.sleep(0.1)
    other = await decide("other", "h-a", 0)  # another account is not held up
    second = await decide("second", "h-b", 0)
    assert await first == Usage(user_vm=1, volume=1, cpu=1, memory=512)
    assert order == ["first in", "other in", "other out", "first out", "second in",
                     "second out"]
    # What the first decision recorded counts for the next: x6 Starting, with its root.
    assert second == Usage(user_vm=2, volume=2, cpu=2, memory=512 + 1024)
    assert other == await any_store.holdings("h-a")


async def test_turns_cancelled_while_waiting_leave_no_lock_held(pool: asyncpg.Pool) -> None:
    # A holder keeps PostgreSQL's lock for the turns waiting after it; when those are
    # cancelled instead (a consumer handing its messages back), the lock is given up.
    store = EventStore(pool)
    holding = asyncio.Event()

    async def turn(first: bool) -> None:
        async with store.decision_lock("planner"):
            if first:
                holding.set()
            await asyncio.sleep(30)

    tasks = [asyncio.ensure_future(turn(True))]
    await holding.wait()
    tasks += [asyncio.ensure_future(turn(False)) for _ in range(2)]
    await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    async with asyncio.timeout(5), EventStore(pool).decision_lock("planner"):
        pass  # another process gets its turn


async def test_pool_connections_are_kept_alive_over_tcp(pool: asyncpg.Pool) -> None:
    # So PostgreSQL ends the session of a process whose host vanished within seconds, and
    # the advisory locks it held (a turn at deciding) with it.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT inet_client_addr() IS NOT NULL")  # TCP
        assert [await conn.fetchval(f"SHOW {name}") for name in db.KEEPALIVES] == [
            "5", "2", "3"]


async def test_a_frozen_holder_of_a_turn_loses_it_after_the_idle_limit(
        pool: asyncpg.Pool, database_url: str) -> None:
    # A copy stopped (SIGSTOP) while it holds the lock still answers TCP; its session,
    # idle, is ended by PostgreSQL, and another copy gets its turn.
    other_pool = await create_pool(database_url, max_size=2)
    try:
        frozen, other = db.Turns(pool, "frozen", idle_limit_s=1), db.Turns(other_pool, "frozen")
        holding, thawed = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with frozen.turn():
                holding.set()
                await thawed.wait()  # no statement on its session meanwhile

        holder = asyncio.ensure_future(hold())
        await holding.wait()
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(10), other.turn():
            waited = asyncio.get_running_loop().time() - started
        assert 0.5 < waited < 10
        thawed.set()
        await asyncio.wait_for(holder, 5)  # its turn ends quietly, its session gone
        async with asyncio.timeout(5), frozen.turn():
            pass  # and it takes turns again
    finally:
        await other_pool.close()


async def test_the_idle_limit_lasts_as_long_as_the_lock(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with db.advisory_lock(conn, "some-lock", idle_limit_s=2):
            assert await conn.fetchval("SHOW idle_session_timeout") == "2s"
        assert await conn.fetchval("SHOW idle_session_timeout") == "0"
        # A session that had a limit of its own gets it back.
        await conn.execute("SET idle_session_timeout = '5min'")
        try:
            async with db.advisory_lock(conn, "some-lock", idle_limit_s=2):
                assert await conn.fetchval("SHOW idle_session_timeout") == "2s"
            assert await conn.fetchval("SHOW idle_session_timeout") == "5min"
        finally:
            await conn.execute("RESET idle_session_timeout")


async def test_timestamps_written_by_the_faster_encoder_are_those_asyncpg_writes(
    pool: asyncpg.Pool,
) -> None:
    """A rebuild writes its rows' timestamps with ``fast_timestamps``: each value is stored
    as asyncpg's own encoder stores it (other zones, before 2000, naive ones and dates in
    local time, the largest and smallest as infinity), an int as one already encoded, and
    once out of the block the connection is as it was."""
    values = [datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC),
              datetime(2026, 12, 1, 5, 4, 5, 1, tzinfo=timezone(timedelta(hours=2))),
              datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2026, 6, 1, 12, 0), date(2026, 3, 4), datetime.max, datetime.min]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE stamps (n int, at timestamptz)")
        try:
            await conn.copy_records_to_table("stamps", records=list(enumerate(values)))
            async with db.fast_timestamps(conn):
                await conn.copy_records_to_table(
                    "stamps", records=[(100 + n, value) for n, value in enumerate(values)])
                await conn.copy_records_to_table(
                    "stamps", records=[(200, db.pg_microseconds(values[0]))])
                read_inside = await conn.fetch("SELECT at FROM stamps WHERE n < 100 ORDER BY n")
            pairs = await conn.fetch(
                "SELECT a.at::text AS asyncpg, b.at::text AS fast FROM stamps a"
                " JOIN stamps b ON b.n = a.n + 100 WHERE a.n < 100 ORDER BY a.n")
            assert [(r["asyncpg"], r["fast"]) for r in pairs] == [
                (r["asyncpg"], r["asyncpg"]) for r in pairs]
            assert len(pairs) == len(values)
            assert pairs[-2]["fast"] == "infinity" and pairs[-1]["fast"] == "-infinity"
            assert await conn.fetchval(
                "SELECT at::text FROM stamps WHERE n = 200") == pairs[0]["asyncpg"]
            assert [r["at"] for r in read_inside] == await conn.fetchval(
                "SELECT array_agg(at ORDER BY n) FROM stamps WHERE n < 100")
            with pytest.raises(asyncpg.DataError):  # asyncpg's encoder again: no ints
                await conn.execute("INSERT INTO stamps VALUES (300, $1)", 0)
        finally:
            await conn.execute("DROP TABLE stamps")


async def test_a_frozen_lease_holder_loses_the_lease_after_the_idle_limit(
        database_url: str) -> None:
    frozen = db.Lease(database_url, "frozen", idle_limit_s=1)
    standby = db.Lease(database_url, "frozen")
    await frozen.acquire()  # and then checks nothing: stopped
    try:
        async with asyncio.timeout(10):
            await standby.acquire()
        # Running again, it finds the lease lost at its first check.
        await asyncio.wait_for(frozen.lost(), 10)
    finally:
        await frozen.release()
        await standby.release()


async def test_decisions_of_one_name_take_turns_among_processes(
        pool: asyncpg.Pool, database_url: str) -> None:
    # Two stores on pools of their own: two copies of a service.
    other_pool = await create_pool(database_url, max_size=4)
    try:
        stores = [EventStore(pool), EventStore(other_pool)]
        inside: list[str] = []
        most = 0

        async def decide(n: int, name: str) -> None:
            nonlocal most
            async with stores[n % 2].decision_lock(name):
                inside.append(name)
                most = max(most, inside.count("planner"))
                await asyncio.sleep(0.01)
                inside.remove(name)

        # Many more waiters than either pool has connections: a process's own waiters
        # queue in it, not on a connection each.
        await asyncio.wait_for(asyncio.gather(*(decide(n, "planner") for n in range(40))), 30)
        assert most == 1
        # With no decision to make, no process holds the lock.
        assert await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        # Another name is not held up by this one.
        async with stores[0].decision_lock("planner"):
            await asyncio.wait_for(decide(1, "other"), 5)
    finally:
        await other_pool.close()


async def test_hosts_are_what_their_streams_say(any_store: Store) -> None:
    await live_host_life(any_store)
    hosts = {h.id: h for h in await any_store.hosts()}
    assert sorted(hosts) == ["h1", "h3"]
    h1, h3 = hosts["h1"], hosts["h3"]
    assert (h1.pool_ids, h1.cpu_mhz_total, h1.memory_mb_total) == (["p1"], 8000, 8192)
    assert (h1.reserved_cpu_mhz, h1.reserved_memory_mb, h1.version) == (1000, 1024, 6)
    assert (h3.pool_ids, h3.memory_mb_total, h3.reserved_memory_mb, h3.version) == (
        ["p3"], 2048, 0, 3)
    # One host, gone or not, with each VM's reservation and its hypervisor id.
    one = await any_store.host("h1")
    assert (one.ref, one.imported, one.gone, one.version) == ("ref-h1", True, False, 6)
    assert sum(cpu for cpu, _ in one.reservations.values()) == 1000
    # Without its reservations (what a clone needs of it), the same host.
    assert await any_store.host("h1", reservations=False) == dataclasses.replace(
        one, reservations={})
    assert (await any_store.host("h2")).gone
    assert await any_store.host("never") == capacity.Host("never")


async def test_a_commit_is_all_or_nothing_and_recorded_once(any_store: Store) -> None:
    await any_store.commit([Append("vm-a", [VmStopped(vm_id="a")], NO_STREAM)], META)
    with pytest.raises(ConcurrencyError):
        await any_store.commit([Append("vm-b", [VmStopped(vm_id="b")], NO_STREAM),
                                Append("vm-a", [VmDestroyed(vm_id="a")], NO_STREAM)], META,
                               inbox=("c", "00000000-0000-0000-0000-000000000001"))
    assert await any_store.read_stream("vm-b") == []
    stopped = (await any_store.read_stream("vm-a"))[0]
    assert await any_store.stored(str(stopped.event_id), "c") == (stopped, False)

    cause = ("c", str(stopped.event_id))
    assert await any_store.commit([Append("vm-a", [VmDestroyed(vm_id="a")], 1)], META,
                                  inbox=cause)
    assert not await any_store.commit([Append("vm-a", [VmDestroyed(vm_id="a")])], META,
                                      inbox=cause)
    assert [e.type for e in await any_store.read_stream("vm-a")] == ["VmStopped", "VmDestroyed"]
    assert (await any_store.stored(str(stopped.event_id), "c"))[1]
    assert (await any_store.stored(str(stopped.event_id), "other"))[1] is False
    assert await any_store.stored("not-a-uuid", "c") == (None, False)
    # With its stream, in one read.
    assert await any_store.stored_with_stream(str(stopped.event_id), "c") == (
        stopped, True, await any_store.read_stream("vm-a"))
    assert await any_store.stored_with_stream(str(stopped.event_id), "other") == (
        stopped, False, await any_store.read_stream("vm-a"))
    assert await any_store.stored_with_stream(str(uuid.uuid4()), "c") == (None, False, [])
    assert await any_store.stored_with_stream("not-a-uuid", "c") == (None, False, [])
    destroyed = (await any_store.read_stream("vm-a"))[1]
    assert destroyed.meta() == META
    positions = [e.position for e in await any_store.read_all(0)]
    assert len(positions) == 2 and positions == sorted(positions)


async def test_hosts_stored_before_the_trigger_are_summarised_by_its_migration(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            await old_schema(conn, 6)
        old = EventStore(pool)
        await live_host_life(old)
        async with pool.acquire() as conn:
            assert await migrate(conn) == migrations_from(7)
        memory = MemoryEventStore()
        await live_host_life(memory)
        assert await old.hosts() == await memory.hosts()
        for snapshot in ("s1", "s2"):
            assert await old.snapshot_uses(snapshot) == await memory.snapshot_uses(snapshot)
        assert await old.template_seed("t1") == await memory.template_seed("t1") == ("s1", "p1")
        assert await lookups(old) == await lookups(memory)
    finally:
        await pool.close()


async def test_the_services_role_reads_host_capacity_but_only_the_trigger_writes_it(
    database_url: str,
) -> None:
    role, password = f"svc_{uuid.uuid4().hex[:12]}", "secret"
    owner = await asyncpg.connect(database_url)
    try:
        await db.prepare(owner, role, password)
    finally:
        await owner.close()
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.netloc.rsplit('@', 1)[1]}"))
    pool = await create_pool(url, max_size=2)
    try:
        store = EventStore(pool)
        await live_host_life(store)
        assert [h.id for h in await store.hosts()] == ["h1", "h3"]
        assert await lookups(store) == await lookups(await memory_life())
        async with pool.acquire() as conn:
            for sql in ("UPDATE host_capacity SET reserved_memory_mb = 0",
                        "DELETE FROM host_reservations",
                        "INSERT INTO host_capacity (host_id, version) VALUES ('forged', 1)",
                        "UPDATE vm_index SET ended = true",
                        "DELETE FROM volume_links",
                        "UPDATE vm_snapshot_refs SET live = false",
                        "DELETE FROM inventory_objects",
                        "UPDATE account_holdings SET gone = true",
                        "DELETE FROM account_holdings",
                        "UPDATE network_state SET version = 0",
                        "DELETE FROM network_addresses"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
    finally:
        await pool.close()


def guest_network(network_id: str, name: str = "guest", binding: str | None = None
                  ) -> NetworkImported:
    return NetworkImported(network_id=network_id, zone_id="z1", name=name,
                           ref=f"ref-{network_id}", binding=binding)


def allocated(network_id: str, vm_id: str, *addresses: str) -> AddressesAllocated:
    return AddressesAllocated(network_id=network_id, vm_id=vm_id, addresses=list(addresses),
                              cidr="10.1.0.0/24", gateway="10.1.0.1")


# Networks' lives: addresses allocated, released (twice), reused and allocated again to a
# VM holding some; a range set; a network gone, one imported again, one never imported.
NETWORK_LIFE: list[tuple[str, Event]] = [
    ("n1", guest_network("n1")),
    ("n1", allocated("n1", "v1", "10.1.0.2", "10.1.0.3")),
    ("n1", allocated("n1", "v2", "10.1.0.4")),
    ("n1", NetworkRangeSet(network_id="n1", cidr="10.1.0.0/16", gateway="10.1.0.1")),
    ("n1", AddressesReleased(network_id="n1", vm_id="v1")),
    ("n1", AddressesReleased(network_id="n1", vm_id="v1")),
    ("n1", allocated("n1", "v3", "10.1.0.3")),
    ("n1", allocated("n1", "v2", "10.1.0.6", "10.1.0.5")),
    ("n2", guest_network("n2", binding="dvs:1/pg-2")),
    ("n2", allocated("n2", "v1", "10.1.0.2")),
    ("n2", InventoryObjectGone(kind="network", object_id="n2")),
    ("n3", allocated("n3", "v4", "10.1.0.2")),
    ("n4", guest_network("n4")),
    ("n4", InventoryObjectGone(kind="network", object_id="n4")),
    ("n4", guest_network("n4", name="renamed")),
]
NETWORK_IDS = ("n1", "n2", "n3", "n4", "never")


async def network_life(store: Store) -> None:
    for network_id, event in NETWORK_LIFE:
        await store.append(streams.network(network_id), [NewEvent(event, META)])


async def folded(store: Store, network_id: str) -> network.Network:
    """The network folded from its stream, as the planner once did."""
    return network.fold(network_id, [
        e.event() for e in await store.read_stream(streams.network(network_id))])


async def test_networks_are_what_their_streams_say(any_store: Store) -> None:
    await network_life(any_store)
    for network_id in NETWORK_IDS:
        assert await any_store.network(network_id) == await folded(any_store, network_id)
        assert await any_store.network(network_id, addresses=False) == dataclasses.replace(
            await folded(any_store, network_id), held={})
    n1 = await any_store.network("n1")
    assert n1.held == {"v2": ["10.1.0.6", "10.1.0.5"], "v3": ["10.1.0.3"]}
    assert (n1.range, n1.version, n1.binding is not None) == (
        ("10.1.0.0/16", "10.1.0.1"), 8, True)
    n2 = await any_store.network("n2")
    assert (n2.gone, n2.binding, n2.held, n2.range) == (
        True, None, {"v1": ["10.1.0.2"]}, network.default_range("n2"))
    assert n2.imported == guest_network("n2", binding="dvs:1/pg-2")
    n3 = await any_store.network("n3")
    assert (n3.imported, n3.held, n3.version) == (None, {"v4": ["10.1.0.2"]}, 1)
    n4 = await any_store.network("n4")
    assert n4.imported is not None and (n4.imported.name, n4.gone) == ("renamed", False)
    assert await any_store.network("never") == network.Network("never")


async def test_what_a_deploy_is_checked_on_is_read_at_once_as_each_alone(
        any_store: Store) -> None:
    await live_host_life(any_store)
    await network_life(any_store)
    wanted = [streams.host("h1"), streams.network("n1"), streams.vm("never")]
    for objects in (["network-n1", "network-n2", "network-never"], None, []):
        read, found, origin = await any_store.deploy_reads(wanted, objects, None)
        assert read == await any_store.read_streams(wanted)
        assert found == await any_store.inventory_objects(objects)
        assert origin is None
    assert len(found) == 0 and len(read[streams.host("h1")]) == 6
    assert (await any_store.deploy_reads([], None, "no-volume"))[2] is None
    assert (await any_store.deploy_reads([], None, "i1-data"))[2] == "i1"


async def test_what_placements_decide_on_is_read_at_once_as_each_alone(
        any_store: Store) -> None:
    await live_host_life(any_store)
    await network_life(any_store)
    wanted = {streams.network("n1"): 3, streams.host("h1"): 1, streams.network("never"): 1}
    hosts, read = await any_store.placement_reads(wanted)
    assert hosts == await any_store.hosts() and len(hosts) == 2
    assert read == {stream: await any_store.read_stream(stream, version)
                    for stream, version in wanted.items()}
    assert read[streams.network("never")] == [] and len(read[streams.host("h1")]) == 6
    assert await any_store.placement_reads({}) == (hosts, {})


async def test_what_a_clone_lands_on_is_read_at_once_as_each_alone(any_store: Store) -> None:
    await live_host_life(any_store)
    await network_life(any_store)
    await any_store.commit([Append(streams.pool("p1"), [VmStopped(vm_id="not-a-pool-event")])],
                           META)
    wanted = ["n1", "never", "n2", "n1"]  # a network twice: two NICs on it
    pool, host, networks = await any_store.clone_targets(streams.pool("p1"), "h1", wanted)
    assert pool == await any_store.read_stream(streams.pool("p1")) and len(pool) == 1
    assert host == await any_store.host("h1", reservations=False)
    assert networks == [await any_store.network(n, addresses=False) for n in wanted]
    assert await any_store.clone_targets(streams.pool("none"), "never", []) == (
        [], capacity.Host("never"), [])


async def test_an_address_another_vm_holds_is_never_allocated_whatever_the_version(
        any_store: Store) -> None:
    await network_life(any_store)
    before = await any_store.network("n1")
    # Appended without a version check, with another stream in the same commit: refused
    # whole, as a version conflict, so the planner decides again.
    for clash in (allocated("n1", "v5", "10.1.0.7", "10.1.0.5"),
                  allocated("n1", "v5", "10.1.0.7", "10.1.0.7")):
        with pytest.raises(ConcurrencyError):
            await any_store.commit([Append(streams.vm("v5"), [VmStopped(vm_id="v5")]),
                                    Append(streams.network("n1"), [clash])], META)
    assert await any_store.read_stream(streams.vm("v5")) == []
    assert await any_store.network("n1") == before
    # Two allocations of one commit are checked against each other.
    with pytest.raises(ConcurrencyError):
        await any_store.commit([Append(streams.network("n1"), [allocated("n1", "v5", "10.1.0.7")]),
                                Append(streams.network("n1"), [allocated("n1", "v6", "10.1.0.7")])],
                               META)
    assert await any_store.network("n1") == before
    # An address freed is free again; a VM allocated again keeps none of its old ones.
    await any_store.commit([Append(streams.network("n1"), [
        AddressesReleased(network_id="n1", vm_id="v2"),
        allocated("n1", "v5", "10.1.0.5", "10.1.0.7"),
        allocated("n1", "v3", "10.1.0.6")], before.version)], META)
    after = await any_store.network("n1")
    assert after.held == {"v3": ["10.1.0.6"], "v5": ["10.1.0.5", "10.1.0.7"]}
    assert after == await folded(any_store, "n1") and after.version == before.version + 3


async def test_networks_stored_before_the_trigger_are_summarised_by_its_migration(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            await old_schema(conn, 15)
        old = EventStore(pool)
        await network_life(old)
        # Before the key, nothing kept a second VM from an address held: its first holder
        # keeps it.
        await old.append(streams.network("n1"), [NewEvent(allocated("n1", "v9", "10.1.0.3"),
                                                          META)])
        async with pool.acquire() as conn:
            assert 16 in await migrate(conn)
        memory = MemoryEventStore()
        await network_life(memory)
        for network_id in NETWORK_IDS:
            if network_id != "n1":
                assert await old.network(network_id) == await memory.network(network_id)
        n1 = await old.network("n1")
        assert n1.held == (await memory.network("n1")).held
        assert n1.version == (await memory.network("n1")).version + 1
    finally:
        await pool.close()


async def test_the_holdings_trigger_runs_for_every_event_type_its_function_reads(
        pool: asyncpg.Pool) -> None:
    """events_account_holdings fires only for the types it lists (migration 0023): every
    event type summarise_holdings' body names is among them."""
    known = {cls.__name__ for cls in typing.get_args(AnyEvent)}
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT pg_get_functiondef('summarise_holdings'::regproc)")
        trigger = await conn.fetchval(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger"
            " WHERE tgname = 'events_account_holdings'")
    named = set(re.findall(r"'([A-Za-z]+)'", body)) & known
    fired = set(re.findall(r"'([A-Za-z]+)'", trigger))
    assert {"VmDeployRequested", "VmStarted", "TemplateSeeded"} <= named
    assert named <= fired, sorted(named - fired)
