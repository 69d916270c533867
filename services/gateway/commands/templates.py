"""Templates seeded from VM snapshots: listTemplates and prepareTemplate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from proto import streams
from proto.events import TemplateSeedStarted
from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing
from services.gateway.commands.catalog import _page, _rows
from services.gateway.commands.limits import within_limits
from services.gateway.commands.snapshots import visible_snapshot
from shared.domain import seed
from shared.domain.access import visible_to
from shared.domain.limits import Usage
from shared.errors import INTERNAL_ERROR, PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, ConcurrencyError
from shared.projections import Catalog, fold, queries

PREPARE_TIMEOUT_S = 600.0
_CATALOG = Catalog()


async def _visible_templates(ctx: Context, params: Params,
                             caller: Caller) -> list[dict[str, Any]]:
    """The seeded templates the caller may see, matching ``id``/``zoneid``/``name``, each
    with its owner (its VM snapshot's owner) and its pool's zone."""
    rows = await _rows(ctx, "template", params, caller)
    async with ctx.store.pool.acquire() as conn:
        zones = {r["id"]: r["zone_id"] for r in await queries.catalog_rows(conn, "pool")}
        owners = await queries.snapshot_owners(conn)
    out = []
    for row in rows:
        owner = owners.get(row["data"]["vm_snapshot_id"])
        if visible_to(owner, caller.account_id, caller.is_admin):
            out.append({**row, "account_id": owner,
                        "zone_id": zones.get(row["data"]["pool_id"])})
    return out


@command("listTemplates")
async def list_templates(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    params.text("templatefilter")  # all, self, featured...: every visible template is listed
    rows = await _visible_templates(ctx, params, caller)
    items, total = _page(params, [views.template(r, r["zone_id"]) for r in rows])
    return listing("template", items, total)


async def _seed_row(ctx: Context, snapshot_id: str, pool_id: str) -> tuple[seed.Seed, Any]:
    records = await ctx.store.read_stream(streams.seed(snapshot_id, pool_id))
    state = seed.fold([r.event() for r in records])
    rows, _ = fold(_CATALOG, {}, [(r, r.event()) for r in records])
    row = rows.get(("template", streams.seed_template_id(snapshot_id, pool_id)))
    return state, row


@command("prepareTemplate")
async def prepare_template(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """Seed a VM snapshot's root disk as a template on its pool, once; wait for it."""
    snapshot_id = params.uuid("vmsnapshotid")
    template_id = params.uuid("templateid")
    params.uuid("zoneid")  # accepted; the snapshot's zone is the one
    storage_id = params.uuid("storageid")
    if (snapshot_id is None) == (template_id is None):
        raise ApiError(PARAM_ERROR, "Please provide only one of the following parameters - "
                       "template ID or VM snapshot ID (vmsnapshotid or templateid)")
    if template_id is not None:
        rows = await _visible_templates(ctx, Params("prepareTemplate", {"id": template_id}),
                                        caller)
        if not rows:
            raise ApiError(PARAM_ERROR, f"invalid parameter templateid: no template "
                           f"{template_id} is visible to your account")
        return {"template": [views.template(rows[0], rows[0]["zone_id"])]}
    assert snapshot_id is not None
    await visible_snapshot(ctx, caller, snapshot_id)
    async with ctx.store.pool.acquire() as conn:
        snapshot = await queries.snapshot_view(conn, snapshot_id)
    assert snapshot is not None
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
        state, row = await _seed_row(ctx, snapshot_id, pool_id)
        if state.status == seed.READY and row is not None:
            return {"template": [views.template(
                {**row, "account_id": snapshot.account_id,
                 "data": msgspec.json.decode(row["data"])}, snapshot.zone_id)]}
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
