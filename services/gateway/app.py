"""The gateway's aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from proto import streams
from proto.envelope import Metadata
from proto.events import AccountCreated, Event, UserCreated
from services.gateway import (
    commands,  # noqa: F401  (registers them)
    console,
)
from services.gateway.api import Context
from services.gateway.apidoc import OPENAPI_PATH
from services.gateway.audit import FANOUT, stream_events
from services.gateway.fanout import Fanout
from services.gateway.http import CONTEXT, api, openapi
from shared import apikeys as keys
from shared import passwords
from shared.config import Settings
from shared.db import Notifications
from shared.domain import offerings
from shared.domain.accounts import ADMIN_ACCOUNT_ID, ADMIN_USER_ID
from shared.eventstore import NO_STREAM, NOTIFY_CHANNEL, Append, ConcurrencyError, EventStore
from shared.projections.read import PROJECTED_CHANNEL, Progress
from shared.runtime import Runtime

log = logging.getLogger(__name__)


async def ensure_defaults(store: EventStore) -> None:
    """The first start creates the admin account and CloudStack-like default offerings;
    later starts find them."""
    meta = Metadata(correlation_id="defaults", actor="gateway", account_id=ADMIN_ACCOUNT_ID)
    admin: list[tuple[str, Event]] = [
        (streams.account(ADMIN_ACCOUNT_ID),
         AccountCreated(account_id=ADMIN_ACCOUNT_ID, name="admin", role="admin")),
        (streams.user(ADMIN_USER_ID),
         UserCreated(user_id=ADMIN_USER_ID, account_id=ADMIN_ACCOUNT_ID, username="admin",
                     email="admin@localhost", firstname="Admin", lastname="Admin")),
    ]
    for stream_id, event in admin + offerings.defaults():
        with contextlib.suppress(ConcurrencyError):
            await store.commit([Append(stream_id, [event], NO_STREAM)], meta)


async def ensure_admin_keys(store: EventStore, settings: Settings) -> None:
    """Seal any secret key still stored in clear, keep the configured admin password's hash,
    then register the configured admin key pair (the launcher generates one on first
    start) as the admin's live pair.

    Raises:
        SystemExit: no usable key encryption key is configured.
    """
    try:
        secrets = keys.box(settings)
    except ValueError as exc:
        raise SystemExit(f"snapdeploy gateway: {exc}") from None
    async with store.pool.acquire() as conn:
        sealed = await keys.seal_clear_rows(conn, secrets)
        if sealed:
            log.info("sealed %d secret keys that were stored in clear", sealed)
        if settings.admin_password:
            await ensure_admin_password(conn, settings.admin_password)
        if not settings.admin_api_key:
            return
        live = await keys.ensure_configured(
            conn, secrets, api_key=settings.admin_api_key, secret=settings.admin_secret_key,
            account_id=ADMIN_ACCOUNT_ID, account_name="admin", user_id=ADMIN_USER_ID,
            user_name="admin", role="admin")
    if not live:
        log.warning("the configured admin API key was replaced by registerUserKeys and stays "
                    "revoked; use the admin's newer key pair, or configure a new one")


async def ensure_admin_password(conn: asyncpg.Connection, password: str) -> None:
    """Make the configured admin password (the launcher generates one) the admin's."""
    if await passwords.check_login(conn, "admin", password) is None:
        await passwords.set_password(conn, passwords.Login(
            ADMIN_USER_ID, "admin", ADMIN_ACCOUNT_ID, "admin", "admin"), password)


# Long request lines reach the API (and get CloudStack's envelope) instead of a bare 400
# from the HTTP parser: clients send big GET requests with many comma-joined ids.
HANDLER_ARGS = {"max_line_size": 65536, "max_field_size": 65536}


async def _run_followers(app: web.Application) -> AsyncIterator[None]:
    """While the app serves: the one connection that hears new commits, the projector's
    checkpoint and API key changes (``Notifications``), the audit streams' shared reader of
    new events, and the follower of the projector's progress that read-your-writes waits
    are woken by."""
    ctx = app[CONTEXT]
    tasks = [asyncio.ensure_future(app[FANOUT].run()),
             *(asyncio.ensure_future(f.run()) for f in (ctx.notifications, ctx.progress) if f)]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def build(rt: Runtime, store: EventStore) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    # (Tests may build the app on an in-memory store: no projector to follow there.)
    if isinstance(store, EventStore):
        # One connection hears every announcement the gateway follows.
        notifications = Notifications(store.pool, (NOTIFY_CHANNEL, PROJECTED_CHANNEL,
                                                   keys.CHANGED_CHANNEL))
        progress = Progress(store.pool, notifications)
        live_keys = keys.LiveKeys(store.pool, keys.box(rt.settings), notifications)
    else:
        notifications, progress, live_keys = None, None, None
    app[CONTEXT] = Context(store=store, settings=rt.settings, notifications=notifications,
                           progress=progress, keys=live_keys)
    app.router.add_route("GET", "/client/api", api)
    app.router.add_route("POST", "/client/api", api)
    app.router.add_get(OPENAPI_PATH, openapi)
    app[FANOUT] = Fanout(store, notifications,
                         max_per_account=rt.settings.max_event_streams_per_account)
    app.cleanup_ctx.append(_run_followers)
    app.router.add_get("/client/events", stream_events)
    console.add_routes(app)
    rt.add_health_routes(app)
    return app
