"""The planner's handlers: place requested VMs, release capacity, sync the inventory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

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
from services.planner.inventory import describe
from shared.bus import Handlers
from shared.domain import capacity, seed, vm
from shared.domain import network as _network
from shared.errors import ApiError
from shared.eventstore import Append, HeldNetworks, Repository, Store

log = logging.getLogger(__name__)

DECISIONS = "planner"
"""The lock placements and releases are decided under (``Store.decision_lock``)."""


class Planner:
    """``inventory_changes`` reads the hypervisor and answers the appends that bring the
    store up to it (``services.planner.inventory.changes``).

    Placements and releases are decided one at a time, among every copy of the planner,
    each until its outcome is committed (the ``DECISIONS`` lock, held by the dispatcher):
    those decided at once would read the same host and network versions (every deploy on
    a network takes an address from its stream), and all but one would conflict and run
    again after a pause. The expected versions stay the guard."""

    def __init__(self, store: Store,
                 inventory_changes: Callable[[], Awaitable[list[Append]]]) -> None:
        self.store = store
        self.repo = Repository(store)
        # Read at each placement and release, under the DECISIONS lock.
        self.networks = HeldNetworks(store)
        self.inventory_changes = inventory_changes

    def handlers(self) -> Handlers:
        return (Handlers()
                .on(VmDeployRequested, self.place, serial=DECISIONS)
                .on(VmDeployFailed, self.release, serial=DECISIONS)
                .on(VmExpunged, self.release, serial=DECISIONS)
                .on(InventorySyncRequested, self.sync))

    async def place(self, request: VmDeployRequested,
                    envelope: EventEnvelope) -> Sequence[Append]:
        # What the decision reads, read at once; each read's refusal counts in this order:
        # the source, then the capacity, then the addresses.
        source, hosts, addresses = await asyncio.gather(
            self.source(request), self.store.hosts(), self.addresses(request),
            return_exceptions=True)
        for found in (source, hosts, addresses):
            if isinstance(found, BaseException) \
                    and not isinstance(found, seed.TemplateGone | ApiError):
                raise found
        if isinstance(source, BaseException):
            log.warning("VM %s not placed: %s", request.vm_id, source)
            return [Append(envelope.stream_id, vm.deploy_failure(request, "seed", str(source)))]
        assert not isinstance(hosts, BaseException)
        decision = capacity.place(request, hosts)
        if isinstance(decision, capacity.Refusal):
            log.warning("no host for VM %s: %s", request.vm_id, decision.reason)
            return [Append(envelope.stream_id, decision.vm_events)]
        if isinstance(addresses, ApiError):
            log.warning("no address for VM %s: %s", request.vm_id, addresses.text)
            return [Append(envelope.stream_id,
                           vm.deploy_failure(request, "allocate", addresses.text,
                                             addresses.code))]
        assert not isinstance(addresses, BaseException)
        log.info("placing VM %s on host %s (pool %s)", request.vm_id, decision.host.name,
                 request.pool_id)
        for allocated in (e for a in addresses for e in a.events
                          if isinstance(e, AddressesAllocated)):
            log.info("VM %s gets %s on network %s", request.vm_id,
                     ", ".join(allocated.addresses), allocated.network_id)
        # At the host stream's version the capacity was read at: a concurrent placement on
        # the same host makes this append fail and the decision run again; the same for the
        # addresses at each network's version, and for the source at the seed's.
        return [Append(envelope.stream_id, decision.vm_events),
                Append(streams.host(decision.host.id), [decision.reservation],
                       decision.host_version),
                *addresses,
                *source]

    async def source(self, request: VmDeployRequested) -> list[Append]:
        """The VM's source, decided in its placement's commit: the snapshot's seed on the
        pool, ready, being made or to be started (``shared.domain.seed.at_placement``), or
        the seeded template it names (``seed.of_template``).

        Raises:
            seed.TemplateGone: the template it names no longer exists.
        """
        if request.vm_snapshot_id is not None:
            state = await self.repo.seed(request.vm_snapshot_id, request.pool_id)
            decided = seed.at_placement(state, request.vm_id, request.vm_snapshot_id,
                                        request.pool_id)
            log.info("VM %s deploys from the seed of snapshot %s on pool %s (%s)",
                     request.vm_id, request.vm_snapshot_id, request.pool_id, state.status)
            return decided
        found = await self.store.template_seed(request.template_id) \
            if request.template_id else None
        state = await self.repo.seed(*found) if found else seed.Seed()
        return seed.of_template(state, request.vm_id, request.template_id,
                                streams.seed(*found) if found else None)

    async def addresses(self, request: VmDeployRequested) -> list[Append]:
        """An address for each of the VM's NICs, from each network's range
        (``shared.domain.network.allocate``) as this planner holds it (``HeldNetworks``:
        brought up to date from the events appended to its stream since its last read),
        appended at the version read."""
        out = []
        for network_id in dict.fromkeys(request.network_ids):
            network = await self.networks.network(network_id)
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
        appends = await self.inventory_changes()
        log.info("inventory sync: %s", describe(appends))
        done = JobCompleted(job_id=request.job_id, succeeded=True)
        return [*appends, Append(envelope.stream_id, [done])]
