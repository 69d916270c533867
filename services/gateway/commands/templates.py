"""Templates seeded from VM snapshots: listTemplates, prepareTemplate and its alias
seedTemplateFromVmSnapshot."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from proto import streams
from proto.events import TemplateSeedStarted
from services.gateway import schema, views
from services.gateway.api import (
    MAX_PARAM_LENGTH,
    OURS,
    Caller,
    Context,
    Param,
    Params,
    command,
    listing,
)
from services.gateway.commands.catalog import filters, list_params
from services.gateway.commands.limits import within_limits
from shared.domain import seed
from shared.domain.access import visible_to
from shared.domain.deploy import SnapshotView
from shared.domain.limits import Usage
from shared.errors import INTERNAL_ERROR, PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, ConcurrencyError, Repository
from shared.projections.read import Template, template_from_stream

PREPARE_TIMEOUT_S = 600.0

_ZONE_ID = Param("zoneid", "uuid", "accepted; the snapshot's zone is the one",
                 entity=schema.ZONE)
_STORAGE_ID = Param("storageid", "uuid", "the pool to seed on: only the snapshot's own is "
                    "accepted", entity=schema.POOL)


# CloudStack's template filters (TemplateFilter), and what each lists of seeded templates:
# every one is its VM snapshot's owner's, private, and none is featured or public.
TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "shared", "sharedexecutable",
                    "executable", "community", "all")
# Lists only public templates (featured or not), or those others shared: none here.
_NONE_LISTED = frozenset({"featured", "community", "shared", "sharedexecutable"})


class Scope(NamedTuple):
    """Which templates a listTemplates call may list: none at all, or those of
    ``owner_id`` (every template the caller sees when None)."""

    listed: bool
    owner_id: str | None = None


def template_scope(template_filter: str, caller: Caller, by_id: bool) -> Scope:
    """The templates ``template_filter`` lists for ``caller``, as CloudStack scopes them:
    ``all`` is for administrators only and lists every template; ``self``,
    ``selfexecutable`` and ``executable`` list the caller's own account's (an
    administrator's too); ``featured``, ``community`` (public templates) and ``shared``,
    ``sharedexecutable`` (others' shared with the caller) list none. With a template's
    ``id``, the filter scopes nothing: the template, if the caller sees it.

    Raises:
        ApiError: 431 for a filter CloudStack does not have, or ``all`` from a user.
    """
    wanted = template_filter.lower()
    if wanted not in TEMPLATE_FILTERS:
        raise ApiError(PARAM_ERROR, f"invalid parameter templatefilter: "
                       f"{template_filter[:64]!r} is not one of {', '.join(TEMPLATE_FILTERS)}")
    if wanted == "all" and not caller.is_admin:
        raise ApiError(PARAM_ERROR, "Filter all can be specified by admin only")
    if by_id or wanted == "all":
        return Scope(True)
    if wanted in _NONE_LISTED:
        return Scope(False)
    return Scope(True, caller.account_id)


@command("listTemplates", response=schema.TEMPLATE,
         description="Lists the templates seeded from VM snapshots, as templatefilter scopes "
         "them (a template is its VM snapshot's owner's; none is featured or public).",
         params=(
             Param("templatefilter", "string", "which templates: self, selfexecutable or "
                   "executable (the caller's account's), featured or community (public: "
                   "none), shared or sharedexecutable (shared by others: none), all (every "
                   "account's; administrators only)", required=True),
             Param("ids", "list", "only the templates with these IDs", items="uuid",
                   length=MAX_PARAM_LENGTH, entity=schema.TEMPLATE, since="4.9"),
             *list_params(schema.TEMPLATE, "template"),
         ))
async def list_templates(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    template_filter = params.text("templatefilter")
    assert template_filter is not None
    f = filters(params)
    scope = template_scope(template_filter, caller, by_id=f.obj_id is not None)
    if not scope.listed:
        return listing("template", [])
    found = await ctx.read.templates(caller.viewer, template_id=f.obj_id,
                                     ids=params.uuids("ids"), owner_id=scope.owner_id,
                                     zone_id=f.zone_id, name=f.name, keyword=f.keyword,
                                     paging=f.paging)
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("template", [views.template(t, names) for t in found.items], found.total)


async def _template_view(ctx: Context, template: Template) -> dict[str, Any]:
    """A template as listTemplates shows it (with the names of what it refers to)."""
    return views.template(template, await ctx.read.names(views.ids_of([template])))


async def _seed(ctx: Context, snapshot: SnapshotView,
                pool_id: str) -> tuple[seed.Seed, Template | None, int]:
    """The seed of ``snapshot`` on ``pool_id``, its template, from the seed's stream, and
    the global position of the stream's last event (0 if it has none)."""
    records = await ctx.store.read_stream(streams.seed(snapshot.id, pool_id))
    template = template_from_stream(
        records, streams.seed_template_id(snapshot.id, pool_id), owner=snapshot.account_id,
        zone_id=snapshot.zone_id, zone_kind=await Repository(ctx.store).zone_kind(snapshot.zone_id))
    return (seed.fold([r.event() for r in records]), template,
            records[-1].position if records else 0)


@command("prepareTemplate", response=schema.TEMPLATE,
         description="Seeds a VM snapshot's root disk as a template on its pool, once, and "
         "waits for it; with templateid, answers with that template.", params=(
             Param("vmsnapshotid", "uuid", "the VM snapshot to seed (or templateid)",
                   since=OURS, entity=schema.VM_SNAPSHOT),
             Param("templateid", "uuid", "a seeded template (or vmsnapshotid)",
                   entity=schema.TEMPLATE),
             _ZONE_ID,
             _STORAGE_ID,
         ))
async def prepare_template(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    if params.has("vmsnapshotid") == params.has("templateid"):
        raise ApiError(PARAM_ERROR, "Please provide only one of the following parameters - "
                       "template ID or VM snapshot ID (vmsnapshotid or templateid)")
    template_id = params.uuid("templateid")
    if template_id is None:
        return await seed_template_from_vm_snapshot(ctx, params, caller)
    params.uuid("zoneid")  # accepted
    template = await ctx.read.template(caller.viewer, template_id)
    if template is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter templateid: no template "
                       f"{template_id} is visible to your account")
    return {"template": [await _template_view(ctx, template)]}


@command("seedTemplateFromVmSnapshot", response=schema.TEMPLATE, since=OURS,
         description="An alias of prepareTemplate with vmsnapshotid: seeds a VM snapshot's "
         "root disk as a template on its pool, once, and waits for it.", params=(
             Param("vmsnapshotid", "uuid", "the VM snapshot to seed", required=True,
                   since=OURS, entity=schema.VM_SNAPSHOT),
             _ZONE_ID,
             _STORAGE_ID,
         ))
async def seed_template_from_vm_snapshot(ctx: Context, params: Params,
                                         caller: Caller) -> dict[str, Any]:
    snapshot_id = params.uuid("vmsnapshotid")
    params.uuid("zoneid")  # accepted; the snapshot's zone is the one
    storage_id = params.uuid("storageid")
    assert snapshot_id is not None
    snapshot = await Repository(ctx.store).snapshot_source(snapshot_id)
    if snapshot is None or not visible_to(snapshot.account_id, caller.account_id,
                                          caller.is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter vmsnapshotid: no VM snapshot "
                       f"{snapshot_id} is visible to your account")
    pool_id = snapshot.root_pool_id
    if pool_id is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter vmsnapshotid: VM snapshot {snapshot_id} "
                       "has no root disk")
    if storage_id is not None and storage_id != pool_id:
        raise ApiError(PARAM_ERROR, f"invalid parameter storageid: VM snapshot {snapshot_id} "
                       f"is on primary storage pool {pool_id}; a template is seeded only on "
                       "the pool that holds the snapshot")
    deadline = time.monotonic() + PREPARE_TIMEOUT_S
    started = False
    while time.monotonic() < deadline:
        state, template, position = await _seed(ctx, snapshot, pool_id)
        if state.status == seed.READY and template is not None:
            # As every synchronous command: the next list call shows what it answers.
            await ctx.read.reach(position)
            return {"template": [await _template_view(ctx, template)]}
        if state.status == seed.ERROR and started:
            raise ApiError(INTERNAL_ERROR, f"seeding VM snapshot {snapshot_id} on pool "
                           f"{pool_id} failed: {state.failure}")
        if state.status != seed.CREATING and not started:
            start = TemplateSeedStarted(
                vm_snapshot_id=snapshot_id, pool_id=pool_id,
                template_id=streams.seed_template_id(snapshot_id, pool_id),
                name=seed.template_name(snapshot_id, pool_id))
            try:
                async with within_limits(ctx, caller, Usage(template=1)):
                    await ctx.append(caller, Append(streams.seed(snapshot_id, pool_id), [start],
                                                    state.version or NO_STREAM))
            except ConcurrencyError:
                continue  # someone else moved the seed on: look again
        started = started or state.status != seed.CREATING
        await asyncio.sleep(0.1)
    raise ApiError(INTERNAL_ERROR, f"seeding VM snapshot {snapshot_id} on pool {pool_id} is "
                   f"still running after {PREPARE_TIMEOUT_S:.0f}s; call prepareTemplate again")
