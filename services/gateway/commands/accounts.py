"""Accounts, users and API keys: createAccount, listAccounts, deleteAccount,
registerUserKeys.

Upstream's parameters and response shapes. A password is kept only as a salted hash, for
``login`` (``shared.passwords``), and no secret ever enters the event store (the secret key
lives in the ``api_keys`` table only, sealed; see ``shared.apikeys``).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from proto import streams
from proto.events import AccountCreated, JobSubmitted, UserCreated, UserKeysRegistered
from services.gateway import schema, views
from services.gateway.api import (
    ADMIN,
    PAGING,
    Caller,
    Context,
    Param,
    Params,
    command,
    listing,
)
from shared import apikeys as keys
from shared import passwords
from shared.domain import accounts as _accounts
from shared.domain.job import DELETE_ACCOUNT_CMD, succeeded
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, Repository

ROLES = {0: "user", 1: "admin"}


@command("createAccount", role=ADMIN, response=schema.ACCOUNT,
         description="Creates an account with its first user (admin).", params=(
             Param("username", "string", "the first user's name (unique)", required=True),
             Param("password", "string", "the first user's password, for login (kept as a "
                   "salted hash)", required=True),
             Param("email", "string", "the user's email", required=True),
             Param("firstname", "string", "the user's first name", required=True),
             Param("lastname", "string", "the user's last name", required=True),
             Param("accounttype", "integer", "0 for a user account (default), 1 for an admin"),
             Param("account", "string", "the account's name (unique; default: username)"),
         ))
async def create_account(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    username = params.text("username")
    password = params.text("password")
    email = params.text("email")
    firstname = params.text("firstname")
    lastname = params.text("lastname")
    account_type = params.integer("accounttype") or 0
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
    await passwords.remember_account_password(
        ctx.store, user_id=user_id, user_name=username, account_id=account_id, account_name=name,
        role=ROLES[account_type], password=password)
    account = await ctx.read.account(caller.viewer, account_id)
    if account is None or not account.users:  # the projector has not caught up: answer
        return {"account": {"id": account_id, "name": name, "accounttype": account_type,
                            "user": [{"id": user_id, "username": username,
                                      "accountid": account_id}]}}
    return {"account": views.account(account)}


@command("listAccounts", response=schema.ACCOUNT,
         description="Lists the caller's account (every account for an admin) with its "
         "users.", params=(
             Param("id", "uuid", "only the account with this ID", entity=schema.ACCOUNT),
             Param("name", "string", "only the account with this name"),
             Param("keyword", "string", "only accounts whose name holds this text"),
             *PAGING,
         ))
async def list_accounts(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    found = await ctx.read.accounts_page(
        caller.viewer, account_id=params.uuid("id"), name=params.text("name"),
        keyword=params.text("keyword"), paging=params.page())
    return listing("account", [views.account(a) for a in found.items], found.total)


@command("registerUserKeys", response=schema.USER_KEYS,
         description="Makes a new API key pair for a user (the caller, or anyone for an "
         "admin); it replaces the user's others at once.", params=(
             Param("id", "uuid", "the user's ID", required=True),
         ))
async def register_user_keys(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    user_id = params.uuid("id")
    assert user_id is not None
    repo = Repository(ctx.store)
    user = await repo.user(user_id)
    # A user registers keys for themselves only, an administrator for anyone.
    if user is None or not (caller.is_admin or user_id == caller.user_id):
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no user {user_id} is visible to "
                       "your account")
    account = await repo.account(user.account_id)
    if account is None:  # deleted with its users
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no user {user_id} is visible to "
                       "your account")
    api_key, secret_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with ctx.store.pool.acquire() as conn:
        # As in CloudStack, the new pair replaces the user's others at once.
        await keys.replace_user_keys(
            conn, keys.box(ctx.settings), api_key=api_key, secret=secret_key,
            account_id=user.account_id, account_name=account.name, user_id=user_id,
            user_name=user.username, role=account.role)
    if ctx.keys is not None:  # the others hear of it as soon as PostgreSQL tells them
        ctx.keys.forget()
    await ctx.change(caller, Append(streams.user(user_id), [UserKeysRegistered(
        user_id=user_id, account_id=user.account_id, api_key=api_key)]))
    return {"userkeys": {"apikey": api_key, "secretkey": secret_key}}


@command("deleteAccount", role=ADMIN, is_async=True, response=schema.SUCCESS,
         description="Deletes an account that holds nothing any more (no VM, volume or "
         "template), with its users; their API keys stop working at once (admin).", params=(
             Param("id", "uuid", "the account", required=True, entity=schema.ACCOUNT),
         ))
async def delete_account(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    """CloudStack removes what an account holds with it; snapdeploy refuses, naming what
    it still holds, so a tenant's VMs are never removed as a side effect. The names of a
    deleted account and its users stay taken: the event history keeps naming them."""
    account_id = params.uuid("id")
    assert account_id is not None
    stream = streams.account(account_id)
    history = await Repository(ctx.store).events(stream)
    async with ctx.store.account_decision(account_id) as held:
        users = await ctx.store.account_users(account_id)
        deleted = _accounts.check_delete(account_id, _accounts.account(history), held,
                                         caller.account_id, users)
        job_id = str(uuid.uuid4())
        await ctx.change(caller, Append(stream, [
            deleted,
            JobSubmitted(job_id=job_id, cmd=DELETE_ACCOUNT_CMD, instance_type="Account",
                         instance_id=account_id, account_id=caller.account_id,
                         user_id=caller.user_id),
            succeeded(job_id)], len(history)))
    async with ctx.store.pool.acquire() as conn:
        # Its users' keys are revoked, as registerUserKeys revokes a user's older pairs;
        # their console sessions end and their passwords are forgotten.
        await keys.revoke_account(conn, account_id)
        await passwords.forget_account(conn, account_id)
    if ctx.keys is not None:
        ctx.keys.forget()
    return {"jobid": job_id}
