"""The outbox relay: committed events from the store to JetStream, none lost.

It tails the store by global position, publishes each event with ``Nats-Msg-Id`` set to
the event id (JetStream drops a repeat within its duplicate window), waits for every
acknowledgement of a batch, and only then moves its checkpoint. On start it resumes from
the later of its checkpoint and the position of the last event already in the stream, so
a crash between publishing and checkpointing republishes nothing that a consumer would
see as new, however long the relay was down.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from proto import subjects
from shared import metrics
from shared.bus import ensure_events_stream
from shared.eventstore import EventStore, RecordedEvent

log = logging.getLogger(__name__)

CHECKPOINT = "relay"
ACK_TIMEOUT_S = 30.0


class Relay:
    def __init__(self, store: EventStore, js: JetStreamContext, *, batch: int = 500) -> None:
        self.store = store
        self.js = js
        self.batch = batch

    async def checkpoint(self) -> int:
        async with self.store.pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT
            )
        return int(position or 0)

    async def last_published(self) -> int:
        """The position of the newest event in the JetStream stream (0 if none)."""
        try:
            info = await self.js.stream_info(subjects.EVENTS_STREAM)
            if not info.state.last_seq:
                return 0
            msg = await self.js.get_msg(subjects.EVENTS_STREAM, info.state.last_seq)
        except NotFoundError:
            return 0
        return int((msg.headers or {}).get(subjects.POSITION_HEADER, 0))

    async def run(self) -> None:
        await ensure_events_stream(self.js)
        saved = await self.checkpoint()
        published = await self.last_published()
        position = max(saved, published)
        if position != saved:
            await self._save(position)
        log.info("relay resuming after position %d (checkpoint %d, stream %d)",
                 position, saved, published)
        async for batch in self.store.follow(position, batch=self.batch):
            await self.publish(batch)
            await self._save(batch[-1].position)

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

    async def _save(self, position: int) -> None:
        async with self.store.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                CHECKPOINT, position,
            )
        metrics.CHECKPOINT.labels(CHECKPOINT).set(position)
