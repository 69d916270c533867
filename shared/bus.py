"""NATS JetStream: the events stream and durable, idempotent consumers.

A consumer hands each event to the handler registered for its type. The handler decides
and acts, and returns what to append; those events and the consumer's inbox row commit in
one transaction, and only then is the message acknowledged. A redelivered message whose
inbox row exists is acknowledged without running the handler again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from proto import subjects
from proto.envelope import EventEnvelope, MalformedMessage, Metadata, decode_envelope
from shared import metrics
from shared.config import Settings
from shared.eventstore import Append, ConcurrencyError, EventStore, NewEvent
from shared.log import correlation

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0


Handler = Callable[[EventEnvelope], Awaitable[Sequence[Append]]]


async def connect(
    settings: Settings,
    name: str,
    *,
    on_state: Callable[[str | None], None] | None = None,
) -> NATS:
    """Connect to NATS, reconnecting forever; ``on_state(None)`` when up, else the reason."""

    def report(state: str | None) -> None:
        if on_state is not None:
            on_state(state)

    async def disconnected() -> None:
        log.warning("lost the connection to NATS; reconnecting")
        report("disconnected, reconnecting")

    async def reconnected() -> None:
        log.info("reconnected to NATS")
        report(None)

    async def error(exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    options: dict[str, object] = {}
    if settings.nats_user:
        options.update(user=settings.nats_user, password=settings.nats_password)
    nc = await nats.connect(
        settings.nats_url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        **options,
    )
    report(None)
    return nc


async def ensure_events_stream(js: JetStreamContext) -> None:
    """Create (or update) the JetStream stream every event is published to."""
    config = api.StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.ALL_EVENTS],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.stream_info(subjects.EVENTS_STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


class _Route(msgspec.Struct):
    stream_id: str = ""


def _stream_of(msg: Msg) -> str:
    try:
        return msgspec.json.decode(msg.data, type=_Route).stream_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


class Consumer:
    """A durable pull consumer that runs one handler per event type, exactly once in effect."""

    def __init__(
        self,
        name: str,
        js: JetStreamContext,
        store: EventStore,
        handlers: dict[str, Handler],
        *,
        ack_wait: float = 60.0,
        max_deliver: int = 20,
        batch: int = 64,
    ) -> None:
        self.name = name
        self.js = js
        self.store = store
        self.handlers = handlers
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.batch = batch

    def config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subjects=[subjects.event_filter("*", t) for t in sorted(self.handlers)],
        )

    async def run(self) -> None:
        """Fetch and handle messages until cancelled."""
        await ensure_events_stream(self.js)
        # add_consumer creates the durable or updates it to the current handler set.
        await self.js.add_consumer(subjects.EVENTS_STREAM, self.config())
        sub = await self.js.pull_subscribe_bind(self.name, stream=subjects.EVENTS_STREAM)
        log.info("consumer %s handling %s", self.name, ", ".join(sorted(self.handlers)))
        while True:
            try:
                messages = await sub.fetch(self.batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            # Messages of different streams run concurrently (their writes meet only through
            # expected versions); those of one stream run in the order they came.
            by_stream: dict[str, list[Msg]] = {}
            for msg in messages:
                by_stream.setdefault(_stream_of(msg), []).append(msg)
            await asyncio.gather(*(self._in_order(group) for group in by_stream.values()))

    async def _in_order(self, messages: list[Msg]) -> None:
        for msg in messages:
            await self.process(msg)

    async def process(self, msg: Msg) -> None:
        """Handle one message: skip it if seen, else run the handler and commit."""
        started = time.monotonic()
        try:
            envelope = decode_envelope(msg.data)
        except MalformedMessage as exc:
            metrics.MALFORMED_MESSAGES.labels(self.name).inc()
            log.error("rejected a malformed message on %s: %s", msg.subject, exc)
            await msg.term()
            return
        handler = self.handlers.get(envelope.type)
        with correlation(envelope.metadata.correlation_id):
            if handler is None or await self._seen(envelope.id):
                await msg.ack()
                outcome = "ignored" if handler is None else "duplicate"
                metrics.MESSAGES_HANDLED.labels(self.name, envelope.type, outcome).inc()
                return
            try:
                appends = await handler(envelope)
                done = await self._commit(envelope, appends)
            except ConcurrencyError as exc:
                # Someone else moved the stream on: run again later against the new state.
                log.info("handler for %s %s raced another writer: %s", envelope.type,
                         envelope.id, exc)
                await msg.nak(delay=random.uniform(0.01, 0.1))
                return
            except Exception:
                metrics.HANDLER_FAILURES.labels(self.name, envelope.type).inc()
                attempt = msg.metadata.num_delivered if msg.metadata else 1
                log.exception("handler for %s %s failed (attempt %s of %s)", envelope.type,
                              envelope.id, attempt, self.max_deliver)
                await msg.nak(delay=min(30.0, 0.5 * 2 ** min(attempt, 6)))
                return
            await msg.ack()
            metrics.MESSAGES_HANDLED.labels(
                self.name, envelope.type, "handled" if done else "duplicate"
            ).inc()
            metrics.HANDLE_SECONDS.labels(self.name, envelope.type).observe(
                time.monotonic() - started
            )

    async def _seen(self, event_id: str) -> bool:
        async with self.store.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2",
                self.name, event_id,
            )
        return found is not None

    async def _commit(self, cause: EventEnvelope, appends: Sequence[Append]) -> bool:
        """Record the handled message and append its results; False if already recorded."""
        metadata = Metadata(
            correlation_id=cause.metadata.correlation_id,
            causation_id=cause.id,
            actor=self.name,
            account_id=cause.metadata.account_id,
        )
        async with self.store.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self.name, cause.id,
            )
            if not fresh:
                return False
            for append in appends:
                await self.store.append(
                    append.stream_id,
                    [NewEvent(event, metadata) for event in append.events],
                    append.expected_version,
                    conn=conn,
                )
        return True


async def close(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), 5)
