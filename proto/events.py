"""Domain events: the facts snapdeploy records in its event store.

Every event is a tagged ``msgspec.Struct``; the tag (the class name) is the event type
stored beside the payload and used in NATS subjects. ``SCHEMA`` is the payload's schema
version; bump it when a field changes meaning and keep decoders for the old one.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class Event(msgspec.Struct, tag=True):
    """Base of every event payload.

    An event that settles an asynchronous job carries its ``job_id``.
    """

    SCHEMA: ClassVar[int] = 1


# ---- virtual machines (stream ``vm-<vm id>``) -------------------------------------------


class VmDeployRequested(Event):
    """A user asked for a VM; the VM exists in state Starting and its job is pending."""

    vm_id: str
    job_id: str
    account_id: str
    user_id: str
    name: str
    display_name: str
    instance_name: str
    zone_id: str
    service_offering_id: str
    vm_snapshot_id: str | None = None
    template_id: str | None = None
    network_ids: list[str] = []
    host_id: str | None = None


class VmPlaced(Event):
    """The planner chose a host and reserved its capacity; the root volume's pool is fixed."""

    vm_id: str
    host_id: str
    pool_id: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int


class VmStarted(Event):
    """The VM exists on the hypervisor and is powered on."""

    vm_id: str
    host_id: str
    hypervisor_ref: str
    task_ids: list[str] = []
    job_id: str | None = None


class VmDeployFailed(Event):
    """The deploy failed at ``step``; whatever it had created has been removed."""

    vm_id: str
    step: str
    reason: str
    error_code: int = 530
    job_id: str | None = None


class VmStopped(Event):
    vm_id: str


class VmDestroyed(Event):
    vm_id: str


class VmExpunged(Event):
    vm_id: str


# ---- templates seeded from VM snapshots (stream ``spoolref-<snapshot>-<pool>``) ----------


class TemplateSeedStarted(Event):
    """A VM snapshot's root disk is being copied into a template on its pool."""

    vm_snapshot_id: str
    pool_id: str


class TemplateSeeded(Event):
    """The seeded template is ready for linked clones."""

    vm_snapshot_id: str
    pool_id: str
    template_id: str
    install_path: str


class TemplateSeedFailed(Event):
    vm_snapshot_id: str
    pool_id: str
    reason: str


class TemplateRemoved(Event):
    """The seeded template was removed from its pool: no VM depends on it any more."""

    vm_snapshot_id: str
    pool_id: str


AnyEvent = (
    VmDeployRequested
    | VmPlaced
    | VmStarted
    | VmDeployFailed
    | VmStopped
    | VmDestroyed
    | VmExpunged
    | TemplateSeedStarted
    | TemplateSeeded
    | TemplateSeedFailed
    | TemplateRemoved
)

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in AnyEvent.__args__}
