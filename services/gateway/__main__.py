"""python -m services.gateway: the CloudStack-compatible API on SNAPDEPLOY_GATEWAY_LISTEN,
and deploy requests on NATS."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.app import HANDLER_ARGS, build, ensure_admin_keys, ensure_defaults
from services.gateway.bus import serve_deploys
from services.gateway.http import CONTEXT
from shared.relay import Herald
from shared.runtime import Runtime

log = logging.getLogger("services.gateway")


async def main(rt: Runtime) -> None:
    # Many API requests at once: their commits share statements.
    store = await rt.postgres(group_commit=True)
    await ensure_admin_keys(store, rt.settings)
    await ensure_defaults(store)
    app = build(rt, store)
    runner = web.AppRunner(app, access_log=None, max_line_size=HANDLER_ARGS["max_line_size"],
                           max_field_size=HANDLER_ARGS["max_field_size"])
    await runner.setup()
    host, port = rt.settings.gateway_listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    log.info("gateway listening on http://%s/client/api", rt.settings.gateway_listen)
    try:
        nc, js = await rt.jetstream()
        store.publisher = Herald(js, rt.service)  # what requests commit, published at once
        await serve_deploys(nc, app[CONTEXT])
        rt.started()  # both doors open: the API and deploy requests on NATS
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    Runtime("gateway").run(main, "Serve the CloudStack-compatible API, the audit stream and "
                                 "deploy requests on NATS.")
