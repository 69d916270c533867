"""The things a user's command acts on, loaded from the event store (never from the read
models) and checked against who is asking (``shared.domain.access``).

A thing the caller may not see gets the same answer as an id that does not exist: a 431
naming the parameter. Each loader returns the write side's state with its stream's version,
so the command appends at that version and decides again if the stream moved on meanwhile.
"""

from __future__ import annotations

from dataclasses import replace

from proto.events import VmSnapshotTaken
from services.gateway.api import Caller, Context
from shared.domain import vm as _vm
from shared.domain import volume as _volume
from shared.domain.access import visible_to
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import Repository


async def vm(ctx: Context, caller: Caller, vm_id: str, param: str) -> _vm.Vm:
    """A VM the caller may see, not expunged."""
    found = await Repository(ctx.store).vm(vm_id)
    if found.state is None or found.expunged or not visible_to(
            found.account_id, caller.account_id, caller.is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter {param}: no virtual machine {vm_id} "
                       "is visible to your account")
    return found


async def vm_snapshot(ctx: Context, caller: Caller, snapshot_id: str) -> VmSnapshotTaken:
    """A VM snapshot the caller may see (its owner's: taken for, or assigned with its VM),
    not deleted."""
    repo = Repository(ctx.store)
    taken = (await repo.vm_snapshot(snapshot_id)).live
    if taken is None or not visible_to(await repo.vm_snapshot_owner(snapshot_id),
                                       caller.account_id, caller.is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter vmsnapshotid: no VM snapshot "
                       f"{snapshot_id} is visible to your account")
    return taken


async def volume(ctx: Context, caller: Caller, volume_id: str,
                 param: str = "id") -> _volume.Volume:
    """A volume the caller may see, neither deleted nor expunged with its VM. Its owner and
    whether it is gone are the write side's summary across streams (a volume moves with its
    VM when the VM is assigned, and goes when the VM is expunged)."""
    found = await Repository(ctx.store).volume(volume_id)
    held = await ctx.store.holding("volume", volume_id)
    if held is not None:
        found = replace(found, account_id=held.account_id or found.account_id,
                        deleted=found.deleted or held.gone)
    if not found.live or not visible_to(found.account_id, caller.account_id, caller.is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter {param}: no volume {volume_id} is "
                       "visible to your account")
    return found


async def vm_snapshot_count(ctx: Context, vm_id: str) -> int:
    """How many VM snapshots (not deleted) the VM has now."""
    return len((await ctx.store.vm_snapshots([vm_id])).get(vm_id, []))
