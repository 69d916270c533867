"""The web console: a small page application served at ``/client/`` beside the API.

The page logs in with the ``login`` command and then calls ``/client/api`` and
``/client/events`` in its session, as any API client may. Its files are plain HTML, CSS
and JavaScript in ``static/`` (nothing to build, nothing fetched from elsewhere).

One read endpoint is the console's own, ``GET /client/console/deploy-options``: what the
deploy dialog may offer for a VM snapshot, decided by the API's own deploy rule
(``shared.domain.deploy.check_deploy``) on what the event store holds, so that an offering
the API would refuse is shown disabled with the API's reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from proto.events import EVENT_TYPES
from services.gateway.api import OURS, Declaration, Param, Params
from services.gateway.http import CONTEXT, caller_of, envelope, request_params
from shared.domain.access import visible_to
from shared.domain.deploy import OfferingView, Rejected, SnapshotView, check_deploy
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import Repository

STATIC = Path(__file__).parent / "static"
PREFIX = "/client/"
# Pages change with the product: the browser asks again rather than guessing.
NO_CACHE = {"Cache-Control": "no-cache"}

DEPLOY_OPTIONS = Declaration(
    "deployOptions", "What a deploy from a VM snapshot may choose: each compute offering "
    "with whether the deploy rule allows it (and why not), and the hosts that reach the "
    "snapshot's pool.", since=OURS, params=(
        Param("vmsnapshotid", "uuid", "the VM snapshot to deploy from", required=True),
    ))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound(PREFIX)


async def stream_info(request: web.Request) -> web.Response:
    """What the audit page needs to follow ``/client/events``: the event types it may send
    (its SSE ``event:`` names) and the read models' position, to start a little before."""
    ctx = request.app[CONTEXT]
    try:
        await caller_of(ctx, request, await request_params(request))
    except ApiError as exc:
        return envelope("streaminfo", exc.body(), exc.code)
    return envelope("streaminfo", {"eventtypes": sorted(EVENT_TYPES),
                                   "position": await ctx.read.position()})


async def deploy_options(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    pairs = await request_params(request)
    try:
        caller = await caller_of(ctx, request, pairs)
        snapshot_id = Params(DEPLOY_OPTIONS, dict(pairs)).uuid("vmsnapshotid")
        assert snapshot_id is not None
        body = await _options(request, caller.account_id, caller.is_admin, snapshot_id)
    except ApiError as exc:
        return envelope("deployoptions", exc.body(), exc.code)
    return envelope("deployoptions", body)


async def _options(request: web.Request, account_id: str, is_admin: bool,
                   snapshot_id: str) -> dict[str, Any]:
    ctx = request.app[CONTEXT]
    repo = Repository(ctx.store)
    snapshot = await repo.snapshot_source(snapshot_id)
    if snapshot is None or not visible_to(snapshot.account_id, account_id, is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter vmsnapshotid: no VM snapshot "
                       f"{snapshot_id} is visible to your account")
    networks = {object_id for kind, object_id, gone
                in (await ctx.store.inventory_objects()).values()
                if kind == "network" and not gone}
    offerings: list[dict[str, Any]] = []
    for listed in (await ctx.read.service_offerings()).items:
        offering = await repo.service_offering(listed.id)
        if offering is None:
            continue
        offerings.append({"id": offering.id, "name": offering.name,
                          "displaytext": listed.display_text,
                          "cpunumber": offering.cpu_number, "cpuspeed": offering.cpu_speed,
                          "memory": offering.memory_mb,
                          **_allowed(account_id, is_admin, snapshot_id, snapshot, offering,
                                     networks)})
    hosts = [{"id": h.id, "name": h.name, "cpufree": h.cpu_mhz_free,
              "memoryfree": h.memory_mb_free}
             for h in sorted(await ctx.store.hosts(), key=lambda h: h.name)
             if h.zone_id == snapshot.zone_id and snapshot.root_pool_id in h.pool_ids]
    return {"vmsnapshotid": snapshot.id, "virtualmachineid": snapshot.vm_id,
            "zoneid": snapshot.zone_id, "storageid": snapshot.root_pool_id,
            "cpunumber": snapshot.cpu_number, "memory": snapshot.memory_mb,
            "networkids": snapshot.network_ids, "serviceoffering": offerings, "host": hosts,
            "position": await ctx.read.position()}


def _allowed(account_id: str, is_admin: bool, snapshot_id: str, snapshot: SnapshotView,
             offering: OfferingView, networks: set[str]) -> dict[str, Any]:
    """Whether the deploy rule takes ``offering`` for the snapshot (and else its reason);
    a refusal of anything but the offering refuses the whole request."""
    try:
        check_deploy(account_id=account_id, is_admin=is_admin, vm_snapshot_id=snapshot_id,
                     template_id=None, snapshot=snapshot, template=None, offering=offering,
                     offering_id=offering.id, host_id=None, host=None, network_ids=[],
                     known_networks=networks, name=None)
    except Rejected as refused:
        if not refused.text.startswith("invalid parameter serviceofferingid"):
            raise ApiError(refused.code, refused.text) from None
        return {"allowed": False, "reason": refused.text}
    return {"allowed": True}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/client", to_index)
    app.router.add_get(PREFIX, index)
    app.router.add_get(PREFIX + "console/deploy-options", deploy_options)
    app.router.add_get(PREFIX + "console/stream-info", stream_info)
    app.router.add_static(PREFIX + "static", STATIC, append_version=False)
