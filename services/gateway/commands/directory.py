"""What CloudStack clients and test harnesses look up before they act: the domain, users,
guest OS types and categories, hypervisors, capacity; a VM's NICs; and a guest network's
address range (updateNetwork)."""

from __future__ import annotations

from typing import Any

from proto import streams
from services.gateway import views
from services.gateway.api import (
    ADMIN,
    PAGING,
    Caller,
    Context,
    Field,
    Param,
    Params,
    Shape,
    command,
    listing,
)
from shared import drivers
from shared.domain import network as _network
from shared.domain.accounts import (
    OS_CATEGORY,
    OS_CATEGORY_ID,
    OS_TYPES,
    ROOT_DOMAIN_ID,
)
from shared.domain.listing import Filter, narrowed, paged
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import Append, Repository


def _shape(key: str, what: str, *fields: tuple[str, str, str]) -> Shape:
    return Shape(key, what, tuple(Field(n, t, d) for n, t, d in fields))


_ID = ("id", "string", "its UUID")
_NAME = ("name", "string", "its name")

DOMAIN = _shape("domain", "a domain", _ID, _NAME, ("level", "integer", "0: the root"),
                ("path", "string", "ROOT"), ("haschild", "boolean", "false"))
USER = _shape("user", "a user", _ID, ("username", "string", "the user's name"),
              ("account", "string", "the name of the user's account"),
              ("accountid", "string", "the UUID of the user's account"),
              ("domainid", "string", "the UUID of its domain"),
              ("state", "string", "enabled"))
OS_TYPE = _shape("ostype", "a guest OS type", _ID, ("description", "string", "its name"),
                 ("oscategoryid", "string", "the UUID of its category"))
OS_CATEGORY_SHAPE = _shape("oscategory", "a guest OS category", _ID, _NAME)
HYPERVISOR = _shape("hypervisor", "a hypervisor of the cloud's zones", _NAME)
CAPACITY = _shape("capacity", "a zone's capacity of one kind",
                  ("type", "integer", "0 memory, 1 CPU, 2 primary storage"),
                  ("name", "string", "MEMORY, CPU or STORAGE"),
                  ("zoneid", "string", "the UUID of the zone"),
                  ("capacitytotal", "long", "how much there is"),
                  ("capacityused", "long", "how much is taken"),
                  ("percentused", "string", "the share taken"))
NIC = _shape("nic", "a VM's network interface", _ID,
             ("networkid", "string", "the UUID of its network"),
             ("ipaddress", "string", "the guest address its network gave it"),
             ("macaddress", "string", "its MAC address"))
NETWORK = _shape("network", "a guest network", _ID, _NAME,
                 ("cidr", "string", "the range its guest addresses come from"),
                 ("gateway", "string", "the range's gateway"))

_PAGE_FILTERS = (Param("id", "uuid", "only the object with this ID"),
                 Param("name", "string", "only objects with this name"),
                 Param("keyword", "string", "only objects whose name holds this"),
                 *PAGING)


def _filter(params: Params) -> Filter:
    return Filter(id=params.uuid("id"), name=params.text("name"),
                  keyword=params.text("keyword"))


@command("listDomains", description="Lists the domains: ROOT, which every account is in.",
         response=DOMAIN, params=(*_PAGE_FILTERS,
                                  Param("level", "integer", "only domains at this level"),
                                  Param("listall", "boolean", "accepted"),
                                  Param("details", "string", "accepted")))
