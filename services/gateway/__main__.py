"""python -m services.gateway: the CloudStack-compatible API on SNAPDEPLOY_GATEWAY_LISTEN."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.app import build, ensure_admin_keys
from shared.runtime import Runtime

log = logging.getLogger("services.gateway")


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    await ensure_admin_keys(store, rt.settings)
    runner = web.AppRunner(build(rt, store), access_log=None)
    await runner.setup()
    host, port = rt.settings.gateway_listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    log.info("gateway listening on http://%s/client/api", rt.settings.gateway_listen)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    Runtime("gateway").run(main, "Serve the CloudStack-compatible API and the audit stream.")
