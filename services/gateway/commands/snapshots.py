"""VM snapshot commands: create, list, delete, revert."""

from __future__ import annotations

import uuid
from typing import Any

from proto import streams
from proto.events import (
    JobSubmitted,
    VmRevertRequested,
    VmSnapshotDeleteRequested,
    VmSnapshotRequested,
)
from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing
from services.gateway.commands.vms import visible_vm
from shared.domain.job import (
    CREATE_VM_SNAPSHOT_CMD,
    DELETE_VM_SNAPSHOT_CMD,
    REVERT_VM_SNAPSHOT_CMD,
)
from shared.domain.vm import VmState
from shared.errors import PARAM_ERROR, RESOURCE_IN_USE, ApiError
from shared.eventstore import Append
from shared.projections.read import VmSnapshot


async def visible_snapshot(ctx: Context, caller: Caller, snapshot_id: str) -> VmSnapshot:
    snapshot = await ctx.read.vm_snapshot(caller.viewer, snapshot_id)
    if snapshot is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter vmsnapshotid: no VM snapshot "
                       f"{snapshot_id} is visible to your account")
    return snapshot


def _job(job_id: str, cmd: str, instance: str, caller: Caller) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, cmd=cmd, instance_type="VMSnapshot",
                        instance_id=instance, account_id=caller.account_id,
                        user_id=caller.user_id)


@command("createVMSnapshot", is_async=True)
async def create_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid", required=True)
    assert vm_id is not None
    vm = await visible_vm(ctx, caller, vm_id, "virtualmachineid")
    if vm.state not in (VmState.RUNNING, VmState.STOPPED):
        raise ApiError(RESOURCE_IN_USE, f"virtual machine {vm_id} is {vm.state}; snapshots "
                       "are taken of Running or Stopped VMs")
    memory = bool(params.boolean("snapshotmemory"))
    snapshot_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = params.text("name") or f"{vm.name}_snapshot_{snapshot_id[:8]}"
    await ctx.append(caller, Append(streams.vm(vm_id), [
        VmSnapshotRequested(job_id=job_id, snapshot_id=snapshot_id, vm_id=vm_id, name=name,
                            description=params.text("description") or "",
                            memory=memory and vm.state == VmState.RUNNING,
                            quiesce=bool(params.boolean("quiescevm"))),
        _job(job_id, CREATE_VM_SNAPSHOT_CMD, snapshot_id, caller),
    ]))
    return {"id": snapshot_id, "jobid": job_id}


@command("listVMSnapshot")
async def list_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    found = await ctx.read.vm_snapshots(caller.viewer, snapshot_id=params.uuid("vmsnapshotid"),
                                        vm_id=params.uuid("virtualmachineid"))
    return listing("vmSnapshot", [views.vm_snapshot(s) for s in found.items])


async def _snapshot_job(ctx: Context, params: Params, caller: Caller, cmd: str,
                        request: type[VmSnapshotDeleteRequested | VmRevertRequested]
                        ) -> dict[str, Any]:
    """A job on one of the caller's snapshots, recorded on its VM's stream."""
    snapshot_id = params.uuid("vmsnapshotid", required=True)
    assert snapshot_id is not None
    vm_id = (await visible_snapshot(ctx, caller, snapshot_id)).vm_id
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.vm(vm_id), [
        request(job_id=job_id, snapshot_id=snapshot_id, vm_id=vm_id),
        _job(job_id, cmd, snapshot_id, caller),
    ]))
    return {"jobid": job_id}


@command("deleteVMSnapshot", is_async=True)
async def delete_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _snapshot_job(ctx, params, caller, DELETE_VM_SNAPSHOT_CMD,
                               VmSnapshotDeleteRequested)


@command("revertToVMSnapshot", is_async=True)
async def revert_to_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _snapshot_job(ctx, params, caller, REVERT_VM_SNAPSHOT_CMD, VmRevertRequested)
