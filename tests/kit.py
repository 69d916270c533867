"""Handlers in process: a durable consumer's delivery without NATS, for unit-speed tests.

``Delivery`` hands every stored event, in global order, to each service's ``Dispatcher``
that has a handler for its type, as JetStream would: a failed attempt is delivered again
at once (no backoff) until it is handled or given up on its last attempt. Each dispatcher
keeps its own cursor, as each durable consumer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from proto.envelope import Metadata
from proto.events import (
    Event,
    HostImported,
    NetworkImported,
    PoolImported,
    VmDeployRequested,
    VmImported,
    VmSnapshotTaken,
    ZoneImported,
)
from proto.streams import stable_id
from services.cloner.handlers import Cloner
from services.planner.handlers import Planner
from services.planner.inventory import Synced
from services.seeder.handlers import Seeder
from services.volume.handlers import Volumes
from shared.bus import Dispatched, Dispatcher, Outcome
from shared.domain.inventory import observed, zone_id
from shared.drivers.fake import FakeHypervisor
from shared.drivers.zones import Hypervisors
from shared.eventstore import NO_STREAM, Append, ConcurrencyError, Store

META = Metadata(correlation_id="test", actor="admin/admin", account_id="admin")


class CountsConflicts:
    """Mixed into a store class: counts the commits refused because another writer moved
    a stream first."""

    conflicts = 0

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> int | None:
        try:
            last: int | None = await super().commit(  # type: ignore[misc]
                appends, metadata, inbox=inbox)
            return last
        except ConcurrencyError:
            self.conflicts += 1
            raise


@dataclass
class Delivered:
    consumer: str
    event_type: str
    attempts: int
    outcome: Outcome


@dataclass
class Delivery:
    store: Store
    dispatchers: list[Dispatcher]
    log: list[Delivered] = field(default_factory=list)
    _cursors: dict[str, int] = field(default_factory=dict)

    async def settle(self, rounds: int = 100) -> list[Delivered]:
        """Deliver until no consumer has anything left; returns what was delivered now."""
        start = len(self.log)
        for _ in range(rounds):
            moved = False
            for dispatcher in self.dispatchers:
                after = self._cursors.get(dispatcher.name, 0)
                for recorded in await self.store.read_all(after):
                    self._cursors[dispatcher.name] = recorded.position
                    moved = True
                    if recorded.type not in dispatcher.handlers:
                        continue
                    result, attempts = await deliver(dispatcher, str(recorded.event_id),
                                                     recorded.type)
                    self.log.append(Delivered(dispatcher.name, result.event_type, attempts,
                                              result.outcome))
            if not moved:
                return self.log[start:]
        raise AssertionError(f"still delivering after {rounds} rounds")


async def deliver(dispatcher: Dispatcher, event_id: str,
                  event_type: str | None = None) -> tuple[Dispatched, int]:
    """One event to one consumer, redelivered at once until it settles (its type told, as
    a NATS message tells it)."""
    for attempt in range(1, dispatcher.max_deliver + 1):
        result = await dispatcher.dispatch(event_id, attempt, event_type)
        if result.outcome not in (Outcome.RETRY, Outcome.UNRECORDED):
            return result, attempt
    raise AssertionError(f"event {event_id} was not settled in {dispatcher.max_deliver} "
                         "attempts")


async def given(store: Store, stream_id: str, *events: Event) -> None:
    """Events a test starts from, appended as if by the gateway or an earlier sync."""
    await store.commit([Append(stream_id, list(events))], META)


async def new_stream(store: Store, stream_id: str, *events: Event) -> None:
    await store.commit([Append(stream_id, list(events), NO_STREAM)], META)


def host(host_id: str, pools: list[str], *, cpu_cores: int = 4, cpu_mhz: int = 2000,
         memory_mb: int = 8192, zone_id: str = "zone-1") -> HostImported:
    return HostImported(host_id=host_id, zone_id=zone_id, name=f"host-{host_id}",
                        ref=f"ref-{host_id}", cluster="c1", cpu_cores=cpu_cores,
                        cpu_mhz=cpu_mhz, memory_bytes=memory_mb * 1024 * 1024,
                        pool_ids=pools)


# The zone of FakeHypervisor.standard()'s datacenter, as an inventory sync records it.
FAKE_ZONE_ID = zone_id("datacenter-1")


def deploy(vm_id: str, *, pool_id: str = "pool-1", cpu_number: int = 1, cpu_speed: int = 1000,
           memory_mb: int = 1024, host_id: str | None = None,
           vm_snapshot_id: str | None = "snap-1", template_id: str | None = None,
           network_ids: list[str] | None = None,
           zone_id: str = FAKE_ZONE_ID) -> VmDeployRequested:
    return VmDeployRequested(
        vm_id=vm_id, job_id=stable_id("job", vm_id), account_id="acct-1", user_id="user-1",
        name=f"vm-{vm_id}", display_name=f"vm-{vm_id}", instance_name=f"i-acct-{vm_id}-VM",
        zone_id=zone_id, service_offering_id="small", cpu_number=cpu_number,
        cpu_speed=cpu_speed, memory_mb=memory_mb, pool_id=pool_id,
        network_ids=network_ids or [], vm_snapshot_id=vm_snapshot_id,
        template_id=template_id, host_id=host_id)


@dataclass(frozen=True)
class World:
    """What a fake hypervisor's inventory gave the store: ids to deploy with."""

    zone_id: str
    pool_id: str
    host_ids: list[str]
    network_ids: list[str]
    vm_id: str
    snapshot_id: str


async def imported(store: Store, fake: FakeHypervisor) -> World:
    """The fake's inventory imported, with one snapshot of its first VM taken first."""
    vm_ref = next(iter(fake.vms))
    await fake.create_snapshot(vm_ref, "before-upgrade", "", False, False)
    events: list[Event] = []
    for inventory in await fake.inventory():
        for stream_id, event in observed(inventory, "acct-1", set(),
                                         driver_kind=fake.kind.name):
            await given(store, stream_id, event)
            events.append(event)
    pools = [e.pool_id for e in events if isinstance(e, PoolImported)]
    return World(
        zone_id=next(e.zone_id for e in events if isinstance(e, ZoneImported)),
        pool_id=pools[0],
        host_ids=[e.host_id for e in events if isinstance(e, HostImported)],
        network_ids=[e.network_id for e in events if isinstance(e, NetworkImported)],
        vm_id=next(e.vm_id for e in events if isinstance(e, VmImported)),
        snapshot_id=next(e.snapshot_id for e in events if isinstance(e, VmSnapshotTaken)),
    )


async def no_changes() -> Synced:
    """An inventory sync that finds nothing, for a planner under test."""
    return Synced([])


def sessions(*fakes: FakeHypervisor) -> Hypervisors:
    """The fakes as a process's hypervisor sessions, routed by zone."""
    return Hypervisors(list(fakes))


def pipeline(store: Store, fake: FakeHypervisor | Hypervisors, *names: str) -> Delivery:
    """A Delivery through the named services' handlers (``planner``, ``seeder``,
    ``cloner``, ``volume``), each giving a message up after 4 deliveries; one fake is a
    process with that one hypervisor session."""
    routed = fake if isinstance(fake, Hypervisors) else sessions(fake)
    made = {"planner": lambda: Planner(store, no_changes).handlers(),
            "seeder": lambda: Seeder(store, routed).handlers(),
            "cloner": lambda: Cloner(store, routed).handlers(),
            "volume": lambda: Volumes(store, routed).handlers()}
    return Delivery(store, [Dispatcher(name, store, made[name](), max_deliver=4)
                            for name in names])
