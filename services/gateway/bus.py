"""The NATS door: deploy requests published by other programs, answered like the API.

A request is authenticated as an HTTP call is: its signature over the call's parameters is
checked against the API key's secret (``caller_for``, the HTTP API's own check), and it must
carry ``expires`` (signature version 3). Knowing an API key, the public half of a key pair,
deploys nothing.

The gateway also keeps nats-server's authorization file current (``nats_auth_file``): one
NATS user per live API key (``shared.natsauth``), rewritten when it starts and whenever an
event says keys changed, then reloaded by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from proto.commands import DEPLOY_SUBJECT, CommandRejected, DeployVirtualMachine
from services.gateway.api import Context, Params
from services.gateway.http import AUTH_FAILED, caller_for, key_owner
from shared import apikeys as keys
from shared import metrics, natsauth
from shared.errors import AUTH_ERROR, INTERNAL_ERROR, PARAM_ERROR, ApiError
from shared.log import correlation

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(DeployVirtualMachine)
_encoder = msgspec.json.Encoder()


async def serve_deploys(nc: NATS, ctx: Context) -> None:
    """Answer deploy requests on ``DEPLOY_SUBJECT`` (queue group ``gateway``)."""

    async def on_request(msg: Msg) -> None:
        request_id = str(uuid.uuid4())
        with correlation(request_id):
            try:
                reply = await handle(ctx, msg.data)
            except Exception:
                log.exception("deploy request on NATS failed")
                reply = CommandRejected(errorcode=INTERNAL_ERROR, errortext=(
                    f"internal error; the gateway's log has it under {request_id}"))
            if msg.reply:
                try:
                    await msg.respond(_encoder.encode(reply))
                except Exception:
                    log.exception("could not answer a deploy request on NATS")

    if ctx.settings.nats_auth_file:
        await refresh_nats_identities(ctx)
        _watchers.add(asyncio.ensure_future(_follow_key_changes(ctx)))
    await nc.subscribe(DEPLOY_SUBJECT, queue="gateway", cb=on_request)
    log.info("answering deploy requests on NATS subject %s", DEPLOY_SUBJECT)


# The follower of key changes reads the events committed at most this often.
KEY_CHANGES_PAUSE_S = 0.25
# Events after which the set of NATS identities may differ.
KEY_EVENTS = frozenset({"UserKeysRegistered", "AccountCreated", "UserCreated",
                        "AccountRemoved", "UserRemoved", "AccountDeleted", "UserDeleted"})
_watchers: set[asyncio.Future[None]] = set()


async def client_keys(ctx: Context) -> list[natsauth.ClientKey]:
    """Every live API key with its secret, read through the gateway's own key lookup (the
    one that checks signatures), so NATS identities follow however keys are stored."""
    async with ctx.store.pool.acquire() as conn:
        names = await keys.api_keys(conn)
    out = []
    for api_key in names:
        found = await key_owner(ctx, api_key)
        if found is not None:  # revoked, or unreadable
            caller, secret = found
            out.append(natsauth.ClientKey(api_key, secret, caller.account_id, caller.is_admin))
    return out


async def refresh_nats_identities(ctx: Context) -> None:
    """Rewrite the NATS authorization file from the key store and have nats-server reload
    it (nothing without ``nats_auth_file``). Call after any change of API keys."""
    if not ctx.settings.nats_auth_file:
        return
    live = await client_keys(ctx)
    written = await asyncio.to_thread(natsauth.refresh, Path(ctx.settings.nats_auth_file), live)
    log.info("NATS identities rewritten: %d API keys", written)


async def _follow_key_changes(ctx: Context) -> None:
    """Refresh the NATS identities after each event that may change them, from now on."""
    while True:
        try:
            async for batch in ctx.store.follow(await ctx.store.head(), idle_poll=1.0,
                                                notifications=ctx.notifications):
                if any(e.type in KEY_EVENTS for e in batch):
                    await refresh_nats_identities(ctx)
                # One read covers what was committed meanwhile: not one read per commit.
                await asyncio.sleep(KEY_CHANGES_PAUSE_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not refresh the NATS identities; trying again in 5s")
            with contextlib.suppress(Exception):
                await refresh_nats_identities(ctx)
            await asyncio.sleep(5)


async def handle(ctx: Context, data: bytes) -> msgspec.Struct:
    from services.gateway.commands.vms import deploy_params, submit_deploy

    try:
        request = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        metrics.MALFORMED_MESSAGES.labels("gateway").inc()
        return CommandRejected(errorcode=PARAM_ERROR,
                               errortext=f"malformed request: {str(exc)[:200]}")
    try:
        if not request.signature or not request.expires:
            raise ApiError(AUTH_ERROR, f"{AUTH_FAILED}: a request on NATS must be signed, "
                           "with signatureversion 3 and expires")
        caller = await caller_for(ctx, [*request.signed_params(),
                                        ("signature", request.signature)])
        # The same checks as the HTTP API's parameters.
        checked = deploy_params(Params("deployVirtualMachine", request.fields()),
                                request.apikey)
        accepted = await submit_deploy(ctx, caller, checked)
    except ApiError as exc:
        return CommandRejected(errorcode=exc.code, errortext=exc.text)
    log.info("accepted deploy %s (job %s) from NATS", accepted.id, accepted.jobid)
    return accepted
