"""The outbox relay: committed events from the store to JetStream, none lost.

A process that commits events publishes them itself at once (``Herald``), marked with
``DIRECT_HEADER``: the next service's wait for them is then one publish, not the relay's
wake-up, read and publish. The relay is the guarantee behind it: it tails the store by
global position and publishes every event, with ``Nats-Msg-Id`` set to the event id, so
JetStream drops its copy of one published already (and the committer's of one it
published first) within the duplicate window. It waits for every acknowledgement of a
batch, and only then moves its checkpoint: at most every ``SAVE_EVERY_S``, as each save is
a commit of its own and the stream itself tells what was published since.

Where to resume is decided from the event store, never from what a message claims: the
relay's own checkpoint, moved on to the stored position of the newest event that the
relay itself published to the stream (its ``Nats-Msg-Id`` looked up in the store; a
message published by its committer proves nothing of the events before it, as those reach
the stream out of position order), so a crash between publishing and checkpointing
republishes nothing that a consumer would see as new. Events older than the duplicate
window that their committers published while the relay was down are found in the stream
before they are published again (``published_since``). A message in the stream whose id
the store does not know (or a position header of any size) moves nothing; a checkpoint
beyond the store's head, which only a corrupted row can hold, is replaced by what the
stream proves was published.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import NotFoundError

from proto import subjects
from shared import metrics
from shared.bus import DUPLICATE_WINDOW_S, ensure_events_stream
from shared.eventstore import EventStore, RecordedEvent

log = logging.getLogger(__name__)

CHECKPOINT = "relay"
ACK_TIMEOUT_S = 30.0
# How many messages, newest first, the relay reads back from the stream looking for one it
# published (one normally: the newest).
LOOKBACK = 200
# The checkpoint is saved at most this often while events flow, and this long after the last.
SAVE_EVERY_S = 0.5
# How long after it is woken the relay reads what was committed: its committers publish
# their events themselves (``Herald``), so the relay's publishes are repeats that JetStream
# drops, and made a moment later they do not compete for the cores with the next service's
# work on the event.
LAG_S = 0.02
# Events recorded longer ago than the duplicate window less this, which their committers may
# have published, are looked for in the stream before the relay publishes them again.
WINDOW_MARGIN_S = 30.0
# How far the clocks of PostgreSQL and of the NATS servers may differ, for that look.
CLOCK_SKEW_S = 60.0


class Relay:
    """Publishes each committed event to the stream, then announces it on its account's
    audit subject (core NATS, at most once: the stream and /client/events are the durable
    records)."""

    def __init__(self, store: EventStore, js: JetStreamContext, *, batch: int = 500,
                 nc: NATS | None = None, lag: float = LAG_S) -> None:
        self.store = store
        self.js = js
        self.batch = batch
        self.lag = lag
        self.nc: NATS = nc if nc is not None else js._nc
        # The position of the newest event published and acknowledged.
        self.published = 0
        # Events found in the stream while catching up (``published_since``).
        self.in_stream: set[uuid.UUID] = set()

    async def checkpoint(self) -> int:
        async with self.store.pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT
            )
        return int(position or 0)

    async def last_published(self) -> int:
        """The store's position of the newest event the relay published to the stream
        (0 if none): every event before it is in the stream too.

        Messages are read newest first; the first not marked as its committer's whose
        ``Nats-Msg-Id`` is the id of a stored event gives that event's position as the
        store records it. Payloads are not trusted: a message no snapdeploy process
        published names no stored event and is passed over.
        """
        async for msg in self._newest_first(LOOKBACK):
            headers = msg.headers or {}
            if subjects.DIRECT_HEADER in headers:
                continue  # its committer's: the events before it may not be published yet
            position = await self._stored_position(headers.get("Nats-Msg-Id"))
            if position is not None:
                return position
            log.warning("message %s in %s names no stored event; passing over it", msg.seq,
                        subjects.EVENTS_STREAM)
        return 0

    async def _newest_first(self, most: int | None = None) -> AsyncIterator[RawStreamMsg]:
        """The stream's messages, newest first, of its last ``most`` sequence numbers (all
        if None); deleted ones passed over."""
        try:
            info = await self.js.stream_info(subjects.EVENTS_STREAM)
        except NotFoundError:
            return
        last, first = info.state.last_seq or 0, max(1, info.state.first_seq or 1)
        if most is not None:
            first = max(first, last - most + 1)
        for seq in range(last, first - 1, -1):
            try:
                yield await self.js.get_msg(subjects.EVENTS_STREAM, seq)
            except NotFoundError:
                continue  # deleted

    async def _stored_position(self, msg_id: str | None) -> int | None:
        try:
            event_id = uuid.UUID(msg_id or "")
        except ValueError:
            return None
        async with self.store.pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM events WHERE event_id = $1", event_id)
        return None if position is None else int(position)

    async def resume_position(self) -> int:
        """Where to resume: the checkpoint, or the newest event the stream is proven to
        hold if that is later. Saved before anything is published."""
        saved = await self.checkpoint()
        head = await self.store.head()
        published = await self.last_published()
        if saved > head:
            log.error("relay checkpoint %d is beyond the store's head %d; resuming after "
                      "position %d, the newest event the stream holds", saved, head, published)
            position = published
        else:
            position = max(saved, published)
        if position != saved:
            await self._save(position)
        log.info("relay resuming after position %d (checkpoint %d, stream %d, head %d)",
                 position, saved, published, head)
        return position

    async def published_since(self, position: int) -> set[uuid.UUID]:
        """The ids of the events after ``position`` that the stream may hold beyond the
        duplicate window (published by their committers while the relay was down): the
        relay does not publish them again. Empty when the first event after ``position``
        is recent enough for JetStream to drop a repeat by itself (a failover)."""
        first = await self.store.read_all(position, limit=1)
        window = timedelta(seconds=DUPLICATE_WINDOW_S - WINDOW_MARGIN_S)
        if not first or first[0].recorded_at > datetime.now(UTC) - window:
            return set()
        since = first[0].recorded_at - timedelta(seconds=CLOCK_SKEW_S)
        started = time.monotonic()
        found: set[uuid.UUID] = set()
        async for msg in self._newest_first():
            if msg.time is not None and msg.time < since:
                break
            try:
                found.add(uuid.UUID((msg.headers or {}).get("Nats-Msg-Id", "")))
            except ValueError:
                continue
        log.info("relay found %d events in %s published since %s, read back in %.1f s; "
                 "they are not published again", len(found), subjects.EVENTS_STREAM,
                 since.isoformat(), time.monotonic() - started)
        return found

    async def run(self) -> None:
        await ensure_events_stream(self.js)
        position = await self.resume_position()
        self.in_stream = await self.published_since(position)
        published = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            saver = tasks.create_task(self._keep_saved(published, position))
            async for batch in self.store.follow(position, batch=self.batch, lag=self.lag):
                await self.publish(batch)
                self.published = batch[-1].position
                published.set()
            saver.cancel()

    async def _keep_saved(self, published: asyncio.Event, saved: int) -> None:
        """Save the position of the last batch published, then wait ``SAVE_EVERY_S``
        before the next save, so a save covers every batch published meanwhile."""
        while True:
            await published.wait()
            published.clear()
            if self.published > saved:
                await self._save(self.published)
                saved = self.published
            await asyncio.sleep(SAVE_EVERY_S)

    async def publish(self, batch: list[RecordedEvent]) -> None:
        acks = []
        for event in batch:
            if self.in_stream and event.event_id in self.in_stream:
                self.in_stream.discard(event.event_id)
                continue
            acks.append(await publish_event(self.js, event))
        async with asyncio.timeout(ACK_TIMEOUT_S):  # not wait_for: see EventStore.follow
            await asyncio.gather(*acks)
        metrics.RELAYED_EVENTS.inc(len(batch))
        for event in batch:
            await self.nc.publish(subjects.audit_subject(event.meta().account_id, event.type),
                                  event.wire())

    async def _save(self, position: int) -> None:
        async with self.store.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                CHECKPOINT, position,
            )
        metrics.CHECKPOINT.labels(CHECKPOINT).set(position)


def _message(event: RecordedEvent, headers: dict[str, str] | None = None
             ) -> tuple[str, bytes, dict[str, str]]:
    """An event's subject, payload and headers on the stream."""
    return (subjects.event_subject(event.stream_id, event.type), event.wire(),
            {"Nats-Msg-Id": str(event.event_id),
             subjects.POSITION_HEADER: str(event.position), **(headers or {})})


