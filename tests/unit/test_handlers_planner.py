"""The planner's handlers in process: an in-memory store, no NATS, no PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from proto import streams
from proto.envelope import EventEnvelope, Metadata
from proto.events import (
    AnyEvent,
    CapacityReserved,
    InventoryObjectGone,
    InventorySyncRequested,
    JobCompleted,
    NetworkRangeSet,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedStarted,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
    VmPlaced,
    ZoneImported,
)
from services.planner.handlers import DECISIONS, Planner
from services.planner.inventory import Synced
from shared.bus import Dispatcher, Handlers, Outcome, TypedHandler
from shared.domain import capacity, network
from shared.domain.deploy import HostView
from shared.eventstore import (
    Append,
    ConcurrencyError,
    Group,
    MemoryEventStore,
    RecordedEvent,
)
from shared.eventstore import Outcome as Committed
from tests.kit import Delivery, deliver, deploy, given, host, new_stream, no_changes


def planner(store: MemoryEventStore) -> Dispatcher:
    return Dispatcher("planner", store, Planner(store, no_changes).handlers(),
                      max_deliver=5)


async def vm_events(store: MemoryEventStore, vm_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(streams.vm(vm_id))]


async def host_state(store: MemoryEventStore, host_id: str) -> capacity.Host:
    events = await store.read_stream(streams.host(host_id))
    return capacity.fold(host_id, [e.event() for e in events])


async def test_places_on_a_host_that_reaches_the_pool_and_reserves_its_capacity() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-2"]))
    await given(store, streams.host("h2"), host("h2", ["pool-1"]))
    await new_stream(store, streams.vm("v1"), deploy("v1", cpu_number=2, memory_mb=2048))

    delivered = await Delivery(store, [planner(store)]).settle()

    assert [(d.event_type, d.outcome) for d in delivered] == [
        ("VmDeployRequested", Outcome.HANDLED)]
    placed = (await vm_events(store, "v1"))[-1]
    assert isinstance(placed, VmPlaced) and placed.host_id == "h2"
    h2 = await host_state(store, "h2")
    assert h2.reservations == {"v1": (2000, 2048)}
    assert (await store.read_stream(streams.host("h2")))[-1].meta().causation_id


async def test_the_requested_host_is_honoured_even_when_another_has_more_room() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("big"), host("big", ["pool-1"], memory_mb=65536))
    await given(store, streams.host("small"), host("small", ["pool-1"], memory_mb=4096))
    await new_stream(store, streams.vm("v1"), deploy("v1", host_id="small"))

    await Delivery(store, [planner(store)]).settle()

    placed = (await vm_events(store, "v1"))[-1]
    assert isinstance(placed, VmPlaced) and placed.host_id == "small"


async def test_no_room_ends_the_deploy_in_error_with_533_and_reserves_nothing() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=2048))
    for n in range(3):
        await new_stream(store, streams.vm(f"v{n}"), deploy(f"v{n}", memory_mb=1024))

    await Delivery(store, [planner(store)]).settle()

    outcomes = [(await vm_events(store, f"v{n}"))[1:] for n in range(3)]
    assert [type(e[0]) for e in outcomes] == [VmPlaced, VmPlaced, VmDeployFailed]
    failed, job = outcomes[2]
    assert isinstance(failed, VmDeployFailed) and failed.error_code == 533
    assert failed.step == "plan" and "no host that reaches pool pool-1 has room" in failed.reason
    assert isinstance(job, JobCompleted) and not job.succeeded and job.error_code == 533
    assert set((await host_state(store, "h1")).reservations) == {"v0", "v1"}


async def test_a_host_gone_from_the_inventory_gets_no_new_vms() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"]),
                InventoryObjectGone(kind="host", object_id="h1"))
    await new_stream(store, streams.vm("v1"), deploy("v1"))

    await Delivery(store, [planner(store)]).settle()

    failed = (await vm_events(store, "v1"))[1]
    assert isinstance(failed, VmDeployFailed)
    assert "no host can reach primary storage pool pool-1" in failed.reason


async def test_a_failed_or_expunged_vm_releases_its_capacity_once() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=1024))
    await new_stream(store, streams.vm("v1"), deploy("v1", memory_mb=1024))
    delivery = Delivery(store, [planner(store)])
    await delivery.settle()
    assert set((await host_state(store, "h1")).reservations) == {"v1"}

    await given(store, streams.vm("v1"),
                VmDeployFailed(vm_id="v1", step="clone", reason="refused"),
                VmExpunged(vm_id="v1"))
    await delivery.settle()

    h1 = await host_state(store, "h1")
    assert h1.reservations == {}
    types = [e.type for e in await store.read_stream(streams.host("h1"))]
    assert types == ["HostImported", "CapacityReserved", "CapacityReleased"]
    # The room is there again for the next VM.
    await new_stream(store, streams.vm("v2"), deploy("v2", memory_mb=1024))
    await delivery.settle()
    assert isinstance((await vm_events(store, "v2"))[-1], VmPlaced)


async def test_a_vm_never_placed_releases_nothing() -> None:
    store = MemoryEventStore()
    await given(store, streams.vm("v1"), VmExpunged(vm_id="v1"))
    delivered = await Delivery(store, [planner(store)]).settle()
    assert [d.outcome for d in delivered] == [Outcome.HANDLED]
    assert await store.head() == 1


class Interleaving(MemoryEventStore):
    """Lets other handlers run between reading hosts and appending, as a real store does."""

    async def hosts(self) -> list[HostView]:
        hosts = await super().hosts()
        await asyncio.sleep(0)
        return hosts


async def test_concurrent_placements_on_one_host_conflict_and_never_overbook() -> None:
    store = Interleaving()
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=4096))
    for n in range(6):
        await new_stream(store, streams.vm(f"v{n}"), deploy(f"v{n}", memory_mb=1024))
    dispatcher = planner(store)
    requests = [e for e in await store.read_all() if e.type == "VmDeployRequested"]

    results = await asyncio.gather(*(deliver(dispatcher, str(r.event_id)) for r in requests))

    assert {result.outcome for result, _ in results} == {Outcome.HANDLED}
    h1 = await host_state(store, "h1")
    assert len(h1.reservations) == 4
    assert sum(memory for _, memory in h1.reservations.values()) == 4096
    ends = [type((await vm_events(store, f"v{n}"))[1]) for n in range(6)]
    assert ends.count(VmPlaced) == 4 and ends.count(VmDeployFailed) == 2


class Unreachable(MemoryEventStore):
    async def hosts(self) -> list[HostView]:
        raise ConnectionError("the database did not answer")


async def test_placement_that_keeps_failing_is_given_up_and_the_deploy_ends_in_error() -> None:
    store = Unreachable()
    await new_stream(store, streams.vm("v1"), deploy("v1"))

    delivered = await Delivery(store, [planner(store)]).settle()

    assert [(d.event_type, d.attempts, d.outcome) for d in delivered] == [
        ("VmDeployRequested", 5, Outcome.ABANDONED), ("VmDeployFailed", 1, Outcome.HANDLED)]
    failed, job = (await vm_events(store, "v1"))[1:]
    assert isinstance(failed, VmDeployFailed) and failed.step == "placement"
    assert "gave up after 5 attempts: ConnectionError" in failed.reason
    assert isinstance(job, JobCompleted) and not job.succeeded


async def test_a_redelivered_request_is_recognised_and_not_placed_twice() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"]))
    await new_stream(store, streams.vm("v1"), deploy("v1"))
    dispatcher = planner(store)
    request = (await store.read_stream(streams.vm("v1")))[0]

    first, _ = await deliver(dispatcher, str(request.event_id))
    again, _ = await deliver(dispatcher, str(request.event_id))

    assert (first.outcome, again.outcome) == (Outcome.HANDLED, Outcome.DUPLICATE)
    assert [type(e) for e in await vm_events(store, "v1")].count(VmPlaced) == 1
    assert list((await host_state(store, "h1")).reservations) == ["v1"]


async def test_inventory_sync_appends_the_changes_and_completes_its_job() -> None:
    store = MemoryEventStore()
    zone = ZoneImported(zone_id="z1", name="DC0", ref="datacenter-1")

    async def changes() -> Synced:
        return Synced([Append(streams.zone("z1"), [zone], 0)])

    dispatcher = Dispatcher("planner", store, Planner(store, changes).handlers())
    await given(store, "inventory", InventorySyncRequested(job_id="job-9"))

    await Delivery(store, [dispatcher]).settle()

    assert [e.event() for e in await store.read_stream(streams.zone("z1"))] == [zone]
    done = (await store.read_stream("inventory"))[-1].event()
    assert done == JobCompleted(job_id="job-9", succeeded=True)


async def test_a_sync_with_a_hypervisor_unanswered_records_the_rest_and_fails_its_job() -> None:
    store = MemoryEventStore()
    zone = ZoneImported(zone_id="z1", name="DC0", ref="datacenter-1")

    async def changes() -> Synced:
        return Synced([Append(streams.zone("z1"), [zone], 0)],
                      unread="vCenter east did not answer (timed out)")

    dispatcher = Dispatcher("planner", store, Planner(store, changes).handlers())
    await given(store, "inventory", InventorySyncRequested(job_id="job-9"))

    await Delivery(store, [dispatcher]).settle()

    assert [e.event() for e in await store.read_stream(streams.zone("z1"))] == [zone]
    done = (await store.read_stream("inventory"))[-1].event()
    assert isinstance(done, JobCompleted) and not done.succeeded
    assert done.error_code == 534
    assert done.error_text == ("vCenter east did not answer (timed out): the zones it held "
                               "were left as they were; the other hypervisors were synced "
                               "(1 ZoneImported)")


def test_handlers_are_registered_by_event_class() -> None:
    handlers = Planner(MemoryEventStore(), no_changes).handlers()
    assert sorted(handlers) == ["InventorySyncRequested", "VmDeployFailed",
                                "VmDeployRequested", "VmExpunged"]


async def test_a_handler_given_an_event_of_another_class_refuses_it() -> None:
    handlers = Planner(MemoryEventStore(), no_changes).handlers()
    envelope = EventEnvelope(id="e1", stream_id="vm-v1", version=1, position=1,
                             type="VmDeployRequested", schema=1, recorded_at=datetime.now(UTC),
                             metadata=Metadata(correlation_id="c"),
                             data=CapacityReserved(host_id="h", vm_id="v", cpu_mhz=1,
                                                   memory_mb=1))
    try:
        await handlers["VmDeployRequested"](envelope)
    except TypeError as exc:
        assert "is a CapacityReserved, not VmDeployRequested" in str(exc)
    else:
        raise AssertionError("a CapacityReserved was handled as a VmDeployRequested")



async def test_placing_gives_each_nic_an_address_and_ending_frees_them() -> None:
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"]))
    await new_stream(store, streams.vm("v1"), deploy("v1", network_ids=["n1", "n1", "n2"]))
    await new_stream(store, streams.vm("v2"), deploy("v2", network_ids=["n1"]))
    await Delivery(store, [planner(store)]).settle()

    n1 = network.fold("n1", await events_of(store, streams.network("n1")))
    n2 = network.fold("n2", await events_of(store, streams.network("n2")))
    assert len(n1.held["v1"]) == 2 and len(n1.held["v2"]) == 1 and len(n2.held["v1"]) == 1
    taken = [a for held in n1.held.values() for a in held]
    assert len(set(taken)) == 3  # never two NICs with one address

    await given(store, streams.vm("v1"), VmExpunged(vm_id="v1"))
    await Delivery(store, [planner(store)]).settle()
    n1 = network.fold("n1", await events_of(store, streams.network("n1")))
    assert set(n1.held) == {"v2"}
    assert network.fold("n2", await events_of(store, streams.network("n2"))).held == {}


async def events_of(store: MemoryEventStore, stream_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(stream_id)]


async def test_a_planner_copy_allocates_after_what_another_copy_allocated() -> None:
    # Each copy holds the network between its placements; the other copy's allocations
    # reach it from the network's stream.
    store = MemoryEventStore()
    await given(store, streams.host("h1"), host("h1", ["pool-1"]))
    copies = [planner(store), planner(store)]
    for n in range(6):
        await new_stream(store, streams.vm(f"v{n}"), deploy(f"v{n}", network_ids=["n1"]))
        result, attempts = await deliver(copies[n % 2], str(
            (await store.read_stream(streams.vm(f"v{n}")))[0].event_id))
        assert (result.outcome, attempts) == (Outcome.HANDLED, 1)
    held = (await store.network("n1")).held
    assert sorted(held) == [f"v{n}" for n in range(6)]
    assert len({a for addresses in held.values() for a in addresses}) == 6


class NetworkStreamsOnce(MemoryEventStore):
    """Refuses to read an event of a network's stream twice: a network's addresses come
    from ``Store.network`` once, then from the events appended to its stream since."""

    def __init__(self) -> None:
        super().__init__()
        self.read_up_to: dict[str, int] = {}

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        found = await super().read_stream(stream_id, from_version)
        if stream_id.startswith("network-"):
            if from_version <= self.read_up_to.get(stream_id, 0):
                raise AssertionError(f"{stream_id} read again from version {from_version}")
            if found:
                self.read_up_to[stream_id] = found[-1].version
        return found

    async def network(self, network_id: str, *, addresses: bool = True) -> network.Network:
        found = await super().network(network_id, addresses=addresses)
        stream_id = streams.network(network_id)
        if self.read_up_to.get(stream_id):
            raise AssertionError(f"{stream_id} read whole again")
        self.read_up_to[stream_id] = found.version
        return found

    async def held(self, network_id: str) -> dict[str, list[str]]:
        """What the network's VMs hold (read by the test, not by the planner)."""
        return (await super().network(network_id)).held


