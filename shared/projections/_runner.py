"""Applying events to the read models in global order, checkpoint in the same transaction.

Per batch, each projection loads the rows the batch touches, evolves them in memory with
its pure ``evolve``, and writes them back in one statement; the batch's last position is
saved as the checkpoint in that transaction. A rebuild truncates the tables and replays
from position 0 in one transaction, so readers see the old tables until it commits; it
keeps the rows in memory while it replays and writes each once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

import asyncpg

from proto.events import AnyEvent
from shared import metrics
from shared.eventstore import EventStore, RecordedEvent
from shared.projections._table import Key, Projection, Row

log = logging.getLogger(__name__)

CHECKPOINT = "projector"
# A rebuild holds at most this many rows in memory (about 1 KB each) before writing them.
HOLD_MAX_ROWS = 2_000_000


def fold(
    projection: Projection,
    rows: dict[Key, Row],
    events: Sequence[tuple[RecordedEvent, AnyEvent]],
) -> tuple[dict[Key, Row], set[Key]]:
    """Evolve ``rows`` through ``events``; returns (changed rows, deleted keys)."""
    return _fold(projection, rows, [(r, e, projection.keys(e)) for r, e in events])


def _fold(
    projection: Projection,
    rows: dict[Key, Row],
    events: Sequence[tuple[RecordedEvent, AnyEvent, list[Key]]],
) -> tuple[dict[Key, Row], set[Key]]:
    changed: dict[Key, Row] = {}
    deleted: set[Key] = set()
    for recorded, event, keys in events:
        for key in keys:
            row = projection.evolve(rows.get(key), key, recorded, event)
            if row is None:
                rows.pop(key, None)
                changed.pop(key, None)
                deleted.add(key)
            else:
                rows[key] = row
                changed[key] = row
                deleted.discard(key)
    return changed, deleted


async def apply_batch(
    conn: asyncpg.Connection, projections: Sequence[Projection], batch: Sequence[RecordedEvent],
    held: dict[str, dict[Key, Row]] | None = None,
) -> None:
    """Apply ``batch`` to every projection's table. With ``held`` (a rebuild into empty
    tables), rows are kept there between batches instead of read back, and not written:
    ``write_held`` writes them once at the end."""
    decoded = [(recorded, recorded.event()) for recorded in batch]
    for projection in projections:
        touched = [(r, e, keys) for r, e in decoded if (keys := projection.keys(e))]
        if not touched:
            continue
        if held is not None:
            _fold(projection, held.setdefault(projection.table.name, {}), touched)
            continue
        rows = await projection.table.load(conn, list({k for *_, keys in touched
                                                       for k in keys}))
        changed, deleted = _fold(projection, rows, touched)
        await projection.table.delete(conn, list(deleted))
        await projection.table.upsert(conn, list(changed.values()))
    metrics.PROJECTED_EVENTS.inc(len(batch))


async def write_held(conn: asyncpg.Connection, projections: Sequence[Projection],
                     held: dict[str, dict[Key, Row]], chunk: int = 20_000) -> None:
    for projection in projections:
        rows = list(held.get(projection.table.name, {}).values())
        for start in range(0, len(rows), chunk):
            await projection.table.upsert(conn, rows[start:start + chunk])


class Projector:
    def __init__(self, store: EventStore, projections: Sequence[Projection],
                 *, batch: int = 1000) -> None:
        self.store = store
        self.projections = projections
        self.batch = batch

    async def _lock_checkpoint(self, conn: asyncpg.Connection) -> int:
        await conn.execute(
            "INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            CHECKPOINT,
        )
        position: int = await conn.fetchval(
            "SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE", CHECKPOINT
        )
        return position

    async def _save(self, conn: asyncpg.Connection, position: int) -> None:
        await conn.execute(
            "UPDATE checkpoints SET position = $2 WHERE name = $1", CHECKPOINT, position
        )
        metrics.CHECKPOINT.labels(CHECKPOINT).set(position)

    async def checkpoint(self) -> int:
        async with self.store.pool.acquire() as conn, conn.transaction():
            return await self._lock_checkpoint(conn)

    async def run(self) -> None:
        """Keep the read models current, forever."""
        while True:
            position = await self.checkpoint()
            log.info("projector following the store after position %d", position)
            async for batch in self.store.follow(position, batch=self.batch):
                async with self.store.pool.acquire() as conn, conn.transaction():
                    saved = await self._lock_checkpoint(conn)
                    if saved != position:
                        # A rebuild moved the checkpoint while we waited for its lock.
                        log.info("checkpoint moved from %d to %d; resuming there",
                                 position, saved)
                        break
                    await apply_batch(conn, self.projections, batch)
                    position = batch[-1].position
                    await self._save(conn, position)

    async def catch_up(self) -> int:
        """Apply everything committed so far and return the position reached."""
        while True:
            async with self.store.pool.acquire() as conn, conn.transaction():
                position = await self._lock_checkpoint(conn)
                batch = await self.store.read_all(position, self.batch, conn=conn)
                if not batch:
                    return position
                await apply_batch(conn, self.projections, batch)
                await self._save(conn, batch[-1].position)

    async def rebuild(self) -> int:
        """Truncate every read model and replay the whole stream; returns the events applied."""
        # The rows held are plain data without cycles: reference counting frees what is
        # dropped, and the cyclic collector, run again and again over a growing heap of
        # held rows, only costs time (a third of a rebuild's in a measured run).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return await self._rebuild()
        finally:
            if collecting:
                gc.enable()

    async def _rebuild(self) -> int:
        applied = 0
        async with self.store.pool.acquire() as conn, conn.transaction():
            await self._lock_checkpoint(conn)
            tables = ", ".join(p.table.name for p in self.projections)
            await conn.execute(f"TRUNCATE {tables}")
            position = 0
            held: dict[str, dict[Key, Row]] | None = {}
            while True:
                batch = await self.store.read_all(position, self.batch, conn=conn)
                if not batch:
                    break
                await apply_batch(conn, self.projections, batch, held)
                position = batch[-1].position
                applied += len(batch)
                if held is not None and sum(map(len, held.values())) > HOLD_MAX_ROWS:
                    # Too big to hold: write what is held, go on as the live projector does.
                    await write_held(conn, self.projections, held)
                    held = None
            if held is not None:
                await write_held(conn, self.projections, held)
            await self._save(conn, position)
        log.info("rebuilt %s from %d events", tables, applied)
        return applied
