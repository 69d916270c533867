"""Volume commands: createVolume (from a VM snapshot's disk, or empty from a disk offering;
createVolumeFromVmSnapshot is its alias for the first); attach, detach, resize, delete.

Attaching, detaching and resizing are refused for a VM that has VM snapshots, as CloudStack
does (the spec's limitation): the snapshots' disk chains would no longer match the VM.
"""

from __future__ import annotations

import uuid
from typing import Any

from proto import streams
from proto.events import (
    JobCompleted,
    JobSubmitted,
    VolumeAllocated,
    VolumeAttachRequested,
    VolumeDeleteRequested,
    VolumeFromSnapshotRequested,
    VolumeResizeRequested,
)
from services.gateway import schema
from services.gateway.api import OURS, Caller, Context, Param, Params, command
from services.gateway.commands import targets
from services.gateway.commands.limits import within_limits
from shared.domain import volume as _volume
from shared.domain.job import (
    ATTACH_VOLUME_CMD,
    CREATE_VOLUME_CMD,
    DETACH_VOLUME_CMD,
    RESIZE_VOLUME_CMD,
)
from shared.domain.limits import Usage
from shared.domain.volume import (
    GB,
    check_attach,
    check_delete,
    check_detach,
    check_resize,
    check_vm_without_snapshots,
)
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, Repository


def _job(job_id: str, cmd: str, volume_id: str, caller: Caller) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, cmd=cmd, instance_type="Volume", instance_id=volume_id,
                        account_id=caller.account_id, user_id=caller.user_id)


async def refuse_if_vm_has_snapshots(ctx: Context, vm_id: str, command_name: str) -> None:
    check_vm_without_snapshots(vm_id, await targets.vm_snapshot_count(ctx, vm_id), command_name)


_SNAPSHOT_NAME = Param("name", "string", "its name")


@command("createVolume", is_async=True, response=schema.VOLUME,
         description="Creates a volume: a VM snapshot's disk as of the snapshot (vmsnapshotid "
         "with volumeid), or an empty one of a disk offering's size (diskofferingid), "
         "Allocated until first attached.", params=(
             Param("vmsnapshotid", "uuid", "the VM snapshot whose disk to copy", since=OURS,
                   entity=schema.VM_SNAPSHOT),
             Param("volumeid", "uuid", "with vmsnapshotid: the volume of the snapshot's VM "
                   "to copy", since=OURS, entity=schema.VOLUME),
             Param("diskofferingid", "uuid", "an empty volume of this disk offering",
                   entity=schema.DISK_OFFERING),
             Param("zoneid", "uuid", "with diskofferingid: the volume's zone (default: the "
                   "only zone)", entity=schema.ZONE),
             Param("size", "long", "with diskofferingid: its size in GB, which must be the "
                   "offering's", minimum=1),
             Param("snapshotid", "uuid", "refused: snapdeploy has no volume snapshots"),
             _SNAPSHOT_NAME,
         ))
async def create_volume(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    if params.has("snapshotid"):
        raise ApiError(PARAM_ERROR, "invalid parameter snapshotid: snapdeploy has no volume "
                       "snapshots; use vmsnapshotid with volumeid, or diskofferingid")
    from_snapshot = params.has("vmsnapshotid")
    if not from_snapshot and params.has("diskofferingid"):
        return await _allocate(ctx, params, caller)
    if not from_snapshot:
        raise ApiError(PARAM_ERROR, "missing parameter vmsnapshotid or diskofferingid: a volume "
                       "is a disk of a VM snapshot (vmsnapshotid with volumeid) or empty "
                       "(diskofferingid)")
    if params.has("diskofferingid"):
        raise ApiError(PARAM_ERROR, "invalid parameter diskofferingid: vmsnapshotid and "
                       "diskofferingid are mutually exclusive")
    if not params.has("volumeid"):
        raise ApiError(PARAM_ERROR, "missing parameter volumeid: name the volume of the VM "
                       "snapshot's VM to copy")
    return await create_volume_from_vm_snapshot(ctx, params, caller)


@command("createVolumeFromVmSnapshot", is_async=True, response=schema.VOLUME, since=OURS,
         description="An alias of createVolume with vmsnapshotid and volumeid: creates a "
         "volume that is a VM snapshot's disk as of the snapshot.", params=(
             Param("vmsnapshotid", "uuid", "the VM snapshot whose disk to copy", required=True,
                   since=OURS, entity=schema.VM_SNAPSHOT),
             Param("volumeid", "uuid", "the volume of the snapshot's VM to copy",
                   required=True, since=OURS, entity=schema.VOLUME),
             _SNAPSHOT_NAME,
         ))
async def create_volume_from_vm_snapshot(ctx: Context, params: Params,
                                         caller: Caller) -> dict[str, Any]:
    snapshot_id = params.uuid("vmsnapshotid")
    source_id = params.uuid("volumeid")
    assert snapshot_id is not None and source_id is not None
    snapshot = await targets.vm_snapshot(ctx, caller, snapshot_id)
    disk = next((d for d in snapshot.disks if d.volume_id == source_id), None)
    if disk is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter volumeid: volume {source_id} is not a "
                       f"volume of VM {snapshot.vm_id} in VM snapshot {snapshot_id}")
    volume_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = params.text("name") or f"volume-from-{snapshot.name}"[:255]
    async with within_limits(ctx, caller, Usage(volume=1)):
        await ctx.append(caller, Append(streams.volume(volume_id), [
            VolumeFromSnapshotRequested(
                volume_id=volume_id, job_id=job_id, account_id=caller.account_id,
                user_id=caller.user_id, name=name, vm_snapshot_id=snapshot_id,
                source_volume_id=source_id, source_path=disk.path, pool_id=disk.pool_id,
                size_bytes=disk.size_bytes),
            _job(job_id, CREATE_VOLUME_CMD, volume_id, caller),
        ], NO_STREAM))
    return {"id": volume_id, "jobid": job_id}