async def test_addresses_are_allocated_and_freed_reading_each_network_event_once() -> None:
    store = NetworkStreamsOnce()
    await given(store, streams.host("h1"), host("h1", ["pool-1"]))
    await given(store, streams.network("n1"), NetworkRangeSet(
        network_id="n1", cidr="192.168.7.0/29", gateway="192.168.7.1"))
    delivery = Delivery(store, [planner(store)])
    for vm_id in ("v1", "v2"):
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, network_ids=["n1", "n1"]))
    await delivery.settle()
    assert await store.held("n1") == {
        "v1": ["192.168.7.2", "192.168.7.3"], "v2": ["192.168.7.4", "192.168.7.5"]}

    # The /29 has one address left: a deploy of two NICs fails, and its capacity is freed.
    await new_stream(store, streams.vm("v3"), deploy("v3", network_ids=["n1", "n1"]))
    await delivery.settle()
    failed = (await vm_events(store, "v3"))[1]
    assert isinstance(failed, VmDeployFailed) and failed.error_code == 533
    assert "network n1 has no free address left in 192.168.7.0/29" in failed.reason

    # Once v1 is expunged its addresses are the lowest free ones again.
    await given(store, streams.vm("v1"), VmExpunged(vm_id="v1"))
    await new_stream(store, streams.vm("v4"), deploy("v4", network_ids=["n1"]))
    await delivery.settle()
    assert await store.held("n1") == {
        "v2": ["192.168.7.4", "192.168.7.5"], "v4": ["192.168.7.2"]}
    assert set((await host_state(store, "h1")).reservations) == {"v2", "v4"}


