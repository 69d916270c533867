"""Accounts, users and API keys: createAccount, listAccounts, registerUserKeys.

Upstream's parameters and response shapes. Passwords are accepted and not kept: the API is
used with key pairs, and no secret ever enters the event store (the secret key lives in the
``api_keys`` table only, sealed; see ``shared.apikeys``).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from proto import streams
from proto.events import AccountCreated, UserCreated, UserKeysRegistered
from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing, require_admin
from shared import apikeys as keys
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, Repository

ROLES = {"0": "user", "1": "admin"}


@command("createAccount")
async def create_account(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    require_admin(caller, "createAccount")
    username = params.text("username", required=True)
    params.text("password", required=True, max_length=255)
    email = params.text("email", required=True)
    firstname = params.text("firstname", required=True)
    lastname = params.text("lastname", required=True)
    account_type = params.text("accounttype") or "0"
    if account_type not in ROLES:
        raise ApiError(PARAM_ERROR, f"invalid parameter accounttype: {account_type!r}; use 0 "
                       "for a user account or 1 for an admin")
    assert username and email and firstname and lastname
    name = params.text("account") or username
    if await ctx.store.name_taken(name, username):
        raise ApiError(PARAM_ERROR, f"invalid parameter account: an account or user named "
                       f"{name!r} exists already")
    account_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    await ctx.change(
        caller,
        Append(streams.account(account_id), [AccountCreated(
            account_id=account_id, name=name, role=ROLES[account_type])], NO_STREAM),
        Append(streams.user(user_id), [UserCreated(
            user_id=user_id, account_id=account_id, username=username, email=email,
            firstname=firstname, lastname=lastname)], NO_STREAM),
    )
    account = await ctx.read.account(caller.viewer, account_id)
    if account is None or not account.users:  # the projector has not caught up: answer
        return {"account": {"id": account_id, "name": name, "accounttype": int(account_type),
                            "user": [{"id": user_id, "username": username,
                                      "accountid": account_id}]}}
    return {"account": views.account(account)}


@command("listAccounts")
async def list_accounts(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    accounts = await ctx.read.accounts(caller.viewer, account_id=params.uuid("id"),
                                       name=params.text("name"))
    return listing("account", [views.account(a) for a in accounts])


@command("registerUserKeys")
async def register_user_keys(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    user_id = params.uuid("id", required=True)
    assert user_id is not None
    repo = Repository(ctx.store)
    user = await repo.user(user_id)
    # A user registers keys for themselves only, an administrator for anyone.
    if user is None or not (caller.is_admin or user_id == caller.user_id):
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no user {user_id} is visible to "
                       "your account")
    account = await repo.account(user.account_id)
    api_key, secret_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with ctx.store.pool.acquire() as conn:
        # As in CloudStack, the new pair replaces the user's others at once.
        await keys.replace_user_keys(
            conn, keys.box(ctx.settings), api_key=api_key, secret=secret_key,
            account_id=user.account_id, account_name=account.name if account else "",
            user_id=user_id, user_name=user.username, role=account.role if account else "user")
    await ctx.change(caller, Append(streams.user(user_id), [UserKeysRegistered(
        user_id=user_id, account_id=user.account_id, api_key=api_key)]))
    return {"userkeys": {"apikey": api_key, "secretkey": secret_key}}
