"""The read side's typed views: what a query answers, and who asks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from shared.domain.access import visible_to
from shared.domain.job import JobStatus

T = TypeVar("T")


class Viewer(msgspec.Struct, frozen=True):
    """Who is asking: an account, and whether it administers the cloud (sees everything)."""

    account_id: str
    is_admin: bool

    def sees(self, owner: str | None) -> bool:
        return visible_to(owner, self.account_id, self.is_admin)


class Paging(msgspec.Struct, frozen=True):
    """Which slice of a list to answer: at most ``limit`` items after the first ``offset``."""

    limit: int
    offset: int = 0


class Page(msgspec.Struct, Generic[T], frozen=True):
    """A slice of a list, and how many items the whole list holds."""

    items: list[T]
    total: int





class Nic(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    network_id: str
    mac: str
    # The guest address its network gave it, with that range's CIDR and gateway (None: none
    # allocated, e.g. an imported VM's NIC).
    ip_address: str | None = None
    cidr: str | None = None
    gateway: str | None = None


class Vm(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    user_id: str | None
    name: str
    display_name: str
    instance_name: str
    zone_id: str
    service_offering_id: str | None
    template_id: str | None
    vm_snapshot_id: str | None
    host_id: str | None
    pool_id: str | None
    cpu_number: int
    cpu_speed: int | None
    memory_mb: int
    state: str
    error_text: str | None
    current_snapshot_id: str | None
    imported: bool
    created: datetime
    nics: list[Nic]
    # The driver kind recorded with the VM's zone (``ZoneImported.driver_kind``; None: not
    # recorded, a vCenter datacenter).
    zone_kind: str | None = None


class Zone(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created: datetime
    # The driver kind of the hypervisor that holds the zone, as its import recorded it
    # (None: not recorded, a vCenter datacenter); the same on each object in the zone.
    zone_kind: str | None = None


class Host(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    zone_id: str | None
    state: str
    cluster: str
    cpu_cores: int
    cpu_mhz: int
    memory_bytes: int
    reserved_cpu_mhz: int
    reserved_memory_mb: int
    pool_ids: list[str]
    created: datetime
    zone_kind: str | None = None  # the driver kind of its zone (see Zone)


class Pool(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    zone_id: str | None
    state: str
    url: str
    capacity_bytes: int
    free_bytes: int
    host_ids: list[str]
    settings: dict[str, str]
    created: datetime
    zone_kind: str | None = None  # the driver kind of its zone (see Zone)


class Network(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    zone_id: str | None
    state: str
    ref: str
    binding: str | None  # the driver's, as its inventory reported it (``NetworkInfo``)
    created: datetime
    zone_kind: str | None = None  # the driver kind of its zone (see Zone)
    # The range guest addresses come from (set by updateNetwork; None: the default one,
    # ``shared.domain.network.default_range``).
    cidr: str | None = None
    gateway: str | None = None


class ServiceOffering(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    display_text: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int
    created: datetime


class DiskOffering(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    display_text: str
    disk_size_gb: int
    created: datetime


class Template(msgspec.Struct, frozen=True, kw_only=True):
    """A seeded template. It belongs to the owner of the VM snapshot it was seeded from
    (None when that is not known) and lies in the zone of its pool."""

    id: str
    name: str
    account_id: str | None
    zone_id: str | None
    vm_snapshot_id: str
    pool_id: str
    install_path: str
    created: datetime
    zone_kind: str | None = None  # the driver kind of its zone (see Zone)


class SnapshotDisk(msgspec.Struct, frozen=True, kw_only=True):
    volume_id: str
    path: str
    pool_id: str
    size_bytes: int
    root: bool


class VmSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    account_id: str | None
    vm_id: str
    description: str
    parent_id: str | None
    memory: bool
    state: str
    cpu_number: int
    memory_mb: int
    disks: list[SnapshotDisk]
    network_ids: list[str]
    current: bool  # the VM's current snapshot (the one a revert or a new child starts from)
    created: datetime


class Volume(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    account_id: str | None
    zone_id: str | None
    volume_type: str  # ROOT or DATADISK
    size_bytes: int
    pool_id: str | None
    path: str | None
    vm_id: str | None
    template_id: str | None
    disk_offering_id: str | None
    state: str
    created: datetime


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    account_id: str
    email: str
    firstname: str
    lastname: str
    state: str
    created: datetime


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    state: str
    role: str  # "admin" or "user"
    limits: dict[str, int]  # the limits set for it; others take CloudStack's defaults
    users: list[User]
    created: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    user_id: str
    cmd: str
    instance_type: str
    instance_id: str
    status: JobStatus
    result_code: int
    error_code: int | None
    error_text: str | None
    created: datetime
    completed: datetime | None


class JobWithResult(msgspec.Struct, frozen=True, kw_only=True):
    """A job as its stream tells it, with what it made or changed once it succeeded (None
    while it runs, after a failure, or for a command without such an object)."""

    job: Job
    result: Vm | Volume | VmSnapshot | None
    position: int  # the global position of the last event of the job's stream


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded event as the audit trail shows it."""

    id: str
    position: int
    type: str
    data: dict[str, Any]
    actor: str | None  # who appended it: a user (account/user) or a service
    # The actor of the request whose work it is (None: not begun by a request).
    origin_actor: str | None = None
    account_id: str | None
    causation_id: str | None
    correlation_id: str | None = None
    # The first event the request that began its work appended (None: none is shown).
    parent_id: str | None = None
    recorded_at: datetime
