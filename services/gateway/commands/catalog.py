"""Listing and managing what the cloud is made of: zones, hosts, storage pools, networks,
offerings, templates, volumes; and the admin's inventory sync and per-pool settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from proto import streams
from proto.events import (
    DiskOfferingCreated,
    InventorySyncRequested,
    JobSubmitted,
    PoolSettingChanged,
    ServiceOfferingCreated,
)
from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing, require_admin
from shared import drivers
from shared.domain.access import visible_to
from shared.domain.job import SYNC_INVENTORY_CMD
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append
from shared.projections import queries

FULL_CLONE_SETTING = drivers.for_zone(None).full_clone_setting


async def _rows(ctx: Context, kind: str, params: Params, caller: Caller,
                *, per_account: bool = False) -> list[dict[str, Any]]:
    wanted = params.uuid("id")
    zone = params.uuid("zoneid")
    name = (params.text("name") or "").lower()
    keyword = (params.text("keyword") or "").lower()
    async with ctx.store.pool.acquire() as conn:
        rows = await queries.catalog_rows(conn, kind)
    return [r for r in rows
            if wanted in (None, r["id"]) and zone in (None, r["zone_id"])
            and name in ("", r["name"].lower()) and keyword in r["name"].lower()
            and (not per_account or visible_to(r["account_id"], caller.account_id,
                                                  caller.is_admin))]


def _page(params: Params, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    page = params.page()
    if page is None:
        return items, len(items)
    size, offset = page
    return items[offset:offset + size], len(items)


def _simple_list(name: str, kind: str, key: str, view: Callable[[dict[str, Any]], dict[str, Any]],
                 *, admin_only: bool = False) -> None:
    """Register ``name``: the catalog rows of ``kind``, filtered and paged, under ``key``."""

    async def handler(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
        if admin_only:
            require_admin(caller, name)
        items, total = _page(params, [view(r) for r in await _rows(ctx, kind, params, caller)])
        return listing(key, items, total)

    command(name)(handler)


_simple_list("listZones", "zone", "zone", views.zone)
_simple_list("listHosts", "host", "host", views.host, admin_only=True)
_simple_list("listStoragePools", "pool", "storagepool", views.pool, admin_only=True)
_simple_list("listNetworks", "network", "network", views.network)
_simple_list("listServiceOfferings", "serviceoffering", "serviceoffering", views.service_offering)
_simple_list("listDiskOfferings", "diskoffering", "diskoffering", views.disk_offering)


@command("listVolumes")
async def list_volumes(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid")
    volume_type = params.text("type")
    if volume_type is not None and volume_type.upper() not in ("ROOT", "DATADISK"):
        raise ApiError(PARAM_ERROR, f"invalid parameter type: {volume_type[:64]!r} is not ROOT "
                       "or DATADISK")
    rows = [r for r in await _rows(ctx, "volume", params, caller, per_account=True)
            if vm_id in (None, r["data"].get("vm_id"))
            and (volume_type is None or r["data"]["volume_type"] == volume_type.upper())]
    items, total = _page(params, [views.volume(r) for r in rows])
    return listing("volume", items, total)


@command("createServiceOffering")
async def create_service_offering(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    require_admin(caller, "createServiceOffering")
    name = params.text("name", required=True)
    cpus = params.integer("cpunumber", minimum=1, maximum=128)
    speed = params.integer("cpuspeed", minimum=1, maximum=100_000)
    memory = params.integer("memory", minimum=32, maximum=4 * 1024 * 1024)
    for value, param in ((cpus, "cpunumber"), (speed, "cpuspeed"), (memory, "memory")):
        if value is None:
            raise ApiError(PARAM_ERROR, f"missing parameter {param}: it is required by "
                           "createServiceOffering")
    assert name is not None and cpus is not None and speed is not None and memory is not None
    offering_id = str(uuid.uuid4())
    event = ServiceOfferingCreated(offering_id=offering_id, name=name,
                                   display_text=params.text("displaytext") or name,
                                   cpu_number=cpus, cpu_speed=speed, memory_mb=memory)
    await ctx.change(caller, Append(streams.service_offering(offering_id), [event], NO_STREAM))
    async with ctx.store.pool.acquire() as conn:
        row = await queries.catalog_row(conn, "serviceoffering", offering_id)
    offering = views.service_offering(row) if row else {
        "id": offering_id, "name": name, "displaytext": event.display_text, "cpunumber": cpus,
        "cpuspeed": speed, "memory": memory}
    return {"serviceoffering": offering}


@command("createDiskOffering")
async def create_disk_offering(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    require_admin(caller, "createDiskOffering")
    name = params.text("name", required=True)
    size = params.integer("disksize", minimum=1, maximum=64 * 1024)
    if size is None:
        raise ApiError(PARAM_ERROR, "missing parameter disksize: it is required by "
                       "createDiskOffering")
    assert name is not None
    offering_id = str(uuid.uuid4())
    event = DiskOfferingCreated(offering_id=offering_id, name=name,
                                display_text=params.text("displaytext") or name,
                                disk_size_gb=size)
    await ctx.change(caller, Append(streams.disk_offering(offering_id), [event], NO_STREAM))
    return {"diskoffering": {"id": offering_id, "name": name, "displaytext": event.display_text,
                             "disksize": size}}


@command("updateConfiguration")
async def update_configuration(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    require_admin(caller, "updateConfiguration")
    name = params.text("name", required=True)
    value = params.text("value", required=True)
    pool_id = params.uuid("storageid")
    if name != FULL_CLONE_SETTING:
        raise ApiError(PARAM_ERROR, f"invalid parameter name: {name!r} is not a setting "
                       f"snapdeploy knows; it knows {FULL_CLONE_SETTING}")
    if pool_id is None:
        raise ApiError(PARAM_ERROR, f"missing parameter storageid: {FULL_CLONE_SETTING} is "
                       "set per primary storage pool")
    assert value is not None
    if value.lower() not in ("true", "false"):
        raise ApiError(PARAM_ERROR, f"invalid parameter value: {FULL_CLONE_SETTING} is true "
                       "or false")
    async with ctx.store.pool.acquire() as conn:
        if await queries.catalog_row(conn, "pool", pool_id) is None:
            raise ApiError(PARAM_ERROR, f"invalid parameter storageid: no storage pool "
                           f"{pool_id} exists")
    await ctx.change(caller, Append(streams.pool(pool_id), [
        PoolSettingChanged(pool_id=pool_id, name=name, value=value.lower())]))
    return {"configuration": {"name": name, "value": value.lower(), "scope": "storagepool",
                              "id": pool_id}}


@command("syncInventory", is_async=True)
async def sync_inventory(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """Read vCenter again: new hosts, pools, networks, VMs and snapshots appear."""
    require_admin(caller, "syncInventory")
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.INVENTORY, [
        InventorySyncRequested(job_id=job_id),
        JobSubmitted(job_id=job_id, cmd=SYNC_INVENTORY_CMD, instance_type="Zone",
                     instance_id=job_id, account_id=caller.account_id, user_id=caller.user_id),
    ]))
    return {"jobid": job_id}
