"""The service and disk offerings a fresh installation starts with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto import streams
from proto.events import AnyEvent, DiskOfferingCreated, Event, ServiceOfferingCreated
from proto.streams import stable_id
from shared.domain import created
from shared.domain.deploy import OfferingView


def defaults() -> list[tuple[str, Event]]:
    """(stream id, event) for each default offering; their ids are the same everywhere."""
    service = [
        ("Small Instance", 1, 500, 512),
        ("Medium Instance", 1, 1000, 1024),
        ("Large Instance", 2, 1000, 2048),
        ("XLarge Instance", 4, 1000, 4096),
    ]
    disk = [("Small", 5), ("Medium", 20), ("Large", 100)]
    out: list[tuple[str, Event]] = []
    for name, cpus, speed, memory in service:
        offering_id = stable_id("serviceoffering", name)
        out.append((streams.service_offering(offering_id), ServiceOfferingCreated(
            offering_id=offering_id, name=name,
            display_text=f"{name}, {cpus} CPU x {speed / 1000:.1f} GHz, {memory} MB",
            cpu_number=cpus, cpu_speed=speed, memory_mb=memory)))
    for name, size in disk:
        offering_id = stable_id("diskoffering", name)
        out.append((streams.disk_offering(offering_id), DiskOfferingCreated(
            offering_id=offering_id, name=name, display_text=f"{name} disk, {size} GB",
            disk_size_gb=size)))
    return out


def service_offering(events: Iterable[AnyEvent]) -> OfferingView | None:
    """A service offering as its stream tells it (None if it was never created)."""
    event = created(events, ServiceOfferingCreated)
    return None if event is None else OfferingView(
        event.offering_id, event.name, event.cpu_number, event.cpu_speed, event.memory_mb)


@dataclass(frozen=True)
class DiskOfferingView:
    id: str
    name: str
    disk_size_gb: int


def disk_offering(events: Iterable[AnyEvent]) -> DiskOfferingView | None:
    """A disk offering as its stream tells it (None if it was never created)."""
    event = created(events, DiskOfferingCreated)
    return None if event is None else DiskOfferingView(event.offering_id, event.name,
                                                       event.disk_size_gb)
