"""Applying events to the read models in global order, checkpoint in the same transaction.

Per batch, each projection evolves the rows the batch touches in memory with its pure
``evolve``, and one statement writes them all back with the batch's last position as the
checkpoint: only if the checkpoint is still where this projector left it (a rebuild, or
anything else that moved it, makes the statement write nothing, and the projector resumes
from the new checkpoint). The rows come from what this projector last wrote, held in
memory (at most ``CACHED_ROWS`` per table, the least recently used dropped first) and
valid for as long as the checkpoint is its own: they are forgotten each time it starts
following the store (another copy may have projected meanwhile) and when a write finds the
checkpoint moved; a row not held is read from its table, unless the event that first touches
it in the batch makes it anew (``Projection.made_anew``: a VM's deploy request, a job's
submission). A rebuild truncates the tables and
replays from position 0 in one transaction, so readers see the old tables until it commits: it
reads one snapshot of the store through a cursor, the next page while it folds the last,
reads only the events some projection reads (and of them only the columns ``evolve`` may
read), keeps the rows in memory and writes each once, with a binary COPY into the emptied
tables. On two cores, a large rebuild folds the first projection in a second process over
the same snapshot (``_apart``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import operator
import os
import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import msgspec.inspect

from proto.events import AnyEvent
from shared import metrics
from shared.db import fast_timestamps
from shared.projections._apart import Apart
from shared.projections._table import Key, Projection, Row

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import EventStore, RecordedEvent

log = logging.getLogger(__name__)

CHECKPOINT = "projector"
# A rebuild holds at most this many rows in memory (about 1 KB each) before writing them.
HOLD_MAX_ROWS = 2_000_000
# The live projector keeps at most this many rows of each table as it last wrote them.
CACHED_ROWS = 20_000
# A rebuild folds part of its work in a second process from this many events (below, starting
# the process costs more than it saves).
APART_FROM = 100_000


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
    conn: asyncpg.Connection, projections: Sequence[Projection], batch: Sequence[Stored],
) -> None:
    """Apply ``batch`` (read by a rebuild) to every projection's table."""
    decoded = [(stored, _any_event.decode(stored.data)) for stored in batch]
    for projection in projections:
        touched = [(r, e, keys) for r, e in decoded if (keys := projection.keys(e))]
        if not touched:
            continue
        rows = await projection.table.load(conn, list({k for *_, keys in touched
                                                       for k in keys}))
        changed, deleted = _fold(projection, rows, touched)
        await projection.table.delete(conn, list(deleted))
        await projection.table.upsert(conn, list(changed.values()))
    metrics.PROJECTED_EVENTS.inc(len(batch))


class Stored(asyncpg.Record):  # type: ignore[misc]  # asyncpg is untyped
    """A stored event as a rebuild reads it: the columns a projection's ``evolve`` may read
    of ``recorded`` (``Projection.evolve``), as a row, with RecordedEvent's names for them
    (a rebuild makes no RecordedEvent of the million rows it folds)."""

    position = property(operator.itemgetter(0))
    stream_id = property(operator.itemgetter(1))
    version = property(operator.itemgetter(2))
    type = property(operator.itemgetter(3))
    data = property(operator.itemgetter(4))
    recorded_at = property(operator.itemgetter(5))


REBUILD_COLUMNS = "position, stream_id, version, type, data, recorded_at"


_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(AnyEvent)}
_any_event: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)
# A string every str field of a probe event holds: shaped as a UUID, as ids are.
_PROBE_STR = "00000000-0000-4000-8000-000000000001"


def _probe_value(info: msgspec.inspect.Type) -> Any:
    """A value of that type with everything optional set (see ``_touches``)."""
    match info:
        case msgspec.inspect.StrType():
            return _PROBE_STR
        case msgspec.inspect.BoolType():
            return True
        case msgspec.inspect.IntType():
            return 1
        case msgspec.inspect.FloatType():
            return 1.0
        case msgspec.inspect.DateTimeType():
            return datetime.now(UTC)
        case msgspec.inspect.ListType(item_type=item):
            return [_probe_value(item)]
        case msgspec.inspect.DictType(key_type=key, value_type=value):
            return {_probe_value(key): _probe_value(value)}
        case msgspec.inspect.UnionType(types=members):
            return _probe_value(next(m for m in members
                                     if not isinstance(m, msgspec.inspect.NoneType)))
        case msgspec.inspect.StructType(cls=cls, fields=fields):
            return cls(**{f.name: _probe_value(f.type) for f in fields})
    raise TypeError(f"no probe value for {info}")


