"""Listing and managing what the cloud is made of: zones, hosts, storage pools, networks,
offerings, templates, volumes; and the admin's inventory sync and per-pool settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from proto import streams
from proto.events import (
    AnyEvent,
    DiskOfferingCreated,
    Event,
    InventorySyncRequested,
    JobSubmitted,
    PoolSettingChanged,
    ServiceOfferingCreated,
)
from services.gateway import schema, views
from services.gateway.api import (
    ADMIN,
    MAX_PARAM_LENGTH,
    OURS,
    PAGING,
    Caller,
    Context,
    Param,
    Params,
    Shape,
    command,
    listing,
)
from shared import drivers
from shared.domain import offerings
from shared.domain.job import SYNC_INVENTORY_CMD
from shared.domain.listing import Filter, narrowed, paged
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, Repository
from shared.projections.read import Paging

# The per-pool settings that ask for full clones, one per driver kind; a pool takes its
# zone's kind's (``vmware.create.full.clone`` in a vCenter datacenter).
FULL_CLONE_SETTINGS = sorted({k.full_clone_setting for k in drivers.kinds().values()})


class Filters(NamedTuple):
    """The filters every list command takes: ``id``, ``zoneid``, ``name`` (whole, any case),
    ``keyword`` (within the name), and the page."""

    obj_id: str | None
    zone_id: str | None
    name: str | None
    keyword: str | None
    paging: Paging | None


def list_params(shape: Shape, what: str) -> tuple[Param, ...]:
    """The declarations of the common filters of a command listing ``shape`` objects."""
    return (
        Param("id", "uuid", f"only the {what} with this ID", entity=shape),
        Param("zoneid", "uuid", f"only {what}s in this zone", entity=schema.ZONE),
        Param("name", "string", f"only {what}s with this name (any case)"),
        Param("keyword", "string", f"only {what}s whose name contains this"),
        *PAGING,
    )


def ids_param(shape: Shape, what: str, since: str) -> Param:
    """CloudStack's ``ids``: only the objects with these IDs (a comma-separated list)."""
    return Param("ids", "list", f"only the {what}s with these IDs", items="uuid",
                 length=MAX_PARAM_LENGTH, entity=shape, since=since)


def filters(params: Params) -> Filters:
    """The common filters; ``zoneid`` does not narrow offerings, which every zone has."""
    return Filters(params.uuid("id"), params.uuid("zoneid"), params.text("name"),
                   params.text("keyword"), params.page())


@command("listZones", response=schema.ZONE, description="Lists the zones.",
         params=(ids_param(schema.ZONE, "zone", "4.19.0"), *list_params(schema.ZONE, "zone")))
