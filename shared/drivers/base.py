"""What snapdeploy needs from a hypervisor, in its own terms: pools, hosts, snapshots,
templates and clones. Object handles (``ref``) are the hypervisor's own ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class HypervisorError(Exception):
    """A hypervisor call failed; the message says which call, on what, and why."""

    def __init__(self, text: str, *, task_id: str | None = None, transient: bool = False,
                 fault: str | None = None):
        super().__init__(text)
        self.task_id = task_id
        self.transient = transient
        self.fault = fault  # the hypervisor's own name for the fault, e.g. "DuplicateName"


@dataclass(frozen=True)
class DiskInfo:
    device_key: int
    path: str
    pool_ref: str
    size_bytes: int


@dataclass(frozen=True)
class NicInfo:
    device_key: int
    network_ref: str
    mac: str


@dataclass(frozen=True)
class SnapshotInfo:
    ref: str
    name: str
    description: str
    created: datetime
    memory: bool
    parent_ref: str | None
    cpu_number: int
    memory_mb: int
    disks: list[DiskInfo]
    nics: list[NicInfo]


@dataclass(frozen=True)
class VmInfo:
    ref: str
    name: str
    uuid: str
    template: bool
    host_ref: str | None
    cpu_number: int
    memory_mb: int
    powered_on: bool
    disks: list[DiskInfo]
    nics: list[NicInfo]
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    current_snapshot_ref: str | None = None


@dataclass(frozen=True)
class HostInfo:
    ref: str
    name: str
    cluster: str
    cpu_cores: int
    cpu_mhz: int
    memory_bytes: int
    pool_refs: list[str]


@dataclass(frozen=True)
class PoolInfo:
    ref: str
    name: str
    url: str
    capacity_bytes: int
    free_bytes: int
    host_refs: list[str]


@dataclass(frozen=True)
class NetworkInfo:
    ref: str
    name: str
    switch_uuid: str | None
    portgroup_key: str | None


@dataclass(frozen=True)
class Inventory:
    """One datacenter and what is in it."""

    datacenter_ref: str
    datacenter_name: str
    hosts: list[HostInfo]
    pools: list[PoolInfo]
    networks: list[NetworkInfo]
    vms: list[VmInfo]


@dataclass(frozen=True)
class Seeded:
    template_ref: str
    base_snapshot_ref: str
    install_path: str
    task_ids: list[str]


@dataclass(frozen=True)
class NetworkBinding:
    """A network to attach, as the hypervisor names it."""

    ref: str
    name: str
    switch_uuid: str | None = None
    portgroup_key: str | None = None


@dataclass(frozen=True)
class CloneRequest:
    name: str
    template_ref: str
    base_snapshot_ref: str | None
    host_ref: str
    pool_ref: str
    linked: bool
    cpu_number: int
    cpu_mhz: int
    memory_mb: int
    networks: list[NetworkBinding]


@dataclass
class CloneProgress:
    """What a clone has done so far, so a failure can say which step and clean up."""

    vm_ref: str | None = None
    clone_task: str | None = None
    reconfigure_task: str | None = None
    power_on_task: str | None = None
    nics: list[NicInfo] = field(default_factory=list)
    root_disk: DiskInfo | None = None


class Hypervisor(Protocol):
    async def inventory(self) -> list[Inventory]:
        """What vCenter holds, one inventory per datacenter (a CloudStack zone each)."""

    async def seed_template(self, vm_ref: str, snapshot_ref: str, pool_ref: str,
                            name: str) -> Seeded: ...

    async def clone(self, request: CloneRequest, progress: CloneProgress) -> None: ...

    async def find_vm(self, name: str) -> str | None: ...

    async def destroy_vm(self, ref: str) -> str | None: ...

    async def power_off(self, ref: str) -> str | None: ...

    async def create_snapshot(self, vm_ref: str, name: str, description: str, memory: bool,
                              quiesce: bool) -> tuple[str, str]: ...

    async def snapshot_info(self, vm_ref: str, snapshot_ref: str) -> SnapshotInfo: ...

    async def remove_snapshot(self, snapshot_ref: str) -> str: ...

    async def revert_snapshot(self, snapshot_ref: str) -> str: ...

    async def vm_powered_on(self, vm_ref: str) -> bool: ...

    async def power_on(self, ref: str) -> str | None: ...

    async def reboot(self, ref: str) -> str: ...

    async def copy_disk(self, source_path: str, dest_path: str, pool_ref: str) -> str:
        """Copy a disk file to ``dest_path``, both on the pool ``pool_ref``: the task id."""

    async def attach_disk(self, vm_ref: str, path: str, *,
                          create_bytes: int | None = None) -> tuple[int, str | None]:
        """Attach the disk at ``path`` (made new, of ``create_bytes``, if given): its device
        key and task id (None if it was attached already)."""

    async def delete_disk(self, path: str, pool_ref: str) -> str | None:
        """Delete the disk file at ``path``: the task id (None if it was gone already)."""

    async def detach_disk(self, vm_ref: str, path: str, *,
                          missing_ok: bool = False) -> str | None:
        """Detach the disk at ``path``, keeping its file; the task id. With ``missing_ok``,
        a disk not attached (any more) is None instead of an error."""

    async def resize_disk(self, vm_ref: str | None, path: str, size_bytes: int,
                          pool_ref: str) -> str:
        """Grow the disk at ``path`` on ``pool_ref`` (through ``vm_ref`` if attached)."""