async def _allocate(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """An empty data volume of a disk offering's size, Allocated until first attached."""
    offering_id = params.uuid("diskofferingid")
    zone_id = params.uuid("zoneid")
    assert offering_id is not None
    repo = Repository(ctx.store)
    offering = await repo.disk_offering(offering_id)
    zones = await repo.zones()
    if offering is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter diskofferingid: no disk offering "
                       f"{offering_id}")
    if zone_id is None and len(zones) == 1:
        zone_id = zones[0]
    if zone_id is None or zone_id not in zones:
        raise ApiError(PARAM_ERROR, f"invalid parameter zoneid: no zone {zone_id}"
                       if zone_id else "missing parameter zoneid: the zone of the volume")
    size_gb = offering.disk_size_gb
    if params.has("size") and params.integer("size") != size_gb:
        raise ApiError(PARAM_ERROR, f"invalid parameter size: disk offering "
                       f"{offering.name} has a fixed size of {size_gb} GB")
    volume_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = params.text("name") or f"DATA-{volume_id[:8]}"
    async with within_limits(ctx, caller, Usage(volume=1)):
        await ctx.change(caller, Append(streams.volume(volume_id), [
            VolumeAllocated(volume_id=volume_id, job_id=job_id, account_id=caller.account_id,
                            user_id=caller.user_id, name=name, zone_id=zone_id,
                            disk_offering_id=offering_id, size_bytes=size_gb * GB),
            _job(job_id, CREATE_VOLUME_CMD, volume_id, caller),
            JobCompleted(job_id=job_id, succeeded=True),
        ], NO_STREAM))
    return {"id": volume_id, "jobid": job_id}


_VOLUME_ID = Param("id", "uuid", "the volume's ID", required=True, entity=schema.VOLUME)


@command("deleteVolume", response=schema.SUCCESS,
         description="Deletes a detached data volume; its disk is removed from its pool "
         "shortly after.", params=(_VOLUME_ID,))
async def delete_volume(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    volume_id = params.uuid("id")
    assert volume_id is not None
    volume = await targets.volume(ctx, caller, volume_id)
    check_delete(volume)
    await ctx.change(caller, Append(streams.volume(volume_id), [
        VolumeDeleteRequested(volume_id=volume_id)], volume.version))
    return {"success": True}


async def _attach_or_detach(ctx: Context, caller: Caller, volume: _volume.Volume, vm_id: str,
                            attach: bool) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    cmd = ATTACH_VOLUME_CMD if attach else DETACH_VOLUME_CMD
    await ctx.append(caller, Append(streams.volume(volume.id), [
        VolumeAttachRequested(volume_id=volume.id, vm_id=vm_id, job_id=job_id,
                              attach=attach),
        _job(job_id, cmd, volume.id, caller),
    ], volume.version))
    return {"id": volume.id, "jobid": job_id}


@command("attachVolume", is_async=True, response=schema.VOLUME,
         description="Attaches a data volume to a VM that has no VM snapshots.", params=(
             _VOLUME_ID,
             Param("virtualmachineid", "uuid", "the VM", required=True, entity=schema.VM),
         ))
async def attach_volume(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    volume_id = params.uuid("id")
    vm_id = params.uuid("virtualmachineid")
    assert volume_id is not None and vm_id is not None
    volume = await targets.volume(ctx, caller, volume_id)
    await targets.vm(ctx, caller, vm_id, "virtualmachineid")
    check_attach(volume)
    await refuse_if_vm_has_snapshots(ctx, vm_id, "attachVolume")
    return await _attach_or_detach(ctx, caller, volume, vm_id, True)


@command("detachVolume", is_async=True, response=schema.VOLUME,
         description="Detaches a data volume from a VM that has no VM snapshots.",
         params=(_VOLUME_ID,))
async def detach_volume(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    volume_id = params.uuid("id")
    assert volume_id is not None
    volume = await targets.volume(ctx, caller, volume_id)
    vm_id = check_detach(volume)
    await refuse_if_vm_has_snapshots(ctx, vm_id, "detachVolume")
    return await _attach_or_detach(ctx, caller, volume, vm_id, False)


@command("resizeVolume", is_async=True, response=schema.VOLUME,
         description="Grows a volume (of a VM without VM snapshots).", params=(
             _VOLUME_ID,
             Param("size", "long", "the new size in GB", required=True, minimum=1,
                   maximum=64 * 1024),
         ))
async def resize_volume(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    volume_id = params.uuid("id")
    size_gb = params.integer("size")
    assert volume_id is not None and size_gb is not None
    volume = await targets.volume(ctx, caller, volume_id)
    check_resize(volume, size_gb)
    vm_id = volume.vm_id
    if vm_id:
        await refuse_if_vm_has_snapshots(ctx, vm_id, "resizeVolume")
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.volume(volume_id), [
        VolumeResizeRequested(volume_id=volume_id, job_id=job_id, size_bytes=size_gb * GB),
        _job(job_id, RESIZE_VOLUME_CMD, volume_id, caller),
    ], volume.version))
    return {"id": volume_id, "jobid": job_id}
