"""The outbox relay: committed events from the store to JetStream, none lost.

It tails the store by global position, publishes each event with ``Nats-Msg-Id`` set to
the event id (JetStream drops a repeat within its duplicate window), waits for every
acknowledgement of a batch, and only then moves its checkpoint: at most every
``SAVE_EVERY_S``, as each save is a commit of its own and the stream itself tells what was
published since.

Where to resume is decided from the event store, never from what a message claims: the
relay's own checkpoint, moved on to the stored position of the newest event that the
stream holds (its ``Nats-Msg-Id`` looked up in the store), so a crash between publishing
and checkpointing republishes nothing that a consumer would see as new, however long the
relay was down. A message in the stream whose id the store does not know (or a position
header of any size) moves nothing; a checkpoint beyond the store's head, which only a
corrupted row can hold, is replaced by what the stream proves was published.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from proto import subjects
from shared import metrics
from shared.bus import ensure_events_stream
from shared.eventstore import EventStore, RecordedEvent

log = logging.getLogger(__name__)

CHECKPOINT = "relay"
ACK_TIMEOUT_S = 30.0
# How many messages, newest first, the relay reads back from the stream looking for one it
# published (one normally: the newest).
LOOKBACK = 200
# The checkpoint is saved at most this often while events flow, and this long after the last.
SAVE_EVERY_S = 0.5


class Relay:
    """Publishes each committed event to the stream, then announces it on its account's
    audit subject (core NATS, at most once: the stream and /client/events are the durable
    records)."""

    def __init__(self, store: EventStore, js: JetStreamContext, *, batch: int = 500,
                 nc: NATS | None = None) -> None:
        self.store = store
        self.js = js
        self.batch = batch
        self.nc: NATS = nc if nc is not None else js._nc
        # The position of the newest event published and acknowledged.
        self.published = 0

    async def checkpoint(self) -> int:
        async with self.store.pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT
            )
        return int(position or 0)

    async def last_published(self) -> int:
        """The store's position of the newest event the stream holds (0 if none).

        Messages are read newest first; the first whose ``Nats-Msg-Id`` is the id of a
        stored event gives that event's position as the store records it. Headers and
        payloads are not trusted: a message the relay did not publish names no stored
        event and is passed over.
        """
        try:
            info = await self.js.stream_info(subjects.EVENTS_STREAM)
        except NotFoundError:
            return 0
        last, first = info.state.last_seq or 0, info.state.first_seq or 0
        for seq in range(last, max(first, last - LOOKBACK + 1) - 1, -1):
            if seq <= 0:
                break
            try:
                msg = await self.js.get_msg(subjects.EVENTS_STREAM, seq)
            except NotFoundError:
                continue  # deleted
            position = await self._stored_position((msg.headers or {}).get("Nats-Msg-Id"))
            if position is not None:
                return position
            log.warning("message %d in %s names no stored event; passing over it", seq,
                        subjects.EVENTS_STREAM)
        return 0

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

    async def run(self) -> None:
        await ensure_events_stream(self.js)
        position = await self.resume_position()
        published = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            saver = tasks.create_task(self._keep_saved(published, position))
            async for batch in self.store.follow(position, batch=self.batch):
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
            acks.append(
                await self.js.publish_async(
                    subjects.event_subject(event.stream_id, event.type),
                    event.wire(),
                    headers={
                        "Nats-Msg-Id": str(event.event_id),
                        subjects.POSITION_HEADER: str(event.position),
                    },
                )
            )
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