def _touches(projection: Projection, cls: type) -> bool:
    """Whether ``projection.keys`` can name a row for an event of type ``cls``: asked of one
    event of that type with every field set (``Projection.keys`` promises that is enough).
    Any doubt (no probe event can be made, keys() fails on it) counts as yes."""
    try:
        return bool(projection.keys(_probe_value(msgspec.inspect.type_info(cls))))
    except Exception:  # a probe it cannot read is a type it may touch
        return True


# What a rebuild does with one event type: its decoder, and each projection whose keys()
# can name a row for it, with that projection's keys, evolve and held rows.
_Plan = tuple["msgspec.json.Decoder[Any]",
              list[tuple[Callable[[Any], list[Key]], Callable[..., Row | None], dict[Key, Row]]]]


class _Plans(dict[str, _Plan]):
    """The plan of each event type a rebuild meets, made when it first meets it."""

    def __init__(self, projections: Sequence[Projection], held: dict[str, dict[Key, Row]]):
        super().__init__()
        self.projections = projections
        self.held = held

    def __missing__(self, name: str) -> _Plan:
        cls = _EVENT_TYPES.get(name)
        if cls is None:  # not an event this code knows: the union's decoder says so
            plan: _Plan = (_any_event, [(p.keys, p.evolve, self.held[p.table.name])
                                        for p in self.projections])
        else:
            plan = (msgspec.json.Decoder(cls), [(p.keys, p.evolve, self.held[p.table.name])
                                                for p in self.projections if _touches(p, cls)])
        self[name] = plan
        return plan

    def unread(self) -> list[str]:
        """The event types this code knows that none of the projections reads."""
        return [name for name in _EVENT_TYPES if not self[name][1]]


def _fold_held(plans: _Plans, page: Sequence[asyncpg.Record]) -> None:
    """Evolve the rows held through a page of stored events; an event no projection reads
    is not decoded."""
    for record in page:
        decoder, steps = plans[record[3]]
        if not steps:
            continue
        event = decoder.decode(record[4])
        for keys, evolve, rows in steps:
            for key in keys(event):
                row = evolve(rows.get(key), key, record, event)
                if row is None:
                    rows.pop(key, None)
                else:
                    rows[key] = row


async def write_held(conn: asyncpg.Connection, projections: Sequence[Projection],
                     held: dict[str, dict[Key, Row]]) -> None:
    """Write the rows held into their tables, which must be empty (truncated by the
    rebuild): a binary COPY each, no conflicts to resolve."""
    for projection in projections:
        rows = held.get(projection.table.name)
        if rows:
            await projection.table.copy(conn, rows.values())


class _Cached(OrderedDict[Key, Row | None]):
    """A table's rows as the projector last wrote them (None: known to be absent), the
    most recently used last."""

    def keep(self, rows: dict[Key, Row], deleted: set[Key]) -> None:
        for key, row in rows.items():
            self[key] = row
            self.move_to_end(key)
        for key in deleted:
            self[key] = None
            self.move_to_end(key)
        while len(self) > CACHED_ROWS:
            self.popitem(last=False)


