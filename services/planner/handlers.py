"""The planner's handlers: place requested VMs, release capacity, sync the inventory."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    CapacityReleased,
    CapacityReserved,
    InventorySyncRequested,
    JobCompleted,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
    VmPlaced,
)
from services.planner.inventory import changes, describe
from shared.bus import Handler
from shared.domain.deploy import Rejected, choose_host
from shared.domain.vm import deploy_failure
from shared.drivers.base import Hypervisor
from shared.eventstore import Append, EventStore
from shared.projections import queries

log = logging.getLogger(__name__)


class Planner:
    def __init__(self, store: EventStore, hypervisor: Hypervisor) -> None:
        self.store = store
        self.hypervisor = hypervisor

    def handlers(self) -> dict[str, Handler]:
        return {
            "VmDeployRequested": self.place,
            "VmDeployFailed": self.release,
            "VmExpunged": self.release,
            "InventorySyncRequested": self.sync,
        }

    async def place(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmDeployRequested)
        cpu_mhz = request.cpu_number * request.cpu_speed
        async with self.store.pool.acquire() as conn:
            hosts = await queries.host_views(conn)
        try:
            host = choose_host(hosts, request.pool_id, cpu_mhz, request.memory_mb,
                               request.host_id, spread_key=request.vm_id)
        except Rejected as rejected:
            log.warning("no host for VM %s: %s", request.vm_id, rejected.text)
            return [Append(envelope.stream_id,
                           deploy_failure(request, "plan", rejected.text, rejected.code))]
        log.info("placing VM %s on host %s (pool %s)", request.vm_id, host.name, request.pool_id)
        # The host's stream version is the one its capacity was read at: a concurrent
        # placement on the same host makes this append fail and the decision run again.
        return [
            Append(envelope.stream_id, [VmPlaced(
                vm_id=request.vm_id, host_id=host.id, pool_id=request.pool_id,
                cpu_number=request.cpu_number, cpu_speed=request.cpu_speed,
                memory_mb=request.memory_mb)]),
            Append(streams.host(host.id), [CapacityReserved(
                host_id=host.id, vm_id=request.vm_id, cpu_mhz=cpu_mhz,
                memory_mb=request.memory_mb)], host.version),
        ]

    async def release(self, envelope: EventEnvelope) -> Sequence[Append]:
        event = envelope.data
        assert isinstance(event, VmDeployFailed | VmExpunged)
        placed = [e for e in await self.store.read_stream(streams.vm(event.vm_id))
                  if e.type == "VmPlaced"]
        if not placed:
            return []
        last = placed[-1].event()
        assert isinstance(last, VmPlaced)
        async with self.store.pool.acquire() as conn:
            held, version = await queries.holds_capacity(conn, last.host_id, event.vm_id)
        if not held:
            return []
        log.info("releasing the capacity of VM %s on host %s", event.vm_id, last.host_id)
        return [Append(streams.host(last.host_id),
                       [CapacityReleased(host_id=last.host_id, vm_id=event.vm_id)], version)]

    async def sync(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, InventorySyncRequested)
        appends = await changes(self.store, self.hypervisor)
        log.info("inventory sync: %s", describe(appends))
        done = JobCompleted(job_id=request.job_id, succeeded=True)
        return [*appends, Append(envelope.stream_id, [done])]