class Racing(MemoryEventStore):
    """Lets other handlers run between every read and the commit, as a real store does, and
    counts the commits refused because another writer moved a stream first."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = 0
        self.statements: list[int] = []  # commit_all's calls: the groups each committed

    async def hosts(self) -> list[HostView]:
        hosts = await super().hosts()
        await asyncio.sleep(0)
        return hosts

    async def network(self, network_id: str, *, addresses: bool = True) -> network.Network:
        found = await super().network(network_id, addresses=addresses)
        await asyncio.sleep(0)
        return found

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        found = await super().read_stream(stream_id, from_version)
        await asyncio.sleep(0)
        return found

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        found = await super().read_streams(stream_ids)
        await asyncio.sleep(0)
        return found

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> int | None:
        await asyncio.sleep(0)
        try:
            return await super().commit(appends, metadata, inbox=inbox)
        except ConcurrencyError:
            self.conflicts += 1
            raise

    async def commit_all(self, groups: Sequence[Group]) -> list[Committed]:
        self.statements.append(len(groups))
        return await super().commit_all(groups)


async def racing_placements(vms: int, handlers: Callable[[Planner], Handlers]) -> Racing:
    """``vms`` deploys of two NICs on n1 and one on n2 handled at once, on 8 hosts with room
    for ``vms`` VMs of 1 GB in all; every one placed, with its addresses."""
    store = Racing()
    for n in range(8):
        await given(store, streams.host(f"h{n}"), host(f"h{n}", ["pool-1"],
                                                       memory_mb=vms // 8 * 1024))
    for n in range(vms):
        await new_stream(store, streams.vm(f"v{n}"), deploy(
            f"v{n}", memory_mb=1024, network_ids=["n1", "n1", "n2"]))
    dispatcher = Dispatcher("planner", store, handlers(Planner(store, no_changes)))
    requests = [e for e in await store.read_all() if e.type == "VmDeployRequested"]

    results = await asyncio.gather(*(deliver(dispatcher, str(r.event_id)) for r in requests))

    assert {(result.outcome, attempts) for result, attempts in results} == {
        (Outcome.HANDLED, 1)}
    for n in range(vms):
        assert isinstance((await vm_events(store, f"v{n}"))[1], VmPlaced)
    for n in range(8):
        h = await host_state(store, f"h{n}")
        assert sum(memory for _, memory in h.reservations.values()) <= h.memory_mb_total
    n1, n2 = await store.network("n1"), await store.network("n2")
    assert len(n1.held) == len(n2.held) == vms
    assert {len(held) for held in n1.held.values()} == {2}
    assert len({a for held in n1.held.values() for a in held}) == 2 * vms
    assert len({a for held in n2.held.values() for a in held}) == vms
    # One seed started, by the first placement; each VM waits for it.
    seeded = [e.event() for e in await store.read_stream(streams.seed("snap-1", "pool-1"))]
    assert [type(e).__name__ for e in seeded].count("TemplateSeedStarted") == 1
    assert len(seeded) == vms + 1
    return store


async def test_placements_handled_at_once_in_one_process_never_conflict() -> None:
    store = await racing_placements(64, Planner.handlers)
    assert store.conflicts == 0
    # Those waiting for the lock were decided together: fewer commits than placements.
    assert sum(store.statements) == 64 and len(store.statements) < 64


class MovedUnderfoot(Racing):
    """Another writer (a sync, a release) appends to host h0's stream right after the
    planner's first read of the hosts: the batch's placements on h0 then conflict."""

    def __init__(self) -> None:
        super().__init__()
        self.moved = False

    async def hosts(self) -> list[HostView]:
        hosts = await super().hosts()
        if not self.moved:
            self.moved = True
            await given(self, streams.host("h0"), CapacityReserved(
                host_id="h0", vm_id="other", cpu_mhz=1000, memory_mb=1024))
        return hosts


async def test_a_batch_placement_that_conflicts_runs_again_and_the_others_stand() -> None:
    store = MovedUnderfoot()
    await given(store, streams.host("h0"), host("h0", ["pool-1"], memory_mb=4096))
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=4096))
    for n in range(6):
        await new_stream(store, streams.vm(f"v{n}"), deploy(f"v{n}", memory_mb=1024))
    dispatcher = Dispatcher("planner", store, Planner(store, no_changes).handlers())
    requests = [e for e in await store.read_all() if e.type == "VmDeployRequested"]

    results = await asyncio.gather(*(deliver(dispatcher, str(r.event_id)) for r in requests))

    assert {result.outcome for result, _ in results} == {Outcome.HANDLED}
    assert store.conflicts > 0  # h0 moved after the first batch read it
    for n in range(6):
        assert isinstance((await vm_events(store, f"v{n}"))[1], VmPlaced)
    # Every VM and "other" fit: no host reserved past its memory, none reserved twice.
    reserved = {}
    for h in ("h0", "h1"):
        state = await host_state(store, h)
        assert sum(memory for _, memory in state.reservations.values()) <= 4096
        for vm_id in state.reservations:
            assert vm_id not in reserved
            reserved[vm_id] = h
    assert set(reserved) == {"other", *(f"v{n}" for n in range(6))}


async def test_without_the_planners_lock_placements_handled_at_once_conflict() -> None:
    # What the lock spares: the same decisions, each rerun when another moved its streams.
    store = await racing_placements(16, lambda planner: Handlers().on(
        VmDeployRequested, alone(planner)))
    assert store.conflicts > 0


def alone(planner: Planner) -> TypedHandler[VmDeployRequested]:
    """The planner's placement, one request at a time, with no lock."""
    async def place(request: VmDeployRequested, envelope: EventEnvelope) -> Sequence[Append]:
        (decided,) = await planner.place_all([(request, envelope)])
        if isinstance(decided, Exception):
            raise decided
        return decided
    return place


