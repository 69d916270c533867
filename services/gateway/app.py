"""The gateway's aiohttp application."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.gateway import commands  # noqa: F401  (registers the commands)
from services.gateway.api import Context
from services.gateway.audit import stream_events
from services.gateway.http import CONTEXT, api
from shared.config import Settings
from shared.eventstore import EventStore
from shared.runtime import Runtime

ADMIN_ACCOUNT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "snapdeploy:account:admin"))
ADMIN_USER_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "snapdeploy:user:admin"))


async def ensure_admin_keys(store: EventStore, settings: Settings) -> None:
    """Register the configured admin key pair (the launcher generates one on first start)."""
    if not settings.admin_api_key:
        return
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO api_keys (api_key, secret_key, account_id, account_name, user_id,"
            " user_name, role) VALUES ($1, $2, $3, 'admin', $4, 'admin', 'admin')"
            " ON CONFLICT (api_key) DO UPDATE SET secret_key = excluded.secret_key",
            settings.admin_api_key, settings.admin_secret_key, ADMIN_ACCOUNT_ID, ADMIN_USER_ID,
        )


def build(rt: Runtime, store: EventStore) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[CONTEXT] = Context(store=store)
    app.router.add_route("GET", "/client/api", api)
    app.router.add_route("POST", "/client/api", api)
    app.router.add_get("/client/events", stream_events)
    rt.add_health_routes(app)
    return app
