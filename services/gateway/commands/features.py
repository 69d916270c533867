"""What a CloudStack client lists while it works, for features snapdeploy's zones do not use:
public IP addresses, NAT and firewall rules, load balancers, security and affinity groups,
SSH key pairs, projects, tags, VPCs and routers. Each is answered as CloudStack answers a
zone where the feature is unused: an empty list, so a client's listing goes on (Libcloud's
``list_nodes`` reads public addresses and both kinds of forwarding rules for every node).

listNetworkOfferings answers the one offering every guest network shows."""

from __future__ import annotations

from typing import Any

from services.gateway import views
from services.gateway.api import (
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

# The filters CloudStack's list commands take; accepted, and nothing matches them.
_FILTERS = (
    Param("id", "uuid", "only the object with this ID"),
    Param("keyword", "string", "only objects whose name holds this"),
    Param("zoneid", "uuid", "only objects in this zone"),
    Param("account", "string", "only the objects of this account (with domainid)"),
    Param("domainid", "uuid", "only objects of this domain"),
    Param("projectid", "uuid", "only objects of this project"),
    Param("listall", "boolean", "every account's the caller may see"),
    Param("isrecursive", "boolean", "with the domain's subdomains"),
    Param("virtualmachineid", "uuid", "only objects of this VM"),
    Param("ipaddressid", "uuid", "only objects of this public IP address"),
    Param("networkid", "uuid", "only objects of this network"),
    Param("vpcid", "uuid", "only objects of this VPC"),
    Param("name", "string", "only objects with this name"),
    Param("resourcetype", "string", "only tags of this kind of resource"),
    Param("resourceid", "string", "only tags of this resource"),
    *PAGING,
)

# command -> (the key its items are answered under, what an item is)
UNUSED = {
    "listPublicIpAddresses": ("publicipaddress", "a public IP address"),
    "listPortForwardingRules": ("portforwardingrule", "a port forwarding rule"),
    "listIpForwardingRules": ("ipforwardingrule", "a static NAT rule"),
    "listFirewallRules": ("firewallrule", "a firewall rule"),
    "listEgressFirewallRules": ("firewallrule", "an egress firewall rule"),
    "listLoadBalancerRules": ("loadbalancerrule", "a load balancer rule"),
    "listSecurityGroups": ("securitygroup", "a security group"),
    "listSSHKeyPairs": ("sshkeypair", "an SSH key pair"),
    "listAffinityGroups": ("affinitygroup", "an affinity group"),
    "listProjects": ("project", "a project"),
    "listTags": ("tag", "a resource tag"),
    "listVPCs": ("vpc", "a VPC"),
    "listRouters": ("router", "a virtual router"),
}


def _register_unused(name: str, key: str, what: str) -> None:
    shape = Shape(key, what, (Field("id", "string", "its UUID"),), relates=False)

    async def empty(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
        return listing(key, [])

    command(name, description=f"Lists {what}s: none, snapdeploy's zones do not use them.",
            response=shape, params=_FILTERS)(empty)


for _name, (_key, _what) in UNUSED.items():
    _register_unused(_name, _key, _what)


NETWORK_OFFERING = Shape("networkoffering", "a network offering", (
    Field("id", "string", "its UUID"), Field("name", "string", "its name"),
    Field("displaytext", "string", "what it is"),
    Field("guestiptype", "string", "Shared"),
    Field("traffictype", "string", "Guest"),
    Field("state", "string", "Enabled"),
))


@command("listNetworkOfferings", description="Lists the network offerings: the one every "
         "guest network shows (shared, guest traffic).", response=NETWORK_OFFERING,
         params=(Param("id", "uuid", "only the offering with this ID"),
                 Param("name", "string", "only the offering with this name"),
                 Param("keyword", "string", "only offerings whose name holds this"),
                 Param("zoneid", "uuid", "accepted; every zone has it"),
                 Param("guestiptype", "string", "only offerings of this guest IP type"),
                 Param("forvpc", "boolean", "only offerings for VPCs (none)"),
                 *PAGING))
async def list_network_offerings(ctx: Context, params: Params, caller: Caller
                                 ) -> dict[str, Any]:
    offering = views.network_offering()
    wanted_id, name, keyword = params.uuid("id"), params.text("name"), params.text("keyword")
    guest_type, for_vpc = params.text("guestiptype"), params.boolean("forvpc")
    params.uuid("zoneid")
    matches = ((wanted_id is None or wanted_id == offering["id"])
               and (name is None or name.lower() == offering["name"].lower())
               and (keyword is None or keyword.lower() in offering["name"].lower())
               and (guest_type is None or guest_type.lower() == "shared")
               and not for_vpc)
    items = [offering] if matches else []
    page = params.page()
    shown = items if page is None else items[page.offset:page.offset + page.limit]
    return listing("networkoffering", shown, len(items))