class Projector:
    def __init__(self, store: EventStore, projections: Sequence[Projection],
                 *, batch: int = 1000, apart_from: int = APART_FROM) -> None:
        self.store = store
        self.projections = projections
        self.batch = batch
        self.apart_from = apart_from
        self._cached = {p.table.name: _Cached() for p in projections}
        self._writes: dict[tuple[bool, ...], str] = {}

    def _write(self, shape: tuple[bool, ...]) -> str:
        """The statement that writes a batch's rows and checkpoint, only if the checkpoint
        is still at the position this projector left it (its count says whether it was).
        ``shape`` says, for each projection in turn, whether the batch deletes rows of its
        table and whether it upserts some: only those parts are in it (a part with nothing
        to do still cost PostgreSQL its planning and execution)."""
        statement = self._writes.get(shape)
        if statement is None:
            ctes = ["saved AS (UPDATE checkpoints SET position = $3 WHERE name = $1"
                    " AND position = $2 RETURNING 1)"]
            first = 4
            for n, projection in enumerate(self.projections):
                more, first = projection.table.write_ctes(
                    first, "EXISTS (SELECT FROM saved)", delete=shape[2 * n],
                    upsert=shape[2 * n + 1])
                ctes += more
            statement = self._writes[shape] = \
                f"WITH {', '.join(ctes)} SELECT count(*) FROM saved"
        return statement

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
            # Whatever it held may be stale: another copy may have projected since (this
            # one is started again when it takes the lead back).
            self._forget()
            position = await self.checkpoint()
            log.info("projector following the store after position %d", position)
            async for batch in self.store.follow(position, batch=self.batch):
                if not await self._apply(batch, position):
                    log.info("checkpoint moved away from %d; resuming where it is now",
                             position)
                    break
                position = batch[-1].position

    async def catch_up(self) -> int:
        """Apply everything committed so far and return the position reached."""
        self._forget()
        position = await self.checkpoint()
        while True:
            batch = await self.store.read_all(position, self.batch)
            if not batch:
                return position
            if await self._apply(batch, position):
                position = batch[-1].position
            else:
                position = await self.checkpoint()

    async def _apply(self, batch: Sequence[RecordedEvent], after: int) -> bool:
        """Apply ``batch``, the events after position ``after``, in one statement; False
        (nothing written, the rows held forgotten) if the checkpoint is no longer
        ``after``."""
        decoded = [(recorded, recorded.event()) for recorded in batch]
        params: list[Any] = []
        shape: list[bool] = []
        outcomes: list[tuple[_Cached, dict[Key, Row], set[Key]]] = []
        try:
            async with self.store.pool.acquire() as conn:
                for projection in self.projections:
                    touched = [(r, e, keys) for r, e in decoded if (keys := projection.keys(e))]
                    rows = await self._rows(conn, projection, touched)
                    changed, deleted = _fold(projection, rows, touched)
                    params += projection.table.write_params(list(changed.values()),
                                                            list(deleted))
                    shape += (bool(deleted), bool(changed))
                    outcomes.append((self._cached[projection.table.name], changed, deleted))
                written = await conn.fetchval(self._write(tuple(shape)), CHECKPOINT, after,
                                              batch[-1].position, *params)
        except BaseException:
            self._forget()  # evolve may have changed rows held in place
            raise
        if not written:
            self._forget()
            return False
        for cached, changed, deleted in outcomes:
            cached.keep(changed, deleted)
        metrics.PROJECTED_EVENTS.inc(len(batch))
        metrics.CHECKPOINT.labels(CHECKPOINT).set(batch[-1].position)
        return True

    async def _rows(self, conn: asyncpg.Connection, projection: Projection,
                    touched: Sequence[tuple[RecordedEvent, AnyEvent, list[Key]]]
                    ) -> dict[Key, Row]:
        """The current rows of the keys ``touched`` names: those held, the others read,
        but for those the batch makes anew before anything else touches them."""
        cached = self._cached[projection.table.name]
        anew: dict[Key, bool] = {}  # each key -> whether the batch's first event at it makes it
        for _, event, keys in touched:
            for key in keys:
                if key not in anew:
                    anew[key] = projection.made_anew(event)
        missing = [k for k, made in anew.items() if not made and k not in cached]
        if missing:
            loaded = await projection.table.load(conn, missing)
            for key in missing:
                cached[key] = loaded.get(key)
        return {k: row for k in anew if (row := cached.get(k)) is not None}

    def _forget(self) -> None:
        for cached in self._cached.values():
            cached.clear()

    async def rebuild(self, dsn: str | None = None) -> int:
        """Truncate every read model and replay the whole stream; returns the events applied.

        With ``dsn`` (the database's URL), the first projection (``ALL`` names the costliest
        to fold first) is folded in a second process (``Apart``) when there are two cores
        and at least ``apart_from`` events."""
        # The rows held are plain data without cycles: reference counting frees what is
        # dropped, and the cyclic collector, run again and again over a growing heap of
        # held rows, only costs time (a third of a rebuild's in a measured run).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return await self._rebuild(dsn)
        finally:
            if collecting:
                gc.enable()

    async def _rebuild(self, dsn: str | None) -> int:
        pool = self.store.pool
        apart: Apart | None = None
        if (dsn is not None and len(self.projections) > 1
                and _cores() > 1
                and await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
                >= self.apart_from):
            # Started first: its imports overlap the locking and counting below.
            apart = await Apart.start(dsn, self.projections[:1])
        try:
            return await self._replay_all(apart)
        finally:
            if apart is not None:
                await apart.stop()

    async def _replay_all(self, apart: Apart | None) -> int:
        pool = self.store.pool
        # Its rows' timestamps (every row has one or two) written by the faster encoder.
        async with pool.acquire() as conn, fast_timestamps(conn), conn.transaction():
            await self._lock_checkpoint(conn)
            tables = ", ".join(p.table.name for p in self.projections)
            await conn.execute(f"TRUNCATE {tables}")
            # The events are read in one snapshot of the store, taken after the checkpoint
            # is locked and after the store's head is read (``EventStore.head``: every
            # position up to it settled), so the snapshot holds every event up to the head;
            # the rebuild replays exactly those, and the head is its checkpoint. (Later
            # events the snapshot may hold can have holes below them: the live projector
            # reads them.) Its rows are written in this transaction, so readers see the old
            # tables until it commits.
            position = await self.store.head()
            async with pool.acquire() as reader, reader.transaction(
                    isolation="repeatable_read", readonly=True):
                here = self.projections
                if apart is not None:
                    await apart.begin(await reader.fetchval("SELECT pg_export_snapshot()"),
                                      position, self.batch, HOLD_MAX_ROWS)
                    here = [p for p in here if p not in apart.projections]
                await self._replay(reader, conn, here, position)
                # Counted while the helper, if any, still folds.
                applied = await reader.fetchval(
                    "SELECT count(*) FROM events WHERE position <= $1", position)
                if apart is not None and not await apart.write(conn):
                    await self._replay(reader, conn, apart.projections, position)
            await self._save(conn, position)
        metrics.PROJECTED_EVENTS.inc(applied)
        log.info("rebuilt %s from %d events", tables, applied)
        return int(applied)

    async def _replay(self, reader: asyncpg.Connection, conn: asyncpg.Connection,
                      projections: Sequence[Projection], upto: int) -> None:
        """Fold the events ``reader``'s transaction sees up to position ``upto`` into
        ``projections``' (emptied) tables, written on ``conn``."""
        held = await fold_stored(reader, projections, upto, self.batch, conn)
        if held is not None:
            await write_held(conn, projections, held)


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class TooBig(Exception):
    """More rows than a rebuild holds in memory (``HOLD_MAX_ROWS``)."""