class RemovedUnderfoot(MemoryEventStore):
    """The seeder removes template t's seed after the planner's first batch is decided,
    before it commits."""

    def __init__(self) -> None:
        super().__init__()
        self.removed = False

    async def commit_all(self, groups: Sequence[Group]) -> list[Committed]:
        if not self.removed:
            self.removed = True
            await given(self, streams.seed("snap-1", "pool-1"),
                        TemplateRemoved(vm_snapshot_id="snap-1", pool_id="pool-1"))
        return await super().commit_all(groups)


async def test_a_refusal_caused_only_by_a_placement_that_failed_to_commit_is_not_kept() -> None:
    # Room for one VM. v0 (from template t) is decided first and takes it, so v1 finds no
    # room in the batch; but t is removed before the commit: v0's placement fails (and v0
    # then fails for good: its template is gone). v1 is decided again and placed.
    store = RemovedUnderfoot()
    await given(store, streams.host("h0"), host("h0", ["pool-1"], memory_mb=1024))
    await given(store, streams.seed("snap-1", "pool-1"), TemplateSeedStarted(
        vm_snapshot_id="snap-1", pool_id="pool-1", template_id="t", name="seed"),
        TemplateSeeded(vm_snapshot_id="snap-1", pool_id="pool-1", template_id="t",
                       template_ref="vm-9", base_snapshot_ref="snapshot-1",
                       install_path="[pool0] seed/seed.vmdk", task_ids=[]))
    await new_stream(store, streams.vm("v0"), deploy("v0", vm_snapshot_id=None,
                                                     template_id="t"))
    await new_stream(store, streams.vm("v1"), deploy("v1"))
    dispatcher = Dispatcher("planner", store, Planner(store, no_changes).handlers())
    requests = [e for e in await store.read_all() if e.type == "VmDeployRequested"]

    async with store.decision_lock(DECISIONS):  # both wait, to be decided in one batch
        waiting = [asyncio.ensure_future(deliver(dispatcher, str(r.event_id)))
                   for r in requests]
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiting)

    failed = [e for e in await vm_events(store, "v0") if isinstance(e, VmDeployFailed)]
    assert len(failed) == 1 and failed[0].reason.endswith("template t no longer exists")
    v1 = (await vm_events(store, "v1"))[1]
    assert isinstance(v1, VmPlaced) and v1.host_id == "h0"
