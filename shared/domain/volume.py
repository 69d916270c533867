"""A volume as its stream ``volume-<id>`` tells it, and the volume service's decisions.

A volume is requested from a VM snapshot's disk, allocated empty, or created with a
deployed VM (its root disk); then attached, detached, resized and deleted. The disks of
an imported VM are volumes too: their stream starts empty, and their state starts from the
VM's import (``imported``), which the store's ``volume_origin`` names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from proto.events import (
    AnyEvent,
    Disk,
    Event,
    JobCompleted,
    VmImported,
    VolumeAllocated,
    VolumeAttached,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
    VolumeResized,
)
from shared.errors import INTERNAL_ERROR, PARAM_ERROR, RESOURCE_IN_USE, ApiError

ROOT, DATADISK = "ROOT", "DATADISK"
# CloudStack's volume states, as snapdeploy's volumes go through them.
ALLOCATED, READY, DESTROY, EXPUNGED, ERROR = "Allocated", "Ready", "Destroy", "Expunged", "Error"
GB = 1024**3


@dataclass(frozen=True)
class Volume:
    id: str
    account_id: str | None = None
    name: str = ""
    volume_type: str = DATADISK
    pool_id: str | None = None
    path: str | None = None  # None until its disk is made (an Allocated volume)
    size_bytes: int = 0
    vm_id: str | None = None  # the VM it is attached to
    key: str | None = None  # the key of its disk on ``vm_id`` (None: detached, or not told)
    disk_offering_id: str | None = None
    known: bool = False  # requested, allocated, created or imported
    deleted: bool = False
    state: str = ""
    version: int = 0

    @property
    def live(self) -> bool:
        return self.known and not self.deleted


def imported(volume_id: str, vm: VmImported) -> Volume:
    """A disk of an imported VM, as its import describes it (an unknown volume if the VM
    has no such disk now)."""
    disk: Disk | None = next((d for d in vm.disks if d.volume_id == volume_id), None)
    if disk is None:
        return Volume(volume_id)
    return Volume(volume_id, account_id=vm.account_id,
                  name=f"{ROOT if disk.root else 'DATA'}-{vm.name}-{disk.disk_key}",
                  volume_type=ROOT if disk.root else DATADISK, pool_id=disk.pool_id,
                  path=disk.path, size_bytes=disk.size_bytes, vm_id=vm.vm_id,
                  key=disk.disk_key, known=True, state=READY)


def _key(key: str | None, device_key: int | None) -> str | None:
    """A disk's key as an event tells it: its ``key``, or vSphere's number in the legacy
    ``device_key`` as text (None if it tells neither)."""
    if key is not None:
        return key
    return None if device_key is None else str(device_key)


def evolve(volume: Volume, event: AnyEvent) -> Volume:
    """The volume after one more event of its stream."""
    volume = replace(volume, version=volume.version + 1)
    match event:
        case VolumeFromSnapshotRequested():
            return replace(volume, account_id=event.account_id, name=event.name,
                           pool_id=event.pool_id, size_bytes=event.size_bytes, known=True,
                           state=ALLOCATED)
        case VolumeAllocated():
            return replace(volume, account_id=event.account_id, name=event.name,
                           size_bytes=event.size_bytes, disk_offering_id=event.disk_offering_id,
                           known=True, state=ALLOCATED)
        case VolumeCreated():
            return replace(volume, account_id=event.account_id, name=event.name,
                           volume_type=event.volume_type, pool_id=event.pool_id,
                           path=event.path, size_bytes=event.size_bytes, vm_id=event.vm_id,
                           key=None if event.vm_id is None else event.disk_key,
                           disk_offering_id=event.disk_offering_id, known=True, state=READY)
        case VolumeDeleteRequested():
            return replace(volume, state=DESTROY)
        case VolumeFailed():
            return replace(volume, state=ERROR)
        case VolumeAttached():
            return replace(volume, vm_id=event.vm_id, key=_key(event.key, event.device_key))
        case VolumeDetached():
            return replace(volume, vm_id=None, key=None)
        case VolumeResized():
            return replace(volume, size_bytes=event.size_bytes)
        case VolumeDeleted():
            return replace(volume, deleted=True, state=EXPUNGED)
    return volume


def fold(volume_id: str, events: Iterable[AnyEvent], start: Volume | None = None) -> Volume:
    """The volume from its stream's events, from ``start`` (an imported disk) if given."""
    volume = start or Volume(volume_id)
    for event in events:
        volume = evolve(volume, event)
    return volume


