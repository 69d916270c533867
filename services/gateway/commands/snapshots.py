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
from services.gateway import schema, views
from services.gateway.api import (
    MAX_PARAM_LENGTH,
    PAGING,
    Caller,
    Context,
    Param,
    Params,
    command,
    listing,
)
from services.gateway.commands import targets
from shared.domain.job import (
    CREATE_VM_SNAPSHOT_CMD,
    DELETE_VM_SNAPSHOT_CMD,
    REVERT_VM_SNAPSHOT_CMD,
)
from shared.domain.vm import VmState, check_snapshot
from shared.eventstore import Append, Repository


def _job(job_id: str, cmd: str, instance: str, caller: Caller) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, cmd=cmd, instance_type="VMSnapshot",
                        instance_id=instance, account_id=caller.account_id,
                        user_id=caller.user_id)


_SNAPSHOT_ID = Param("vmsnapshotid", "uuid", "the VM snapshot's ID", required=True,
                     entity=schema.VM_SNAPSHOT)


@command("createVMSnapshot", is_async=True, response=schema.VM_SNAPSHOT,
         description="Takes a snapshot of a VM's disks (and memory, if asked and running).",
         params=(
             Param("virtualmachineid", "uuid", "the VM", required=True, entity=schema.VM),
             Param("snapshotmemory", "boolean", "also snapshot the memory of a running VM"),
             Param("name", "string", "its name (default: <VM name>_snapshot_<id>)"),
             Param("description", "string", "its description"),
             Param("quiescevm", "boolean", "quiesce the guest's file systems first"),
         ))
async def create_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid")
    assert vm_id is not None
    vm = await targets.vm(ctx, caller, vm_id, "virtualmachineid")
    check_snapshot(vm)
    memory = bool(params.boolean("snapshotmemory"))
    snapshot_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = params.text("name") or f"{vm.name}_snapshot_{snapshot_id[:8]}"
    await ctx.append(caller, Append(streams.vm(vm_id), [
        VmSnapshotRequested(job_id=job_id, snapshot_id=snapshot_id, vm_id=vm_id, name=name,
                            description=params.text("description") or "",
                            memory=memory and vm.state == VmState.RUNNING,
                            quiesce=bool(params.boolean("quiescevm"))),
        _job(job_id, CREATE_VM_SNAPSHOT_CMD, snapshot_id, caller),
    ], vm.version))
    return {"id": snapshot_id, "jobid": job_id}


@command("listVMSnapshot", response=schema.VM_SNAPSHOT,
         description="Lists the caller's VM snapshots (every account's for an admin).",
         params=(
             Param("vmsnapshotid", "uuid", "only the snapshot with this ID",
                   entity=schema.VM_SNAPSHOT),
             Param("vmsnapshotids", "list", "only the snapshots with these IDs",
                   items="uuid", length=MAX_PARAM_LENGTH, entity=schema.VM_SNAPSHOT,
                   since="4.9"),
             Param("virtualmachineid", "uuid", "only this VM's snapshots", entity=schema.VM),
             Param("name", "string", "only snapshots with this name (any case)"),
             Param("state", "string", "only snapshots in this state (Ready, ...)"),
             Param("keyword", "string", "only snapshots whose name or description holds "
                   "this"),
             Param("listall", "boolean", "accepted: an admin sees every account's"),
             *PAGING,
         ))
async def list_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    params.boolean("listall")
    found = await ctx.read.vm_snapshots(
        caller.viewer, snapshot_id=params.uuid("vmsnapshotid"),
        ids=params.uuids("vmsnapshotids"), vm_id=params.uuid("virtualmachineid"),
        name=params.text("name"), state=params.text("state"), keyword=params.text("keyword"),
        paging=params.page())
    names = await ctx.read.names([*views.ids_of(found.items),
                                  *(s.parent_id for s in found.items)])
    return listing("vmSnapshot", [views.vm_snapshot(s, names) for s in found.items],
                   found.total)


async def _snapshot_job(ctx: Context, params: Params, caller: Caller, cmd: str,
                        request: type[VmSnapshotDeleteRequested | VmRevertRequested]
                        ) -> dict[str, Any]:
    """A job on one of the caller's snapshots, recorded on its VM's stream."""
    snapshot_id = params.uuid("vmsnapshotid")
    assert snapshot_id is not None
    vm_id = (await targets.vm_snapshot(ctx, caller, snapshot_id)).vm_id
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.vm(vm_id), [
        request(job_id=job_id, snapshot_id=snapshot_id, vm_id=vm_id),
        _job(job_id, cmd, snapshot_id, caller),
    ], (await Repository(ctx.store).vm(vm_id)).version))
    return {"jobid": job_id}


@command("deleteVMSnapshot", is_async=True, response=schema.SUCCESS,
         description="Deletes a VM snapshot.", params=(_SNAPSHOT_ID,))
async def delete_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _snapshot_job(ctx, params, caller, DELETE_VM_SNAPSHOT_CMD,
                               VmSnapshotDeleteRequested)


@command("revertToVMSnapshot", is_async=True, response=schema.VM,
         description="Reverts a VM to one of its snapshots.", params=(_SNAPSHOT_ID,))
async def revert_to_vm_snapshot(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _snapshot_job(ctx, params, caller, REVERT_VM_SNAPSHOT_CMD, VmRevertRequested)
