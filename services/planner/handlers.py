"""The planner's handlers: place requested VMs, release capacity, sync the inventory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    AddressesAllocated,
    InventorySyncRequested,
    JobCompleted,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
)
from services.planner.inventory import Synced, describe
from shared.bus import Decided, Handlers
from shared.domain import capacity, seed, vm
from shared.domain import network as _network
from shared.domain.deploy import HostView
from shared.errors import RESOURCE_UNAVAILABLE, ApiError
from shared.eventstore import Append, ConcurrencyError, HeldNetworks, Repository, Store
from shared.log import correlation

log = logging.getLogger(__name__)

DECISIONS = _network.ADDRESS_DECISIONS
"""The lock placements and releases are decided under (``Store.decision_lock``)."""


class Planner:
    """``inventory_changes`` reads the hypervisors and answers what brings the store up to
    them (``services.planner.inventory.sync_changes``).

    Placements and releases take turns, each turn until its outcome is committed (the
    ``DECISIONS`` lock, held by the dispatcher, which the gateway's network changes take
    too): decisions made at once would read the same host and network versions (every
    deploy on a network takes an address from its stream), and all but one would conflict
    and run again after a pause. A turn decides every placement waiting (``place_all``),
    each against what the ones before it decided. One copy of the planner handles them
    (the others stand by: ``services.planner.__main__``), so a turn is not handed from
    copy to copy with the few placements each holds. The expected versions stay the
    guard."""

    def __init__(self, store: Store,
                 inventory_changes: Callable[[], Awaitable[Synced]]) -> None:
        self.store = store
        self.repo = Repository(store)
        # Read at each batch of placements and at each release, under the DECISIONS lock.
        self.networks = HeldNetworks(store)
        self.inventory_changes = inventory_changes

    def handlers(self) -> Handlers:
        return (Handlers()
                .on_many(VmDeployRequested, self.place_all, serial=DECISIONS)
                .on(VmDeployFailed, self.release, serial=DECISIONS)
                .on(VmExpunged, self.release, serial=DECISIONS)
                .on(InventorySyncRequested, self.sync))

    async def place_all(self, requests: Sequence[tuple[VmDeployRequested, EventEnvelope]]
                        ) -> list[Decided]:
        """Place each requested VM, in order, each as if those before it were committed
        (``Handlers.on_many``): what they share is read once (``Outlook``), and each
        placement moves it on."""
        outlook = await self.outlook([request for request, _ in requests])
        read = outlook.copy()
        out: list[Decided] = []
        for request, envelope in requests:
            with correlation(envelope.metadata.correlation_id):
                try:
                    out.append(self.place(request, envelope, outlook, read))
                except Exception as exc:
                    out.append(exc)
        return out

    async def outlook(self, requests: Sequence[VmDeployRequested]) -> Outlook:
        """What ``requests`` are decided against, read at once: every host's capacity,
        the seed of each snapshot or template they deploy from, and each network they
        name (as this planner holds it, brought up to date: ``HeldNetworks``). A read that
        fails is kept for the placements it concerns alone."""
        snapshots = {streams.seed(r.vm_snapshot_id, r.pool_id): (r.vm_snapshot_id, r.pool_id)
                     for r in requests if r.vm_snapshot_id is not None}
        templates = {r.template_id for r in requests
                     if r.vm_snapshot_id is None and r.template_id is not None}
        network_ids = dict.fromkeys(n for r in requests for n in r.network_ids)
        # The hosts, the seeds' streams and what the networks held have had appended since:
        # one query. (A network not held yet, and a template's seed, are read beside it.)
        unread = self.networks.unread(network_ids)
        (hosts, read), of_templates, first_read = await asyncio.gather(
            self.store.placement_reads({**dict.fromkeys(snapshots, 1), **unread}),
            _each(templates, self.template_seed),
            _each((n for n in network_ids if streams.network(n) not in unread),
                  self.networks.network))
        seeds: dict[str, seed.Seed | Exception] = {
            stream: _folded(seed.fold, [e.event() for e in read[stream]])
            for stream in snapshots}
        networks = {n: first_read[n] if n in first_read else
                    _folded(self.networks.moved_on, n, read[streams.network(n)])
                    for n in network_ids}
        outlook = Outlook({h.id: h for h in hosts}, seeds, {}, networks)
        for template_id, found in of_templates.items():
            if isinstance(found, tuple):
                stream, state = found
                outlook.seeds.setdefault(stream, state)
                outlook.templates[template_id] = stream
            else:
                outlook.templates[template_id] = found
        return outlook

    async def template_seed(self, template_id: str) -> tuple[str, seed.Seed] | None:
        """The seed stream a template was seeded by, and the seed (None if none was)."""
        found = await self.store.template_seed(template_id)
        return None if found is None else (streams.seed(*found), await self.repo.seed(*found))

    def place(self, request: VmDeployRequested, envelope: EventEnvelope,
              outlook: Outlook, read: Outlook | None = None) -> Sequence[Append]:
        """One placement against ``outlook``, which it moves on. Each refusal counts in
        this order: the source, then the capacity, then the addresses.

        A refusal has no version to check: one that only the batch's earlier placements
        cause (the outlook as ``read``, before them, has room) is not recorded, since
        they may yet fail to commit; it is decided again once they are.

        Raises:
            Undecided: refused only for what the batch's earlier placements took.
        """
        try:
            source: list[Append] | Exception = self.source(request, outlook)
        except (seed.TemplateGone, ApiError) as exc:
            source = exc
        for network_id in request.network_ids:
            found = outlook.networks[network_id]
            if isinstance(found, Exception) and not isinstance(found, ApiError):
                raise found
        if isinstance(source, Exception):
            log.warning("VM %s not placed: %s", request.vm_id, source)
            return [Append(envelope.stream_id, vm.deploy_failure(request, "seed", str(source)))]
        decision = capacity.place(request, list(outlook.hosts.values()))
        if isinstance(decision, capacity.Refusal):
            if read is not None and outlook.moved and isinstance(
                    capacity.place(request, list(read.hosts.values())), capacity.Placement):
                raise Undecided(request.vm_id, "host")
            log.warning("no host for VM %s: %s", request.vm_id, decision.reason)
            return [Append(envelope.stream_id, decision.vm_events)]
        try:
            addresses = self.addresses(request, outlook)
        except ApiError as exc:
            if read is not None and outlook.moved and _allocates(request, read):
                raise Undecided(request.vm_id, "addresses") from exc
            log.warning("no address for VM %s: %s", request.vm_id, exc.text)
            return [Append(envelope.stream_id,
                           vm.deploy_failure(request, "allocate", exc.text, exc.code))]
        log.info("placing VM %s on host %s (pool %s)", request.vm_id, decision.host.name,
                 request.pool_id)
        for allocated in (e for a in addresses for e in a.events
                          if isinstance(e, AddressesAllocated)):
            log.info("VM %s gets %s on network %s", request.vm_id,
                     ", ".join(allocated.addresses), allocated.network_id)
        outlook.placed(decision, [*addresses, *source])
        # At the host stream's version the capacity was read at (or this batch's earlier
        # placements left): a concurrent placement on the same host makes this append fail
        # and the decision run again; the same for the addresses at each network's
        # version, and for the source at the seed's. The VM's own events (its placement,
        # and its source when that is ready) are one append: one less in the commit.
        own = [e for a in source if a.stream_id == envelope.stream_id for e in a.events]
        return [Append(envelope.stream_id, [*decision.vm_events, *own]),
                Append(streams.host(decision.host.id), [decision.reservation],
                       decision.host_version),
                *addresses,
                *(a for a in source if a.stream_id != envelope.stream_id)]

    def source(self, request: VmDeployRequested, outlook: Outlook) -> list[Append]:
        """The VM's source, decided in its placement's commit: the snapshot's seed on the
        pool, ready, being made or to be started (``shared.domain.seed.at_placement``), or
        the seeded template it names (``seed.of_template``).

        Raises:
            seed.TemplateGone: the template it names no longer exists.
        """
        if request.vm_snapshot_id is not None:
            state = _found(outlook.seeds[streams.seed(request.vm_snapshot_id,
                                                      request.pool_id)])
            decided = seed.at_placement(state, request.vm_id, request.vm_snapshot_id,
                                        request.pool_id)
            log.info("VM %s deploys from the seed of snapshot %s on pool %s (%s)",
                     request.vm_id, request.vm_snapshot_id, request.pool_id, state.status)
            return decided
        stream = _found(outlook.templates.get(request.template_id)) \
            if request.template_id else None
        state = _found(outlook.seeds[stream]) if stream else seed.Seed()
        return seed.of_template(state, request.vm_id, request.template_id, stream)

    @staticmethod
    def addresses(request: VmDeployRequested, outlook: Outlook) -> list[Append]:
        """An address for each of the VM's NICs, from each network's range
        (``shared.domain.network.allocate``), appended at the network's version.

        Raises:
            ApiError: a network has too few free addresses, or is not known.
        """
        out = []
        for network_id in dict.fromkeys(request.network_ids):
            network = _found(outlook.networks[network_id])
            allocated = _network.allocate(network, request.vm_id,
                                          request.network_ids.count(network_id))
            if allocated is not None:
                out.append(Append(streams.network(network_id), [allocated],
                                  network.version))
        return out

    async def release(self, event: VmDeployFailed | VmExpunged,
                      envelope: EventEnvelope) -> Sequence[Append]:
        """The capacity and the addresses a VM held are free again."""
        history = await self.repo.events(streams.vm(event.vm_id))
        out = []
        request = history[0] if history and isinstance(history[0], VmDeployRequested) else None
        for network_id in dict.fromkeys(request.network_ids if request else []):
            network = await self.networks.network(network_id)
            freed = _network.release(network, event.vm_id)
            if freed is not None:
                log.info("releasing the addresses of VM %s on network %s", event.vm_id,
                         network_id)
                out.append(Append(streams.network(network_id), [freed], network.version))
        placed = capacity.last_placement(history)
        if placed is None:
            return out
        stream = streams.host(placed.host_id)
        host = await self.repo.host(placed.host_id)
        released = capacity.release(host, event.vm_id)
        if released:
            log.info("releasing the capacity of VM %s on host %s", event.vm_id, placed.host_id)
            # At the version read: a second release racing this one conflicts and finds none.
            out.append(Append(stream, released, host.version))
        return out

    async def sync(self, request: InventorySyncRequested,
                   envelope: EventEnvelope) -> Sequence[Append]:
        synced = await self.inventory_changes()
        if synced.unread:
            # The others' changes are recorded; the job says which did not answer.
            log.warning("inventory sync: %s; %s: their zones were left as they were",
                        describe(synced.appends), synced.unread)
            done = JobCompleted(job_id=request.job_id, succeeded=False,
                                error_code=RESOURCE_UNAVAILABLE,
                                error_text=f"{synced.unread}: the zones it held were left as "
                                f"they were; the other hypervisors were synced "
                                f"({describe(synced.appends)})")
        else:
            log.info("inventory sync: %s", describe(synced.appends))
            done = JobCompleted(job_id=request.job_id, succeeded=True)
        return [*synced.appends, Append(envelope.stream_id, [done])]


T = TypeVar("T")
K = TypeVar("K")


@dataclass
class Outlook:
    """What a batch of placements is decided against: the hosts, the seeds (by stream) and
    the networks as read at its start, each moved on by the placements decided so far in
    the batch (committed with them, after); a read that failed is kept in its place."""

    hosts: dict[str, HostView]
    seeds: dict[str, seed.Seed | Exception]
    templates: dict[str, str | Exception | None]  # template id -> its seed stream
    networks: dict[str, _network.Network | Exception]
    moved: bool = False  # by a placement of the batch

    def copy(self) -> Outlook:
        """This outlook as it is now (its values are replaced, never changed in place)."""
        return Outlook(dict(self.hosts), dict(self.seeds), dict(self.templates),
                       dict(self.networks), self.moved)

    def placed(self, decision: capacity.Placement, appends: Sequence[Append]) -> None:
        """Move the outlook on by a placement: its host's reservation, and the seed and
        network streams of ``appends``."""
        self.moved = True
        host, reserved = decision.host, decision.reservation
        self.hosts[host.id] = replace(
            host, reserved_cpu_mhz=host.reserved_cpu_mhz + reserved.cpu_mhz,
            reserved_memory_mb=host.reserved_memory_mb + reserved.memory_mb,
            version=host.version + 1)
        for append in appends:
            state = self.seeds.get(append.stream_id)
            if isinstance(state, seed.Seed) and append.events:
                self.seeds[append.stream_id] = seed.fold(append.events, state)
            for event in append.events:
                if isinstance(event, AddressesAllocated):
                    network = _found(self.networks[event.network_id])
                    self.networks[event.network_id] = _network.fold(event.network_id,
                                                                    [event], network)


class Undecided(ConcurrencyError):
    """A placement refused only for what placements of its batch took, which may yet fail
    to commit: decided again, as after a conflict, once they are."""

    def __init__(self, vm_id: str, refused: str) -> None:
        super().__init__(streams.vm(vm_id), 0, 0)
        self.args = (f"VM {vm_id}: no room ({refused}) once the placements decided with it "
                     "are counted, room without them; deciding again once they are committed",)


def _allocates(request: VmDeployRequested, read: Outlook) -> bool:
    """Whether the networks as ``read`` have an address for each of the request's NICs."""
    try:
        Planner.addresses(request, read)
    except ApiError:
        return False
    return True


def _found(read: T | Exception) -> T:
    """What a read found, or the error it met, raised."""
    if isinstance(read, Exception):
        raise read
    return read


def _folded(fold: Callable[..., T], *args: Any) -> T | Exception:
    """``fold(*args)``, or its error in its place (kept for the placements it concerns)."""
    try:
        return fold(*args)
    except Exception as exc:
        return exc


async def _each(keys: Iterable[K], read: Callable[[K], Awaitable[T]]) -> dict[K, T | Exception]:
    """``read`` of each key, at once; a read's error in its place."""
    keys = list(keys)
    found = await asyncio.gather(*(read(k) for k in keys), return_exceptions=True)
    for value in found:
        if isinstance(value, BaseException) and not isinstance(value, Exception):
            raise value
    return dict(zip(keys, found, strict=True))  # type: ignore[arg-type]
