"""The service and disk offerings a fresh installation starts with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto import streams
from proto.events import (
    AnyEvent,
    DiskOfferingCreated,
    DiskOfferingDeleted,
    Event,
    ServiceOfferingCreated,
    ServiceOfferingDeleted,
)
from proto.streams import stable_id
from shared.domain import created
from shared.domain.deploy import OfferingView
from shared.errors import PARAM_ERROR, ApiError


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
    """A service offering as its stream tells it (None if it was never created, or was
    deleted: a VM that has it keeps its CPUs and memory, recorded with the VM)."""
    history = list(events)
    event = created(history, ServiceOfferingCreated)
    if created(history, ServiceOfferingDeleted) is not None:
        return None
    return None if event is None else OfferingView(
        event.offering_id, event.name, event.cpu_number, event.cpu_speed, event.memory_mb)


@dataclass(frozen=True)
class DiskOfferingView:
    id: str
    name: str
    disk_size_gb: int


def disk_offering(events: Iterable[AnyEvent]) -> DiskOfferingView | None:
    """A disk offering as its stream tells it (None if it was never created, or was
    deleted: volumes that have it keep their size)."""
    history = list(events)
    event = created(history, DiskOfferingCreated)
    if created(history, DiskOfferingDeleted) is not None:
        return None
    return None if event is None else DiskOfferingView(event.offering_id, event.name,
                                                       event.disk_size_gb)


def check_delete_service(offering_id: str,
                         events: Iterable[AnyEvent]) -> ServiceOfferingDeleted:
    """deleteServiceOffering's rule: an offering that exists and is not deleted yet is
    removed from the list; VMs that have it keep it (as in CloudStack).

    Raises:
        ApiError: 431 naming ``id``.
    """
    if service_offering(events) is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no service offering "
                       f"{offering_id} exists")
    return ServiceOfferingDeleted(offering_id=offering_id)


def check_delete_disk(offering_id: str, events: Iterable[AnyEvent]) -> DiskOfferingDeleted:
    """deleteDiskOffering's rule, as ``check_delete_service``'s.

    Raises:
        ApiError: 431 naming ``id``.
    """
    if disk_offering(events) is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no disk offering {offering_id} "
                       "exists")
    return DiskOfferingDeleted(offering_id=offering_id)
