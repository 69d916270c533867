"""Per-account resource limits: updateResourceLimit, listResourceLimits, and the check made
when a request that would hold more is accepted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from proto import streams
from proto.events import ResourceLimitUpdated
from services.gateway import schema
from services.gateway.api import ADMIN, Caller, Context, Param, Params, command, listing
from shared.domain import limits
from shared.domain.accounts import Account
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import Append, Repository
from shared.projections.read import Account as ReadAccount


@contextlib.asynccontextmanager
async def within_limits(ctx: Context, caller: Caller,
                        wanted: limits.Usage) -> AsyncIterator[None]:
    """Enter (to record the request) only if ``wanted`` keeps the caller's account within
    its limits; 535 naming the resource otherwise. Administrators are not limited, as
    CloudStack's root admins are not.

    One request per account is decided at a time (``Store.account_decision``: an advisory
    lock in PostgreSQL, so several gateways agree), on what the account holds as the
    store's write side has it (never behind the store, whether or not the projector runs)
    and the limits its stream sets: two concurrent requests cannot both take the last unit.
    """
    if caller.is_admin:
        yield
        return
    async with ctx.store.account_decision(caller.account_id) as held:
        set_limits = await Repository(ctx.store).account_limits(caller.account_id)
        limits.check(caller.account_name, held, wanted, set_limits)
        yield


def _view(name: str, account_id: str, set_limits: dict[str, int],
          res: limits.Resource) -> dict[str, Any]:
    return {"account": name, "accountid": account_id, "domain": "ROOT",
            "resourcetype": str(res.number), "resourcetypename": res.name,
            "max": limits.limit_of(res, set_limits)}


def _resource(params: Params) -> limits.Resource | None:
    value = params.text("resourcetype") or params.text("resourcetypename")
    if value is None:
        return None
    res = limits.resource(value)
    if res is None:
        known = ", ".join(f"{r.number} ({r.name})" for r in limits.RESOURCES)
        raise ApiError(PARAM_ERROR, f"invalid parameter resourcetype: {value[:32]!r} is not a "
                       f"resource snapdeploy limits; it limits {known}")
    return res


async def _named_account(ctx: Context, params: Params) -> Account:
    """The account an administrator names by ``account`` (its name) or ``accountid``, from
    the event store."""
    name = params.text("account")
    account_id = params.uuid("accountid")
    params.uuid("domainid")  # accepted: snapdeploy has one domain, ROOT
    if name is None and account_id is None:
        raise ApiError(PARAM_ERROR, "missing parameter account: name the account whose limit "
                       "to set")
    if account_id is None:
        assert name is not None
        account_id = await ctx.store.account_named(name)
    found = None if account_id is None else await Repository(ctx.store).account(account_id)
    if found is None or (name is not None and found.name.lower() != name.lower()):
        param = "account" if name is not None else "accountid"
        raise ApiError(PARAM_ERROR, f"invalid parameter {param}: no account "
                       f"{name or account_id} is visible to your account")
    return found


async def _listed_accounts(ctx: Context, params: Params, caller: Caller) -> list[ReadAccount]:
    """The accounts named by ``account`` (a name, as CloudStack takes it) or ``accountid``
    that the caller may see; without either, every account the caller may see."""
    name = params.text("account")
    account_id = params.uuid("accountid")
    params.uuid("domainid")  # accepted: snapdeploy has one domain, ROOT
    found = await ctx.read.accounts(caller.viewer, account_id=account_id, name=name)
    if (name is not None or account_id is not None) and not found:
        param = "account" if name is not None else "accountid"
        raise ApiError(PARAM_ERROR, f"invalid parameter {param}: no account "
                       f"{name or account_id} is visible to your account")
    return found


_KNOWN = ", ".join(f"{r.number} ({r.name})" for r in limits.RESOURCES)
_ACCOUNT_PARAMS = (
    Param("account", "string", "the account, by name"),
    Param("accountid", "uuid", "the account, by ID", entity=schema.ACCOUNT),
    Param("domainid", "uuid", "accepted: snapdeploy has one domain, ROOT"),
)


@command("updateResourceLimit", role=ADMIN, response=schema.RESOURCE_LIMIT,
         description="Sets how much of a resource an account may hold (admin); -1 is "
         "unlimited.", params=(
             Param("resourcetype", "string", f"the resource, by number or name: {_KNOWN}",
                   required=True),
             Param("resourcetypename", "string", "the resource, by name"),
             Param("max", "long", "the limit (default: the resource's default); -1 for none",
                   minimum=-1, maximum=2**62),
             *_ACCOUNT_PARAMS,
         ))
async def update_resource_limit(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    res = _resource(params)
    maximum = params.integer("max")
    account = await _named_account(ctx, params)
    assert res is not None
    if maximum is None:
        maximum = res.default
    set_limits = await Repository(ctx.store).account_limits(account.id)
    await ctx.change(caller, Append(streams.account(account.id), [ResourceLimitUpdated(
        account_id=account.id, resource=res.name, max=maximum)]))
    return {"resourcelimit": _view(account.name, account.id,
                                   {**set_limits, res.name: maximum}, res)}


@command("listResourceLimits", response=schema.RESOURCE_LIMIT,
         description="Lists each account's limits (a user sees their own account's).",
         params=(
             Param("resourcetype", "string", f"only this resource, by number or name: {_KNOWN}"),
             Param("resourcetypename", "string", "only this resource, by name"),
             *_ACCOUNT_PARAMS,
         ))
async def list_resource_limits(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    res = _resource(params)
    accounts = await _listed_accounts(ctx, params, caller)
    items = [_view(a.name, a.id, a.limits, r)
             for a in accounts for r in limits.RESOURCES if res in (None, r)]
    return listing("resourcelimit", items)