async def list_zones(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    f = filters(params)
    if f.obj_id and f.zone_id and f.obj_id != f.zone_id:
        return listing("zone", [])  # both name the zone: no zone is two
    found = await ctx.read.zones(zone_id=f.obj_id or f.zone_id, ids=params.uuids("ids"),
                                 name=f.name, keyword=f.keyword, paging=f.paging)
    return listing("zone", [views.zone(z) for z in found.items], found.total)


@command("listHosts", role=ADMIN, response=schema.HOST,
         description="Lists the hypervisor hosts (admin).",
         params=list_params(schema.HOST, "host"))
async def list_hosts(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    f = filters(params)
    found = await ctx.read.hosts(host_id=f.obj_id, zone_id=f.zone_id, name=f.name,
                                 keyword=f.keyword, paging=f.paging)
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("host", [views.host(h, names) for h in found.items], found.total)


@command("listStoragePools", role=ADMIN, response=schema.POOL,
         description="Lists the primary storage pools (admin).",
         params=list_params(schema.POOL, "storage pool"))
async def list_storage_pools(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    f = filters(params)
    found = await ctx.read.pools(pool_id=f.obj_id, zone_id=f.zone_id, name=f.name,
                                 keyword=f.keyword, paging=f.paging)
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("storagepool", [views.pool(p, names) for p in found.items], found.total)


@command("listNetworks", response=schema.NETWORK, description="Lists the guest networks.",
         params=list_params(schema.NETWORK, "network"))
async def list_networks(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    f = filters(params)
    found = await ctx.read.networks(network_id=f.obj_id, zone_id=f.zone_id, name=f.name,
                                    keyword=f.keyword, paging=f.paging)
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("network", [views.network(n, names) for n in found.items], found.total)


@command("listServiceOfferings", response=schema.SERVICE_OFFERING,
         description="Lists the compute offerings (every zone has them all).",
         params=list_params(schema.SERVICE_OFFERING, "compute offering"))
async def list_service_offerings(ctx: Context, params: Params, caller: Caller
                                 ) -> dict[str, Any]:
    f = filters(params)
    found = await ctx.read.service_offerings(offering_id=f.obj_id, name=f.name,
                                             keyword=f.keyword, paging=f.paging)
    return listing("serviceoffering", [views.service_offering(o) for o in found.items],
                   found.total)


@command("listDiskOfferings", response=schema.DISK_OFFERING,
         description="Lists the disk offerings (every zone has them all).",
         params=list_params(schema.DISK_OFFERING, "disk offering"))
async def list_disk_offerings(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    f = filters(params)
    found = await ctx.read.disk_offerings(offering_id=f.obj_id, name=f.name,
                                          keyword=f.keyword, paging=f.paging)
    return listing("diskoffering", [views.disk_offering(o) for o in found.items], found.total)


@command("listVolumes", response=schema.VOLUME,
         description="Lists the caller's volumes (every account's for an admin).", params=(
             Param("virtualmachineid", "uuid", "only this VM's volumes", entity=schema.VM),
             Param("type", "string", "only ROOT or only DATADISK volumes"),
             ids_param(schema.VOLUME, "volume", "4.9"),
             *list_params(schema.VOLUME, "volume"),
         ))
async def list_volumes(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid")
    volume_type = params.text("type")
    if volume_type is not None and volume_type.upper() == "DATA":
        volume_type = "DATADISK"  # CloudStack's clients say DATA as often
    if volume_type is not None and volume_type.upper() not in ("ROOT", "DATADISK"):
        raise ApiError(PARAM_ERROR, f"invalid parameter type: {volume_type[:64]!r} is not ROOT "
                       "or DATADISK (or DATA)")
    f = filters(params)
    found = await ctx.read.volumes(caller.viewer, volume_id=f.obj_id,
                                   ids=params.uuids("ids"), vm_id=vm_id,
                                   volume_type=volume_type, zone_id=f.zone_id, name=f.name,
                                   keyword=f.keyword, paging=f.paging)
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("volume", [views.volume(v, names) for v in found.items], found.total)


@command("createServiceOffering", role=ADMIN, response=schema.SERVICE_OFFERING,
         description="Creates a compute offering (admin).", params=(
             Param("name", "string", "its name", required=True),
             Param("cpunumber", "integer", "the number of CPUs", required=True, minimum=1,
                   maximum=128),
             Param("cpuspeed", "integer", "the speed of each CPU in MHz", required=True,
                   minimum=1, maximum=100_000),
             Param("memory", "integer", "the memory in MiB", required=True, minimum=32,
                   maximum=4 * 1024 * 1024),
             Param("displaytext", "string", "its display text (default: its name)"),
         ))
async def create_service_offering(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    name = params.text("name")
    cpus = params.integer("cpunumber")
    speed = params.integer("cpuspeed")
    memory = params.integer("memory")
    assert name is not None and cpus is not None and speed is not None and memory is not None
    offering_id = str(uuid.uuid4())
    event = ServiceOfferingCreated(offering_id=offering_id, name=name,
                                   display_text=params.text("displaytext") or name,
                                   cpu_number=cpus, cpu_speed=speed, memory_mb=memory)
    await ctx.change(caller, Append(streams.service_offering(offering_id), [event], NO_STREAM))
    row = await ctx.read.service_offering(offering_id)
    offering = views.service_offering(row) if row else {
        "id": offering_id, "name": name, "displaytext": event.display_text, "cpunumber": cpus,
        "cpuspeed": speed, "memory": memory}
    return {"serviceoffering": offering}


@command("createDiskOffering", role=ADMIN, response=schema.DISK_OFFERING,
         description="Creates a disk offering of a fixed size (admin).", params=(
             Param("name", "string", "its name", required=True),
             Param("disksize", "long", "the size of its disks in GB", required=True, minimum=1,
                   maximum=64 * 1024),
             Param("displaytext", "string", "its display text (default: its name)"),
         ))
async def create_disk_offering(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    name = params.text("name")
    size = params.integer("disksize")
    assert name is not None and size is not None
    offering_id = str(uuid.uuid4())
    event = DiskOfferingCreated(offering_id=offering_id, name=name,
                                display_text=params.text("displaytext") or name,
                                disk_size_gb=size)
    await ctx.change(caller, Append(streams.disk_offering(offering_id), [event], NO_STREAM))
    return {"diskoffering": {"id": offering_id, "name": name, "displaytext": event.display_text,
                             "disksize": size}}


@command("deleteServiceOffering", role=ADMIN, response=schema.SUCCESS,
         description="Deletes a compute offering (admin): it is listed and deployable no "
         "more; VMs that have it keep it.", params=(
             Param("id", "uuid", "the compute offering", required=True,
                   entity=schema.SERVICE_OFFERING),
         ))
async def delete_service_offering(ctx: Context, params: Params, caller: Caller
                                  ) -> dict[str, Any]:
    return await _delete_offering(ctx, params, caller, streams.service_offering,
                                  offerings.check_delete_service)


@command("deleteDiskOffering", role=ADMIN, response=schema.SUCCESS,
         description="Deletes a disk offering (admin): it is listed and usable for new "
         "volumes no more; volumes that have it keep it.", params=(
             Param("id", "uuid", "the disk offering", required=True,
                   entity=schema.DISK_OFFERING),
         ))
async def delete_disk_offering(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _delete_offering(ctx, params, caller, streams.disk_offering,
                                  offerings.check_delete_disk)


async def _delete_offering(ctx: Context, params: Params, caller: Caller,
                           stream_of: Callable[[str], str],
                           check: Callable[[str, list[AnyEvent]], Event]) -> dict[str, Any]:
    """Delete the offering ``id`` names: its stream checked by ``check`` and appended to
    at the version checked."""
    offering_id = params.uuid("id")
    assert offering_id is not None
    stream = stream_of(offering_id)
    history = await Repository(ctx.store).events(stream)
    await ctx.change(caller, Append(stream, [check(offering_id, history)], len(history)))
    return {"success": True}


@command("updateConfiguration", role=ADMIN, response=schema.CONFIGURATION,
         description="Sets a primary storage pool's full-clone setting (its zone's kind's: "
         f"{', '.join(FULL_CLONE_SETTINGS)}) (admin).", params=(
             Param("name", "string", "the setting", required=True),
             Param("value", "string", "true or false", required=True),
             Param("storageid", "uuid", "the primary storage pool it is set for",
                   entity=schema.POOL),
         ))
async def update_configuration(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    name = params.text("name")
    value = params.text("value")
    pool_id = params.uuid("storageid")
    assert name is not None and value is not None
    repo = Repository(ctx.store)
    pool = (await repo.pool(pool_id)).live if pool_id is not None else None
    kind = drivers.for_zone(await repo.zone_kind(pool.zone_id)) if pool else None
    setting = kind.full_clone_setting if kind else None
    if name not in FULL_CLONE_SETTINGS and name != setting:
        raise ApiError(PARAM_ERROR, f"invalid parameter name: {name!r} is not a setting "
                       f"snapdeploy knows; it knows {', '.join(FULL_CLONE_SETTINGS)}")
    if pool_id is None:
        raise ApiError(PARAM_ERROR, f"missing parameter storageid: {name} is set per primary "
                       "storage pool")
    if value.lower() not in ("true", "false"):
        raise ApiError(PARAM_ERROR, f"invalid parameter value: {name} is true or false")
    if pool is None or kind is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter storageid: no storage pool "
                       f"{pool_id} exists")
    if name != setting:
        raise ApiError(PARAM_ERROR, f"invalid parameter name: storage pool {pool_id} is in a "
                       f"{kind.hypervisor} zone, whose pools take {setting}, not {name}")
    await ctx.change(caller, Append(streams.pool(pool_id), [
        PoolSettingChanged(pool_id=pool_id, name=name, value=value.lower())]))
    return {"configuration": {"name": name, "value": value.lower(), "scope": "storagepool",
                              "id": pool_id}}


@command("listConfigurations", role=ADMIN, response=schema.CONFIGURATION,
         description="Lists the settings snapdeploy knows (admin): with storageid, the pool's "
         "full-clone setting and its value; without, each kind's full-clone setting at its "
         "default, false (each is set per pool).", params=(
             Param("name", "string", "only this setting"),
             Param("storageid", "uuid", "the primary storage pool whose setting to show",
                   entity=schema.POOL),
             Param("keyword", "string", "only settings whose name or description holds "
                   "this"),
             *PAGING,
         ))
async def list_configurations(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    name = params.text("name")
    pool_id = params.uuid("storageid")
    keyword = params.text("keyword")
    if pool_id is None:
        rows = [{"name": setting, "value": "false", "defaultvalue": "false",
                 "scope": "global", "category": "Advanced", "isdynamic": True,
                 "description": "Whether VMs deployed on a primary storage pool are full "
                 "clones of their template (set per pool, with storageid)"}
                for setting in FULL_CLONE_SETTINGS]
    else:
        pool = await ctx.read.pool(pool_id)
        if pool is None:
            raise ApiError(PARAM_ERROR, f"invalid parameter storageid: no storage pool "
                           f"{pool_id} exists")
        setting = drivers.for_zone(pool.zone_kind).full_clone_setting
        rows = [{"name": setting, "value": pool.settings.get(setting, "false"),
                 "defaultvalue": "false", "scope": "storagepool", "id": pool.id,
                 "category": "Advanced", "isdynamic": True,
                 "description": "Whether VMs deployed on this primary storage pool are full "
                 "clones of their template"}]
    found = narrowed(rows, Filter(keyword=keyword),
                     lambda r: name is None or r["name"] == name)
    items, total = paged(found, params.page())
    return listing("configuration", items, total)


@command("syncInventory", is_async=True, role=ADMIN, since=OURS, response=schema.SUCCESS,
         params=(), description="Reads every hypervisor again: new hosts, pools, networks, "
         "VMs and snapshots appear (admin).")
async def sync_inventory(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.INVENTORY, [
        InventorySyncRequested(job_id=job_id),
        JobSubmitted(job_id=job_id, cmd=SYNC_INVENTORY_CMD, instance_type="Zone",
                     instance_id=job_id, account_id=caller.account_id, user_id=caller.user_id),
    ]))
    return {"jobid": job_id}