async def list_domains(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    level = params.integer("level")
    params.boolean("listall")
    params.text("details")
    found = narrowed([views.domain()], _filter(params),
                     lambda d: level is None or d["level"] == level)
    items, total = paged(found, params.page())
    return listing("domain", items, total)


@command("listUsers", description="Lists the users of the caller's account (every account's "
         "for an admin).", response=USER, params=(
             Param("id", "uuid", "only the user with this ID"),
             Param("username", "string", "only the user with this name"),
             Param("account", "string", "only the users of the account of this name"),
             Param("accountid", "uuid", "only the users of this account"),
             Param("domainid", "uuid", "only users of this domain (ROOT)"),
             Param("accounttype", "integer", "0 user, 1 admin", maximum=2),
             Param("state", "string", "only users in this state"),
             Param("keyword", "string", "only users whose name holds this"),
             Param("listall", "boolean", "accepted"), *PAGING))
async def list_users(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    user_id, username = params.uuid("id"), params.text("username")
    account_name, account_id = params.text("account"), params.uuid("accountid")
    domain_id, account_type = params.uuid("domainid"), params.integer("accounttype")
    params.boolean("listall")
    if domain_id is not None and domain_id != ROOT_DOMAIN_ID:
        return {}
    users = [views.user(u, a.name, a.is_admin)
             for a in await ctx.read.accounts(caller.viewer, account_id=account_id,
                                              name=account_name)
             for u in a.users]
    keyword = params.text("keyword")
    found = narrowed(
        users, Filter(id=user_id, state=params.text("state")),
        lambda u: username is None or u["username"].lower() == username.lower(),
        lambda u: keyword is None or keyword.lower() in u["username"].lower(),
        lambda u: account_type is None or u["accounttype"] == account_type)
    items, total = paged(found, params.page())
    return listing("user", items, total)


def _os_type(type_id: str, name: str) -> dict[str, Any]:
    return {"id": type_id, "description": name, "name": name,
            "oscategoryid": OS_CATEGORY_ID, "oscategoryname": OS_CATEGORY,
            "isuserdefined": False}


@command("listOsTypes", description="Lists the guest OS types snapdeploy shows (a seeded "
         "template's guest is not known: Other (64-bit)).", response=OS_TYPE, params=(
             Param("id", "uuid", "only the type with this ID"),
             Param("description", "string", "only the type with this name"),
             Param("oscategoryid", "uuid", "only types of this category"),
             Param("keyword", "string", "only types whose name holds this"), *PAGING))
async def list_os_types(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    description, category = params.text("description"), params.uuid("oscategoryid")
    found = narrowed(
        [_os_type(i, n) for i, n in OS_TYPES.items()],
        Filter(id=params.uuid("id"), keyword=params.text("keyword")),
        lambda t: description is None or t["description"].lower() == description.lower(),
        lambda t: category is None or t["oscategoryid"] == category)
    items, total = paged(found, params.page())
    return listing("ostype", items, total)


@command("listOsCategories", description="Lists the guest OS categories: Other.",
         response=OS_CATEGORY_SHAPE, params=_PAGE_FILTERS)
async def list_os_categories(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    found = narrowed([{"id": OS_CATEGORY_ID, "name": OS_CATEGORY}], _filter(params))
    items, total = paged(found, params.page())
    return listing("oscategory", items, total)


@command("listHypervisors", description="Lists the hypervisors of the cloud's zones (of one "
         "zone with zoneid).", response=HYPERVISOR,
         params=(Param("zoneid", "uuid", "only this zone's hypervisor"),))
async def list_hypervisors(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    zones = (await ctx.read.zones(zone_id=params.uuid("zoneid"))).items
    names = sorted({drivers.for_zone(z.zone_kind).hypervisor for z in zones})
    return listing("hypervisor", [{"name": n} for n in names])


@command("listCapacity", description="Lists each zone's memory, CPU and primary storage: "
         "how much there is and how much is taken.", response=CAPACITY, role=ADMIN, params=(
             Param("zoneid", "uuid", "only this zone"),
             Param("type", "integer", "only this kind: 0 memory, 1 CPU, 2 primary storage",
                   maximum=99),
             Param("sortby", "string", "accepted"),
             Param("fetchlatest", "boolean", "accepted"), *PAGING))
async def list_capacity(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    zone_id, kind = params.uuid("zoneid"), params.integer("type")
    params.text("sortby")
    params.boolean("fetchlatest")
    zones = (await ctx.read.zones(zone_id=zone_id)).items
    hosts = (await ctx.read.hosts(zone_id=zone_id)).items
    pools = (await ctx.read.pools(zone_id=zone_id)).items
    rows = []
    for z in zones:
        zone_hosts = [h for h in hosts if h.zone_id == z.id]
        zone_pools = [p for p in pools if p.zone_id == z.id]
        figures = (
            (0, "MEMORY", sum(h.memory_bytes for h in zone_hosts),
             sum(h.reserved_memory_mb for h in zone_hosts) * 1024 * 1024),
            (1, "CPU", sum(h.cpu_cores * h.cpu_mhz for h in zone_hosts),
             sum(h.reserved_cpu_mhz for h in zone_hosts)),
            (2, "STORAGE", sum(p.capacity_bytes for p in zone_pools),
             sum(p.capacity_bytes - p.free_bytes for p in zone_pools)),
        )
        for number, name, total, used in figures:
            if kind is None or kind == number:
                rows.append({"type": number, "name": name, "zoneid": z.id, "zonename": z.name,
                             "capacitytotal": total, "capacityused": used,
                             "percentused": f"{100 * used / total:.2f}" if total else "0"})
    items, count = paged(rows, params.page())
    return listing("capacity", items, count)


@command("listNics", description="Lists a VM's network interfaces, each with the guest "
         "address its network gave it.", response=NIC, params=(
             Param("virtualmachineid", "uuid", "the VM", required=True),
             Param("nicid", "uuid", "only this NIC"),
             Param("networkid", "uuid", "only NICs on this network"),
             Param("keyword", "string", "only NICs whose address, MAC address or network's "
                   "name holds this"), *PAGING))
async def list_nics(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid")
    nic_id, network_id = params.uuid("nicid"), params.uuid("networkid")
    keyword = params.text("keyword")
    assert vm_id is not None
    vm = await ctx.read.vm(caller.viewer, vm_id)
    if vm is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter virtualmachineid: no virtual machine "
                       f"{vm_id} is visible to your account")
    names = await ctx.read.names(n.network_id for n in vm.nics)
    nics = [views.nic(n, vm.id, i, names) for i, n in enumerate(vm.nics)]
    found = narrowed(nics, Filter(id=nic_id),
                     lambda n: network_id is None or n["networkid"] == network_id,
                     lambda n: keyword is None or Filter(keyword=keyword).keeps(
                         n, keyword_fields=("ipaddress", "macaddress", "networkname")))
    items, total = paged(found, params.page())
    return listing("nic", items, total)


async def _existing(ctx: Context, network_id: str) -> _network.Network:
    network = await Repository(ctx.store).network(network_id)
    if network.imported is None or network.gone:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no network {network_id} exists")
    return network


@command("updateNetwork", description="Sets the IPv4 range a guest network's addresses come "
         "from (cidr, gateway); the addresses VMs hold now must lie in it.", response=NETWORK,
         role=ADMIN, params=(
             Param("id", "uuid", "the network", required=True),
             Param("cidr", "string", "the range, e.g. 10.1.1.0/24", length=43),
             Param("gateway", "string", "its gateway (default: its first address)",
                   length=39),
             Param("name", "string", "accepted; the network keeps its hypervisor's name"),
             Param("displaytext", "string", "accepted"),
         ))
async def update_network(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    network_id = params.uuid("id")
    cidr, gateway = params.text("cidr"), params.text("gateway")
    params.text("name")
    params.text("displaytext")
    assert network_id is not None
    if cidr is not None or gateway is not None:
        # Decided in the planners' turn: the addresses a busy network's VMs take and free
        # would otherwise move its stream on between this read and its commit, again and
        # again.
        async with ctx.store.decision_lock(_network.ADDRESS_DECISIONS):
            network = await _existing(ctx, network_id)
            changed = _network.check_range(network, cidr, gateway)
            position = await ctx.append(caller, Append(streams.network(network_id), [changed],
                                                       network.version))
        await ctx.read.reach(position)
    else:
        await _existing(ctx, network_id)
    shown = (await ctx.read.networks(network_id=network_id)).items
    if not shown:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no network {network_id} exists")
    names = await ctx.read.names([shown[0].zone_id])
    return {"network": views.network(shown[0], names)}