def attached_keys(vm_id: str, volumes: Iterable[Volume]) -> dict[str, str]:
    """{disk key → volume id} of those of ``volumes`` attached to ``vm_id`` now, with the
    key of their disk known."""
    return {v.key: v.id for v in volumes
            if v.live and v.vm_id == vm_id and v.key is not None}


def failed(volume_id: str, job_id: str, reason: str, *, made: bool = False) -> list[Event]:
    """What a failed volume job records: the volume in Error (unless it was ``made``
    already: a failed attach, detach or resize leaves it as it was) and the job failed."""
    events: list[Event] = [] if made else [VolumeFailed(volume_id=volume_id, reason=reason)]
    return [*events, JobCompleted(job_id=job_id, succeeded=False, error_code=INTERNAL_ERROR,
                                  error_text=reason)]


def check_delete(volume: Volume) -> None:
    """Whether a user may delete the volume: a data volume, detached, Ready, Allocated or
    in Error.

    Raises:
        ApiError: 431 naming ``id`` and why not.
    """
    if volume.volume_type == ROOT:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: volume {volume.id} is a root "
                       "volume; it goes when its VM is expunged")
    if volume.vm_id:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: volume {volume.id} is attached to "
                       f"virtual machine {volume.vm_id}; detach it first")
    if volume.state not in (READY, ALLOCATED, ERROR):
        raise ApiError(PARAM_ERROR, f"invalid parameter id: volume {volume.id} is "
                       f"{volume.state}")


def check_attach(volume: Volume) -> None:
    """Whether the volume may be attached: Ready or Allocated, and detached.

    Raises:
        ApiError: 431 naming ``id``, the volume's state and its VM.
    """
    if volume.state not in (READY, ALLOCATED) or volume.vm_id:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: volume {volume.id} is "
                       f"{volume.state} and attached to {volume.vm_id}; "
                       "only a Ready or Allocated, detached volume can be attached")


def check_detach(volume: Volume) -> str:
    """The VM the volume may be detached from: it must be an attached data volume.

    Raises:
        ApiError: 431 naming ``id``.
    """
    if not volume.vm_id or volume.volume_type == ROOT:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: volume {volume.id} is not an "
                       "attached data volume")
    return volume.vm_id


def check_resize(volume: Volume, size_gb: int) -> None:
    """Whether the volume may grow to ``size_gb``: volumes only grow.

    Raises:
        ApiError: 431 naming ``size``.
    """
    if size_gb * GB <= volume.size_bytes:
        raise ApiError(PARAM_ERROR, f"invalid parameter size: {size_gb} GB does not grow volume "
                       f"{volume.id} ({volume.size_bytes / GB:.1f} GB); volumes only grow")


def check_vm_without_snapshots(vm_id: str, snapshot_count: int, command: str) -> None:
    """Volumes of a VM with VM snapshots are neither attached, detached nor resized (the
    snapshots' disk chains would no longer match the VM), as CloudStack refuses it.

    Raises:
        ApiError: 536 naming the command, the VM and how many snapshots it has.
    """
    if snapshot_count:
        raise ApiError(RESOURCE_IN_USE, f"{command} is refused: virtual machine {vm_id} "
                       f"has {snapshot_count} VM snapshot(s), and volumes of a VM with VM "
                       "snapshots cannot be attached, detached or resized; delete its VM "
                       "snapshots first")
