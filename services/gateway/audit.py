"""GET /client/events: the audit stream over HTTP as Server-Sent Events.

Signed like an API request (``apikey``, ``signature``, optional ``after``). Each event is
sent as ``id: <global position>``, ``event: <type>``, ``data: <envelope JSON>``; a client
that reconnects with ``Last-Event-ID`` (or ``after``) resumes exactly where it left off.
An admin sees every event; a user sees the events of their own account.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from services.gateway.api import PARAM_ERROR, ApiError, Params
from services.gateway.http import CONTEXT, caller_for, envelope, request_params
from shared.eventstore import RecordedEvent

KEEPALIVE_S = 15.0


async def stream_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    pairs = await request_params(request)
    try:
        caller = await caller_for(ctx, pairs)
        params = Params("streamEvents", dict(pairs))
        after = params.integer("after", minimum=0, maximum=2**62)
        last_id = request.headers.get("Last-Event-ID")
        if last_id is not None:
            if not last_id.isdigit():
                raise ApiError(PARAM_ERROR, "invalid Last-Event-ID header: not a position")
            after = int(last_id)
    except ApiError as exc:
        return envelope("streamevents", exc.body(), exc.code)

    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)

    def visible(event: RecordedEvent) -> bool:
        return caller.is_admin or event.meta().account_id == caller.account_id

    follower = ctx.store.follow(after or 0, idle_poll=1.0).__aiter__()
    pending: asyncio.Task[list[RecordedEvent]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(follower.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                await response.write(b": keep-alive\n\n")
                continue
            batch, pending = pending.result(), None
            chunk = b"".join(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (e.position, e.type.encode(), e.wire())
                for e in batch if visible(e)
            )
            if chunk:
                await response.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if pending is not None:
            pending.cancel()
        with contextlib.suppress(Exception):
            await follower.aclose()  # type: ignore[attr-defined]
    return response
