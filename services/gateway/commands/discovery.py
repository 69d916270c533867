"""What clients ask before anything else: which commands exist (listApis, as CloudMonkey's
`sync` and Marvin's code generator ask) and what the cloud can do (listCapabilities)."""

from __future__ import annotations

from typing import Any

from services.gateway import apidoc, schema
from services.gateway.api import UPSTREAM, Caller, Context, Param, Params, command, listing

# The CloudStack release whose API shapes snapdeploy follows.
CLOUDSTACK_VERSION = UPSTREAM


@command("listApis", response=schema.API,
         description="Lists the API commands the caller's role may call, each with its "
         "parameters and response fields.", params=(
             Param("name", "string", "only the command with this name (any case)"),
         ))
async def list_apis(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    name = params.text("name")
    apis = [apidoc.api_entry(c) for c in apidoc.visible(apidoc.commands(), caller.is_admin)
            if name is None or c.name.lower() == name.lower()]
    return listing("api", apis)


@command("listCapabilities", response=schema.CAPABILITIES, params=(), answer="object",
         description="Lists what this cloud offers, in CloudStack's capability names.")
async def list_capabilities(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return {"capability": {
        "cloudstackversion": CLOUDSTACK_VERSION,
        "userpublictemplateenabled": False,
        "supportELB": "false",
        "projectinviterequired": False,
        "allowusercreateprojects": False,
        "customdiskofferingminsize": 1,
        "customdiskofferingmaxsize": 1024,
        "kvmsnapshotenabled": False,
        "kubernetesserviceenabled": False,
        "dynamicrolesenabled": False,
        "allowuserviewdestroyedvm": True,
        "allowuserexpungerecovervm": True,
    }}
