"""The HTTP side of the gateway: /client/api with CloudStack signing or a login session,
errors and metrics."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from services.gateway import apidoc, auth, session
from services.gateway.api import COMMANDS, MAX_PARAM_LENGTH, Caller, Context, Params
from shared import apikeys as keys
from shared import metrics
from shared.errors import AUTH_ERROR, INTERNAL_ERROR, PARAM_ERROR, UNSUPPORTED, ApiError
from shared.log import correlation

log = logging.getLogger(__name__)

CONTEXT = web.AppKey("context", Context)
AUTH_FAILED = "unable to verify user credentials and/or request signature"


async def request_params(request: web.Request) -> list[tuple[str, str]]:
    """Query string and form body, in the order sent."""
    pairs: list[tuple[str, str]] = list(request.query.items())
    if request.method == "POST":
        form: MultiMapping[Any] = await request.post()
        pairs.extend((k, v) for k, v in form.items() if isinstance(v, str))
    return pairs


async def key_owner(ctx: Context, api_key: str) -> tuple[Caller, str] | None:
    """The owner and secret key of a live ``api_key``; None for an unknown or revoked one."""
    if "\x00" in api_key or len(api_key) > 255:
        return None  # no key looks like that (and PostgreSQL text cannot hold a NUL)
    if ctx.keys is not None:
        found = await ctx.keys.lookup(api_key)
    else:
        async with ctx.store.pool.acquire() as conn:
            found = await keys.lookup(conn, keys.box(ctx.settings), api_key)
    if found is None:
        return None
    row, secret = found
    caller = Caller(row["account_id"], row["account_name"], row["user_id"], row["user_name"],
                    row["role"])
    return caller, secret


def check_request(pairs: list[tuple[str, str]], now: datetime,
                  max_ahead: timedelta) -> tuple[str, str]:
    """The api key and signature of a request whose shape allows verifying it; ApiError
    (431 for a malformed parameter name, 401 otherwise) for one that cannot be."""
    try:
        auth.check_names(pairs)
        values = {k.lower(): v for k, v in pairs}
        api_key, signature = values.get("apikey"), values.get("signature")
        if not api_key or not signature:
            raise ApiError(AUTH_ERROR, AUTH_FAILED)
        auth.check_expiry(values, now, max_ahead)
    except auth.Refused as refused:
        if refused.param_error:
            raise ApiError(PARAM_ERROR, refused.text) from None
        raise ApiError(AUTH_ERROR, f"{AUTH_FAILED}: {refused.text}") from None
    return api_key, signature


async def caller_for(ctx: Context, pairs: list[tuple[str, str]]) -> Caller:
    """The user whose key signed the request, or ApiError(401); a request whose parameter
    names or expiry make its signature meaningless is refused before the key is looked up."""
    api_key, signature = check_request(
        pairs, datetime.now(UTC), timedelta(seconds=ctx.settings.signature_max_expiry_s))
    found = await key_owner(ctx, api_key)
    if found is None:
        raise ApiError(AUTH_ERROR, AUTH_FAILED)
    caller, secret = found
    signed = [(k, v) for k, v in pairs if k.lower() != "signature"]
    if not auth.verify(signed, signature, secret):
        raise ApiError(AUTH_ERROR, AUTH_FAILED)
    return caller


async def caller_of(ctx: Context, request: web.Request, pairs: list[tuple[str, str]]) -> Caller:
    """The user of a signed request, or of a request made in a login session (the
    JSESSIONID cookie and the sessionkey parameter, unsigned); else ApiError(401)."""
    values = {k.lower(): v for k, v in pairs}
    if "apikey" not in values and "signature" not in values:
        found = await session.session_caller(ctx, request, values)
        if found is not None:
            return found
    return await caller_for(ctx, pairs)


async def answer(ctx: Context, request: web.Request, name: str,
                 pairs: list[tuple[str, str]]) -> web.Response:
    """One command's answer: login and logout act on sessions before any caller is known;
    every other command runs for the request's caller."""
    signed = any(k.lower() == "apikey" for k, _ in pairs)
    if name.lower() == "login":
        return await session.open_session(ctx, dict(pairs))
    if name.lower() == "logout" and not signed:
        return await session.close_session(ctx, request)
    caller = await caller_of(ctx, request, pairs)
    if not name:
        raise ApiError(PARAM_ERROR, "missing parameter command: name the API command")
    cmd = COMMANDS.get(name.lower())
    if cmd is None:
        raise ApiError(UNSUPPORTED, f"The given command '{name[:64]}' does not exist "
                       "or it is not available for user")
    body = await cmd.run(ctx, Params(cmd.name, dict(pairs)), caller)
    return envelope(name, body)


def envelope(command: str, body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({f"{command.lower()}response": body}, status=status)


async def api(request: web.Request) -> web.Response:
    """GET or POST /client/api: one CloudStack command."""
    ctx = request.app[CONTEXT]
    started = time.monotonic()
    request_id = str(uuid.uuid4())
    pairs = await request_params(request)
    values = {k.lower(): v for k, v in pairs}
    name = values.get("command", "")
    label = name.lower() if name.lower() in COMMANDS else "unknown"
    with correlation(request_id):
        try:
            if any(len(v) > MAX_PARAM_LENGTH for _, v in pairs):
                raise ApiError(PARAM_ERROR, f"a parameter is longer than {MAX_PARAM_LENGTH} "
                               "characters")
            response = await answer(ctx, request, name, pairs)
        except ApiError as exc:
            if exc.code >= 500:
                log.error("%s failed: %s", name, exc.text)
            response = envelope(name or "error", exc.body(), exc.code)
        except Exception:
            log.exception("%s failed unexpectedly", name)
            error = ApiError(INTERNAL_ERROR, f"internal error while running {name[:64]}; the "
                             f"gateway log has the details under correlation id {request_id}")
            response = envelope(name or "error", error.body(), error.code)
    metrics.HTTP_REQUESTS.labels(label, str(response.status)).inc()
    metrics.HTTP_SECONDS.labels(label).observe(time.monotonic() - started)
    return response


async def openapi(request: web.Request) -> web.Response:
    """GET /client/openapi.json: the OpenAPI 3 description of every command, from the
    command registry. Unsigned: it describes the API (as docs/api.md does), not any data."""
    return web.json_response(apidoc.openapi())
