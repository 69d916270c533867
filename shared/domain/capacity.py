"""A host's capacity: what it has, what is reserved on it, and where a VM goes.

The stream ``host-<id>`` holds the host's facts (HostImported, InventoryObjectGone) and
every reservation on it (CapacityReserved, CapacityReleased). A placement is appended at
the host stream's version its decision read, so two placements on one host never both
count the same free capacity: the later one conflicts and decides again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from proto.events import (
    AnyEvent,
    CapacityReleased,
    CapacityReserved,
    Event,
    HostImported,
    InventoryObjectGone,
    VmDeployRequested,
    VmPlaced,
)
from shared.domain.deploy import HostView, Rejected, choose_host
from shared.domain.vm import deploy_failure


@dataclass(frozen=True)
class Host:
    """One host as its stream tells it."""

    id: str
    name: str = ""
    ref: str = ""  # the hypervisor's id of the host
    zone_id: str = ""
    pool_ids: tuple[str, ...] = ()
    cpu_mhz_total: int = 0
    memory_mb_total: int = 0
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)
    imported: bool = False
    gone: bool = False
    version: int = 0

    def view(self) -> HostView:
        return HostView(
            id=self.id, name=self.name, zone_id=self.zone_id, pool_ids=list(self.pool_ids),
            cpu_mhz_total=self.cpu_mhz_total, memory_mb_total=self.memory_mb_total,
            reserved_cpu_mhz=sum(cpu for cpu, _ in self.reservations.values()),
            reserved_memory_mb=sum(memory for _, memory in self.reservations.values()),
            version=self.version,
        )


def evolve(host: Host, event: AnyEvent) -> Host:
    """The host after one more event of its stream."""
    version = host.version + 1
    match event:
        case HostImported():
            return replace(host, name=event.name, ref=event.ref, zone_id=event.zone_id,
                           pool_ids=tuple(event.pool_ids),
                           cpu_mhz_total=event.cpu_cores * event.cpu_mhz,
                           memory_mb_total=event.memory_bytes // (1024 * 1024),
                           imported=True, gone=False, version=version)
        case InventoryObjectGone():
            return replace(host, gone=True, version=version)
        case CapacityReserved():
            held = {**host.reservations, event.vm_id: (event.cpu_mhz, event.memory_mb)}
            return replace(host, reservations=held, version=version)
        case CapacityReleased():
            held = {k: v for k, v in host.reservations.items() if k != event.vm_id}
            return replace(host, reservations=held, version=version)
    return replace(host, version=version)


def fold(host_id: str, events: Iterable[AnyEvent]) -> Host:
    host = Host(host_id)
    for event in events:
        host = evolve(host, event)
    return host


def placeable(host: Host) -> bool:
    """Whether new VMs may go to the host: imported and not gone."""
    return host.imported and not host.gone


@dataclass(frozen=True)
class Placement:
    """A placement decided: the VM's events, and the reservation to append to the host's
    stream at ``host_version``."""

    host: HostView
    vm_events: list[Event]
    reservation: CapacityReserved
    host_version: int


@dataclass(frozen=True)
class Refusal:
    """No host qualifies: the events that end the deploy in Error."""

    reason: str
    vm_events: list[Event]


def place(request: VmDeployRequested, hosts: list[HostView]) -> Placement | Refusal:
    """Where a requested VM goes (the requested host, if it names one), or why nowhere."""
    cpu_mhz = request.cpu_number * request.cpu_speed
    try:
        host = choose_host(hosts, request.pool_id, cpu_mhz, request.memory_mb,
                           request.host_id, spread_key=request.vm_id)
    except Rejected as rejected:
        return Refusal(rejected.text,
                       deploy_failure(request, "plan", rejected.text, rejected.code))
    placed = VmPlaced(vm_id=request.vm_id, host_id=host.id, pool_id=request.pool_id,
                      cpu_number=request.cpu_number, cpu_speed=request.cpu_speed,
                      memory_mb=request.memory_mb)
    reserved = CapacityReserved(host_id=host.id, vm_id=request.vm_id, cpu_mhz=cpu_mhz,
                                memory_mb=request.memory_mb)
    return Placement(host, [placed], reserved, host.version)


def last_placement(vm_events: Iterable[AnyEvent]) -> VmPlaced | None:
    """Where a VM was placed last (None if it never was)."""
    placed = None
    for event in vm_events:
        if isinstance(event, VmPlaced):
            placed = event
    return placed


def release(host: Host, vm_id: str) -> list[Event]:
    """What frees ``vm_id``'s capacity on ``host``: nothing if it holds none (released
    already, or never reserved)."""
    if vm_id not in host.reservations:
        return []
    return [CapacityReleased(host_id=host.id, vm_id=vm_id)]
