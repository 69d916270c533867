"""GET /client/events: the audit stream over HTTP as Server-Sent Events.

Signed like an API request (``apikey``, ``signature``, optional ``after``), or made in a
login session (the ``JSESSIONID`` cookie and the ``sessionkey`` parameter). Each event is
sent as ``id: <global position>``, ``event: <type>``, ``data: <envelope JSON>``; a client
that reconnects with ``Last-Event-ID`` (or ``after``) resumes exactly where it left off.
An admin sees every event; a user sees the events of their own account.

Streams share the gateway's one reader of new events (``services.gateway.fanout``); an
account may hold ``max_event_streams_per_account`` of them open (one more is answered
429), and a stream that falls ``fanout.MAX_BEHIND`` events behind is ended so that its
client reconnects with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.api import OURS, Declaration, Param, Params
from services.gateway.fanout import Fanout, FellBehind, TooManyStreams
from services.gateway.http import CONTEXT, caller_of, envelope, request_params
from shared.errors import API_LIMIT_EXCEEDED, PARAM_ERROR, ApiError
from shared.eventstore import RecordedEvent

log = logging.getLogger(__name__)

FANOUT = web.AppKey("fanout", Fanout)
KEEPALIVE_S = 15.0
# How often an idle stream looks whether its client is still connected.
CHECK_S = 1.0
# A client that takes this long to accept one write is disconnected.
WRITE_TIMEOUT_S = 30.0
# The largest global position the event store can hold (a PostgreSQL bigint).
MAX_POSITION = 2**63 - 1


def position_from(header: str) -> int:
    """The position a ``Last-Event-ID`` header names, or ApiError(431).

    A position above the store's range can never have been sent and is refused; one in
    range but above the newest event means "nothing after it yet": the stream stays open
    and sends the events whose positions pass it.
    """
    if not (header.isascii() and header.isdigit()):
        raise ApiError(PARAM_ERROR, "invalid Last-Event-ID header: not a position (an event's "
                       "id: a whole number)")
    digits = header.lstrip("0") or "0"
    if len(digits) > len(str(MAX_POSITION)) or int(digits) > MAX_POSITION:
        raise ApiError(PARAM_ERROR, "invalid Last-Event-ID header: beyond any event position "
                       f"(at most {MAX_POSITION}); reconnect without it or with the id of an "
                       "event received")
    return int(digits)


def too_many(exc: TooManyStreams, account_name: str) -> web.Response:
    error = ApiError(API_LIMIT_EXCEEDED, (
        f"There are too many open event streams: account {account_name} has reached its "
        f"limit of {exc.limit} (max_event_streams_per_account); close one and retry"))
    return envelope("streamevents", error.body(), error.code)


def _frame(events: list[RecordedEvent]) -> bytes:
    return b"".join(b"id: %d\nevent: %s\ndata: %s\n\n" % (e.position, e.type.encode(), e.wire())
                    for e in events)


STREAM_EVENTS = Declaration(
    "streamEvents", "The caller's account's events as they are committed (server-sent "
    "events on /client/events).", since=OURS, params=(
        Param("after", "long", "resume after this event position (or the Last-Event-ID "
              "header)", maximum=2**62),
    ))


async def stream_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    fanout = request.app[FANOUT]
    pairs = await request_params(request)
    try:
        caller = await caller_of(ctx, request, pairs)
        params = Params(STREAM_EVENTS, dict(pairs))
        after = params.integer("after")
        last_id = request.headers.get("Last-Event-ID")
        if last_id is not None:
            after = position_from(last_id)
    except ApiError as exc:
        return envelope("streamevents", exc.body(), exc.code)

    try:
        sub = fanout.open(caller.account_id, sees_all=caller.is_admin, after=after or 0)
    except TooManyStreams as exc:
        log.warning("event stream refused: %s", exc)
        return too_many(exc, caller.account_name)

    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        quiet_since = loop.time()
        while True:
            events = await sub.next(CHECK_S)
            if events:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await response.write(_frame(events))
                quiet_since = loop.time()
            elif request.transport is None or request.transport.is_closing():
                break
            elif loop.time() - quiet_since >= KEEPALIVE_S:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await response.write(b": keep-alive\n\n")
                quiet_since = loop.time()
    except FellBehind:
        log.info("event stream of account %s fell %d events behind; ended so that it resumes "
                 "with Last-Event-ID", caller.account_name, fanout.max_behind)
    except TimeoutError:
        log.info("event stream of account %s did not accept a write for %.0fs; disconnected",
                 caller.account_name, WRITE_TIMEOUT_S)
        if request.transport is not None:
            request.transport.close()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    return response