async def fold_stored(reader: asyncpg.Connection, projections: Sequence[Projection],
                      upto: int, batch: int, conn: asyncpg.Connection | None = None
                      ) -> dict[str, dict[Key, Row]] | None:
    """Fold every event up to position ``upto`` that ``reader``'s transaction sees and one
    of ``projections`` reads (or that this code does not know), in order, into rows held
    in memory, and return them (per
    table). Past ``HOLD_MAX_ROWS`` rows: with ``conn``, what is held is written there and
    the rest applied there batch by batch, as the live projector does (None returned);
    without, ``TooBig`` is raised."""
    held: dict[str, dict[Key, Row]] = {p.table.name: {} for p in projections}
    plans = _Plans(projections, held)
    # One statement, read page by page: the next page is read while this one is folded.
    cursor = await reader.cursor(
        f"SELECT {REBUILD_COLUMNS} FROM events WHERE position <= $1"
        " AND NOT (type = ANY($2::text[])) ORDER BY position", upto, plans.unread(),
        record_class=Stored)
    page = await cursor.fetch(batch)
    while page:
        ahead = asyncio.ensure_future(cursor.fetch(batch))
        try:
            await asyncio.sleep(0)  # the fetch is sent
            _fold_held(plans, page)
        finally:
            await asyncio.wait([ahead])
        page = ahead.result()
        if sum(map(len, held.values())) > HOLD_MAX_ROWS:
            if conn is None:
                raise TooBig(f"more than {HOLD_MAX_ROWS} rows")
            # Too big to hold: write what is held, go on as the live projector does.
            await write_held(conn, projections, held)
            while page:
                await apply_batch(conn, projections, page)
                page = await cursor.fetch(batch)
            return None
    return held
