"""What clients ask before anything else: which commands exist (listApis, as CloudMonkey's
`sync` does) and what the cloud can do (listCapabilities)."""

from __future__ import annotations

from typing import Any

from services.gateway.api import COMMANDS, Caller, Context, Params, command, listing

# The CloudStack release whose API shapes snapdeploy follows.
CLOUDSTACK_VERSION = "4.20.0"


@command("listApis")
async def list_apis(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """The API commands this gateway answers (their parameters are not described)."""
    name = params.text("name")
    apis = [{"name": c.name, "description": c.description or c.name, "isasync": c.is_async,
             "since": CLOUDSTACK_VERSION, "type": "", "related": "", "params": [],
             "response": []}
            for c in sorted(COMMANDS.values(), key=lambda c: c.name)
            if name is None or c.name.lower() == name.lower()]
    return listing("api", apis)


@command("listCapabilities")
async def list_capabilities(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """What this cloud offers, in CloudStack's capability names."""
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
