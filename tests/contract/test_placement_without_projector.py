"""Placement, the gateway's deploy checks and its limits decisions decide from the event
store alone: with the projector stopped, deploys placed at once and concurrently never
overbook a host and honour a requested host; restarted, the projector catches up to read
models equal to a rebuild. With the projector never run, a deploy request is checked and
recorded as the streams say, and concurrent requests never take an account past its
limit. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from proto import streams
from proto.commands import DeployVirtualMachine
from proto.events import (
    AccountCreated,
    Disk,
    InventoryObjectGone,
    NetworkImported,
    Nic,
    PoolImported,
    ResourceLimitUpdated,
    ServiceOfferingCreated,
    TemplateSeeded,
    TemplateSeedStarted,
    VmAssigned,
    VmDeployFailed,
    VmDeployRequested,
    VmPlaced,
    VmSnapshotTaken,
    VmStarted,
    VolumeCreated,
    ZoneImported,
)
from services.gateway.api import Caller, Context
from services.gateway.commands.vms import submit_deploy
from services.planner.handlers import Planner
from shared.bus import Dispatcher, Outcome
from shared.domain import capacity
from shared.domain.deploy import DeployInputs
from shared.domain.limits import Usage
from shared.errors import ApiError
from shared.eventstore import EventStore, RecordedEvent, Repository, SnapshotStreams
from shared.projections import ALL, Projector
from shared.projections.read import ReadModels, Viewer
from tests.contract.test_projections import caught_up, tables
from tests.kit import deliver, deploy, given, host, new_stream, no_changes

GB = 1024


async def test_placements_are_right_with_the_projector_stopped(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    # Two hosts on pool-1 with room for 4 VMs of 1 GB each, one host on pool-2 only.
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=4 * GB))
    await given(store, streams.host("h2"), host("h2", ["pool-1"], memory_mb=4 * GB))
    await given(store, streams.host("h3"), host("h3", ["pool-2"], memory_mb=64 * GB))
    projector = Projector(store, ALL, batch=50)
    running = asyncio.create_task(projector.run())
    await caught_up(projector, store)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    stopped_at = await projector.checkpoint()

    planner = Dispatcher("planner", store, Planner(store, no_changes).handlers())
    # Two deploys name host h2, one after the other; then ten more all at once.
    requested = [str(uuid.uuid4()) for _ in range(2)]
    for vm_id in requested:
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, memory_mb=GB, host_id="h2"))
        first = (await store.read_stream(streams.vm(vm_id)))[0]
        result, _ = await deliver(planner, str(first.event_id))
        assert result.outcome is Outcome.HANDLED
    burst = [str(uuid.uuid4()) for _ in range(10)]
    for vm_id in burst:
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, memory_mb=GB))
    firsts = [(await store.read_stream(streams.vm(v)))[0] for v in burst]
    results = await asyncio.gather(*(deliver(planner, str(f.event_id)) for f in firsts))
    assert {result.outcome for result, _ in results} == {Outcome.HANDLED}

    # Every deploy settled; the requested host was honoured; no host is overbooked.
    ends = {}
    for vm_id in requested + burst:
        events = [e.event() for e in await store.read_stream(streams.vm(vm_id))]
        ends[vm_id] = events[1]
    for vm_id in requested:
        placed = ends[vm_id]
        assert isinstance(placed, VmPlaced) and placed.host_id == "h2"
    placed_on = [e.host_id for e in ends.values() if isinstance(e, VmPlaced)]
    assert sorted(placed_on) == ["h1"] * 4 + ["h2"] * 4
    failed = [e for e in ends.values() if isinstance(e, VmDeployFailed)]
    assert len(failed) == 4 and {e.error_code for e in failed} == {533}
    for host_id in ("h1", "h2", "h3"):
        recorded = await store.read_stream(streams.host(host_id))
        state = capacity.fold(host_id, [e.event() for e in recorded])
        view = state.view()
        assert view.reserved_memory_mb <= view.memory_mb_total
        assert {v.id: v for v in await store.hosts()}[host_id] == view
        held = {vm for vm, e in ends.items() if isinstance(e, VmPlaced) and e.host_id == host_id}
        assert set(state.reservations) == held

    # The read models did not move meanwhile: nothing above decided from them.
    assert await projector.checkpoint() == stopped_at < await store.head()

    restarted = Projector(store, ALL, batch=50)
    running = asyncio.create_task(restarted.run())
    try:
        await caught_up(restarted, store)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    live = await tables(pool)
    states = {str(r["id"]): r["state"] for r in live["vm_instances"]}
    assert len(states) == 12 and set(states.values()) == {"Starting", "Error"}
    hosts = {r["id"]: r for r in live["catalog"] if r["kind"] == "host"}
    assert len(hosts) == 3
    await Projector(store, ALL, batch=50).rebuild()
    assert await tables(pool) == live


ALICE = Caller("acct-alice", "alice", "user-alice", "alice", "user")
BOB = Caller("acct-bob", "bob", "user-bob", "bob", "user")
ADMIN = Caller("acct-admin", "admin", "user-admin", "admin", "admin")
SMALL, LARGE = str(uuid.uuid4()), str(uuid.uuid4())
SNAPSHOT, VM, ROOT = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
NET, GONE_NET = str(uuid.uuid4()), str(uuid.uuid4())
H1, H2 = str(uuid.uuid4()), str(uuid.uuid4())


async def record_cloud(store: EventStore) -> None:
    """Alice's running VM (1 CPU, 1 GB) with a root volume of a disk offering and one VM
    snapshot, seeded as a template on pool-1; hosts on pool-1 and pool-2; a network and a
    network gone; two offerings; Alice may hold 3 VMs."""
    for caller in (ALICE, BOB):
        await given(store, streams.account(caller.account_id), AccountCreated(
            account_id=caller.account_id, name=caller.account_name, role="user"))
    await given(store, streams.account(ALICE.account_id), ResourceLimitUpdated(
        account_id=ALICE.account_id, resource="user_vm", max=3))
    await given(store, streams.zone("zone-1"), ZoneImported(zone_id="zone-1", name="DC0",
                                                            ref="z"))
    await given(store, streams.host(H1), host(H1, ["pool-1"]))
    await given(store, streams.host(H2), host(H2, ["pool-2"]))
    await given(store, streams.pool("pool-1"), PoolImported(
        pool_id="pool-1", zone_id="zone-1", name="ds-1", ref="p", url="ds:///1",
        capacity_bytes=100, free_bytes=40, host_ids=[H1]))
    for network_id in (NET, GONE_NET):
        await given(store, streams.network(network_id), NetworkImported(
            network_id=network_id, zone_id="zone-1", name=network_id[:8], ref=network_id))
    await given(store, streams.network(GONE_NET), InventoryObjectGone(kind="network",
                                                                      object_id=GONE_NET))
    for offering_id, name, cpus in ((SMALL, "Small", 1), (LARGE, "Large", 2)):
        await given(store, streams.service_offering(offering_id), ServiceOfferingCreated(
            offering_id=offering_id, name=name, display_text=name, cpu_number=cpus,
            cpu_speed=1000, memory_mb=1024 * cpus))
    await given(store, streams.vm(VM), msgspec.structs.replace(
        deploy(VM, pool_id="pool-1", network_ids=[NET], template_id="tpl-base",
               vm_snapshot_id=None, zone_id="zone-1"), account_id=ALICE.account_id),
        VmStarted(vm_id=VM, host_id=H1, hypervisor_ref="vm-1"))
    await given(store, streams.volume(ROOT), VolumeCreated(
        volume_id=ROOT, account_id=ALICE.account_id, name="ROOT-1", volume_type="ROOT",
        pool_id="pool-1", size_bytes=2**30, path="[ds-1] root", vm_id=VM,
        disk_offering_id="disk-1"))
    await given(store, streams.vm_snapshot(SNAPSHOT), VmSnapshotTaken(
        snapshot_id=SNAPSHOT, vm_id=VM, account_id=ALICE.account_id, name="before",
        description="", ref="s", parent_id=None, created=datetime.now(UTC), memory=False,
        cpu_number=1, memory_mb=1024,
        disks=[Disk(volume_id=ROOT, device_key=2000, path="[ds-1] root", pool_id="pool-1",
                    size_bytes=2**30, root=True)],
        nics=[Nic(nic_id="nic-1", network_id=NET, mac="00:50:56:00:00:01", device_key=4000)]))
    template_id = streams.seed_template_id(SNAPSHOT, "pool-1")
    await given(store, streams.seed(SNAPSHOT, "pool-1"), TemplateSeedStarted(
        vm_snapshot_id=SNAPSHOT, pool_id="pool-1", template_id=template_id, name="seed"),
        TemplateSeeded(vm_snapshot_id=SNAPSHOT, pool_id="pool-1", template_id=template_id,
                       template_ref="t", base_snapshot_ref="b", install_path="[ds-1] t",
                       task_ids=[]))


def request(offering: str = SMALL, **fields: Any) -> DeployVirtualMachine:
    return DeployVirtualMachine(apikey="", serviceofferingid=offering, **fields)


async def refused(ctx: Context, caller: Caller, wanted: DeployVirtualMachine) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await submit_deploy(ctx, caller, wanted)
    return caught.value


async def test_deploys_are_checked_and_limited_from_the_store_with_no_projector(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    await record_cloud(store)
    ctx = Context(store)

    # Deployed from the snapshot: what the new VM inherits comes from the streams.
    accepted = await submit_deploy(ctx, ALICE, request(vmsnapshotid=SNAPSHOT, hostid=H1))
    first = (await store.read_stream(streams.vm(accepted.id)))[0].event()
    assert isinstance(first, VmDeployRequested)
    assert (first.zone_id, first.pool_id, first.network_ids, first.source_vm_id,
            first.root_template_id, first.disk_offering_id, first.host_id) == (
        "zone-1", "pool-1", [NET], VM, "tpl-base", "disk-1", H1)

    # Each rule, with its text, from what the streams say.
    large = await refused(ctx, ALICE, request(LARGE, vmsnapshotid=SNAPSHOT))
    assert (large.code, large.text) == (431, (
        f"invalid parameter serviceofferingid: offering Large has 2 CPU(s) but VM snapshot "
        f"{SNAPSHOT} was taken with 1 virtual CPU(s); choose an offering with 1"))
    far = await refused(ctx, ALICE, request(vmsnapshotid=SNAPSHOT, hostid=H2))
    assert far.text == (f"invalid parameter hostid: host host-{H2} cannot reach primary "
                        "storage pool pool-1 that holds the root volume to deploy from")
    gone = await refused(ctx, ALICE, request(vmsnapshotid=SNAPSHOT, networkids=[GONE_NET]))
    assert gone.text == (f"invalid parameter networkids: no network {GONE_NET} exists in "
                         "zone zone-1")
    nobody = str(uuid.uuid4())
    unknown = await refused(ctx, ALICE, request(nobody, vmsnapshotid=SNAPSHOT))
    assert unknown.text == f"invalid parameter serviceofferingid: no service offering " \
        f"{nobody} exists"
    for caller, field, source in ((BOB, "vmsnapshotid", SNAPSHOT),
                                  (BOB, "templateid", streams.seed_template_id(SNAPSHOT,
                                                                               "pool-1"))):
        hidden = await refused(ctx, caller, request(**{field: source}))
        kind = "VM snapshot" if field == "vmsnapshotid" else "template"
        assert hidden.text == (f"invalid parameter {field}: no {kind} {source} is visible "
                               "to your account")

    # From the seeded template: its pool and its pool's zone.
    template_id = streams.seed_template_id(SNAPSHOT, "pool-1")
    by_template = await submit_deploy(ctx, ALICE, request(templateid=template_id))
    second = (await store.read_stream(streams.vm(by_template.id)))[0].event()
    assert isinstance(second, VmDeployRequested)
    assert (second.zone_id, second.pool_id, second.root_template_id) == (
        "zone-1", "pool-1", template_id)

    # Alice holds 3 VMs now, her limit: five concurrent requests are all refused with the
    # figures; an administrator is not limited.
    assert await store.holdings(ALICE.account_id) == Usage(
        user_vm=3, volume=3, template=1, cpu=3, memory=3072)
    answers = await asyncio.gather(*(submit_deploy(ctx, ALICE, request(vmsnapshotid=SNAPSHOT))
                                     for _ in range(5)), return_exceptions=True)
    assert all(isinstance(a, ApiError) and a.code == 535 and a.text == (
        "Maximum number of resources of type 'user_vm' for account name=alice has been "
        "exceeded: 3 allocated, 1 requested, limit 3; an administrator may raise it with "
        "updateResourceLimit resourcetype=0") for a in answers)
    await submit_deploy(ctx, ADMIN, request(vmsnapshotid=SNAPSHOT))

    # Her limit raised to 5: of eight concurrent requests exactly two are accepted.
    await given(store, streams.account(ALICE.account_id), ResourceLimitUpdated(
        account_id=ALICE.account_id, resource="user_vm", max=5))
    answers = await asyncio.gather(*(submit_deploy(ctx, ALICE, request(vmsnapshotid=SNAPSHOT))
                                     for _ in range(8)), return_exceptions=True)
    assert sum(not isinstance(a, BaseException) for a in answers) == 2
    assert sum(isinstance(a, ApiError) and a.code == 535 for a in answers) == 6
    assert (await store.holdings(ALICE.account_id)).user_vm == 5

    # The VM assigned to Bob with its snapshot: the snapshot is his to deploy from, and its
    # template counts for him.
    await given(store, streams.vm(VM), VmAssigned(vm_id=VM, account_id=BOB.account_id,
                                                  volume_ids=[ROOT], snapshot_ids=[SNAPSHOT]))
    await submit_deploy(ctx, BOB, request(vmsnapshotid=SNAPSHOT))
    theirs = await refused(ctx, ALICE, request(vmsnapshotid=SNAPSHOT))
    assert theirs.text == (f"invalid parameter vmsnapshotid: no VM snapshot {SNAPSHOT} is "
                           "visible to your account")
    assert await store.holdings(BOB.account_id) == Usage(
        user_vm=2, volume=2, template=1, cpu=2, memory=2048)

    # Nothing above read the read models: they are empty; projected, they show every VM.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM vm_instances") == 0
        assert await conn.fetchval("SELECT count(*) FROM catalog") == 0
    await Projector(store, ALL, batch=50).catch_up()
    listed = await ReadModels(store).vms(Viewer(ADMIN.account_id, True))
    assert listed.total == 1 + 2 + 1 + 2 + 1


class CountingStore(EventStore):
    """The store, counting its reads of streams."""

    reads = 0

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        self.reads += 1
        return await super().read_streams(stream_ids)

    async def deploy_reads(self, stream_ids: Sequence[str], objects: Sequence[str] | None,
                           volume_id: str | None
                           ) -> tuple[dict[str, list[RecordedEvent]],
                                      dict[str, tuple[str, str, bool]], str | None]:
        self.reads += 1
        return await super().deploy_reads(stream_ids, objects, volume_id)


async def test_a_snapshot_deployed_from_before_has_its_streams_read_at_once(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    await record_cloud(store)
    counting = CountingStore(pool)
    repo, known = Repository(counting), SnapshotStreams()

    async def inputs(known: SnapshotStreams | None) -> DeployInputs:
        return await repo.deploy_inputs(snapshot_id=SNAPSHOT, template_id=None,
                                        offering_id=SMALL, host_id=None, network_ids=[NET],
                                        known=known)

    first = await inputs(known)
    assert counting.reads == 2  # the snapshot's stream, then its VM's and its root volume's
    assert known.get(SNAPSHOT) == (VM, ROOT)
    assert await inputs(known) == first
    assert counting.reads == 3  # all at once
    # Known wrong (not the VM and volume the snapshot was taken with): read again, right.
    known.learn(SNAPSHOT, str(uuid.uuid4()), str(uuid.uuid4()))
    assert await inputs(known) == first
    assert counting.reads == 5 and known.get(SNAPSHOT) == (VM, ROOT)
    assert await inputs(None) == first


def test_snapshot_streams_keep_the_snapshots_deployed_from_last() -> None:
    known = SnapshotStreams(size=2)
    known.learn("s1", "vm-1", None)
    known.learn("s2", "vm-2", "root-2")
    assert known.get("s1") == ("vm-1", None)  # s1 is now the one used last
    known.learn("s3", "vm-3", "root-3")
    assert (known.get("s1"), known.get("s2"), known.get("s3")) == (
        ("vm-1", None), None, ("vm-3", "root-3"))