async def publish_event(js: JetStreamContext, event: RecordedEvent) -> asyncio.Future[PubAck]:
    """Publish ``event`` to the stream; the future of its acknowledgement."""
    subject, payload, headers = _message(event)
    return await js.publish_async(subject, payload, headers=headers)


class Herald:
    """Publishes the events this process committed as soon as the commit returns
    (``EventStore.publisher``), before the commit is announced, each commit's in position
    order, marked with ``DIRECT_HEADER`` (this service's name), as plain NATS messages:
    JetStream stores them, and acknowledges nothing no one waits for. Nothing depends on
    it: an event it does not publish (NATS away, the process gone) reaches the stream
    through the relay a moment later; while NATS is away it publishes nothing, and never
    holds a commit up."""

    def __init__(self, js: JetStreamContext, service: str) -> None:
        self.nc: NATS = js._nc
        self.headers = {subjects.DIRECT_HEADER: service}

    async def __call__(self, events: Iterable[RecordedEvent]) -> None:
        if not self.nc.is_connected:
            return  # nothing is buffered for later: the relay publishes them
        sent = 0
        try:
            for event in events:
                subject, payload, headers = _message(event, self.headers)
                await self.nc.publish(subject, payload, headers=headers)
                sent += 1
        except Exception as exc:  # the relay publishes them
            log.debug("events committed but not published at once (%s: %s); the relay "
                      "publishes them", type(exc).__name__, exc)
        metrics.PUBLISHED_AT_ONCE.inc(sent)
