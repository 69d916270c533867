from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import asyncpg
import msgspec

from proto.envelope import EventEnvelope, Metadata
from proto.events import AnyEvent, Event, NetworkImported
from shared.db import Notifications, Turns, advisory_lock
from shared.domain.capacity import Host
from shared.domain.deploy import HostView
from shared.domain.limits import Usage
from shared.domain.network import Network
from shared.eventstore._announce import NOTIFY_CHANNEL, Announcer
from shared.eventstore._group import Group, GroupCommit, Outcome

ANY_VERSION = -1
"""Append whatever the stream's current version is."""
NO_STREAM = 0
"""Append only if the stream does not exist yet."""

_VERSION_CONFLICT = "SD409"  # raised by append_events() in migration 0004
_NAME_TAKEN = "account_names_pkey"  # migration 0010

_event_decoder = msgspec.json.Decoder(AnyEvent)
_metadata_decoder = msgspec.json.Decoder(Metadata)
_network_decoder = msgspec.json.Decoder(NetworkImported)
_encoder = msgspec.json.Encoder()


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload the stream and retry."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id} is at version {actual}, not the expected {expected}: "
            "another writer appended first; reload the stream and retry"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class NameTaken(ConcurrencyError):
    """An account or user of that name was stored first (``account_names``, migration
    0010): decide again, and the name is taken."""

    def __init__(self, stream_id: str, name: str) -> None:
        Exception.__init__(self, f"stream {stream_id} names {name!r}, which another account "
                           "or user took first; decide again")
        self.stream_id = stream_id
        self.expected = self.actual = -1
        self.name = name


@dataclass(frozen=True)
class NewEvent:
    """An event to append, with the metadata of the request that caused it."""

    data: Event
    metadata: Metadata
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class Append:
    """Events to append to one stream, at the version the caller decided on."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int = ANY_VERSION


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored. ``data`` and ``metadata`` stay raw JSON until asked for."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    schema: int
    data: bytes
    metadata: bytes
    recorded_at: datetime

    def event(self) -> AnyEvent:
        event: AnyEvent = _event_decoder.decode(self.data)
        return event

    def meta(self) -> Metadata:
        return _metadata_decoder.decode(self.metadata)

    def envelope(self) -> EventEnvelope:
        return EventEnvelope(
            id=str(self.event_id),
            stream_id=self.stream_id,
            version=self.version,
            position=self.position,
            type=self.type,
            schema=self.schema,
            recorded_at=self.recorded_at,
            metadata=self.meta(),
            data=self.event(),
        )

    def wire(self) -> bytes:
        """The envelope as JSON, built without decoding the payload."""
        return _encoder.encode(
            _WireEnvelope(
                id=str(self.event_id),
                stream_id=self.stream_id,
                version=self.version,
                position=self.position,
                type=self.type,
                schema=self.schema,
                recorded_at=self.recorded_at,
                metadata=msgspec.Raw(self.metadata),
                data=msgspec.Raw(self.data),
            )
        )


@dataclass(frozen=True)
class VmEntry:
    """A VM as the write side's index has it (``Store.vms``)."""

    id: str
    instance_name: str | None  # a deployed VM's name in the hypervisor; None if imported
    imported: bool
    account_id: str
    started: bool
    ended: bool  # expunged, or its deploy failed
    destroying: bool  # its stream's last event is a destroy request


@dataclass(frozen=True)
class Holding:
    """One thing an account holds, as the write side's summary has it (``Store.holding``):
    its owner ("" if none is recorded), its CloudStack state and whether it is gone."""

    account_id: str
    state: str
    gone: bool


class _Unstored(NamedTuple):
    """An event of a ``commit_all``, as sent: its group and its columns but those the
    store gives it."""

    group: int
    event_id: uuid.UUID
    stream_id: str
    type: str
    schema: int
    data: bytes
    metadata: bytes


def _recorded(events: Sequence[_Unstored], rows: Sequence[asyncpg.Record]
              ) -> list[RecordedEvent]:
    """The events of the groups that committed, as stored (``rows`` in group order), in
    position order."""
    by_group: dict[int, list[_Unstored]] = {}
    for event in events:
        by_group.setdefault(event.group, []).append(event)
    out = []
    for row in rows:
        if row["state"] is not None or not row["positions"]:
            continue
        out += [RecordedEvent(position, e.event_id, e.stream_id, version, e.type, e.schema,
                              e.data, e.metadata, recorded_at)
                for e, position, version, recorded_at in zip(
                    by_group[row["grp"]], row["positions"], row["versions"], row["recorded"],
                    strict=True)]
    out.sort(key=lambda r: r.position)
    return out


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    stream_id: str
    version: int
    position: int
    type: str
    schema: int
    recorded_at: datetime
    metadata: msgspec.Raw
    data: msgspec.Raw


_COLUMNS = "position, event_id, stream_id, version, type, schema, data, metadata, recorded_at"
# The events of the stream of the first event that names a job (``read_job_stream``),
# found by the index of job ids ordered by position (migration 0024).
_JOB_STREAM = (f"SELECT {_COLUMNS} FROM events WHERE stream_id = (SELECT stream_id FROM events"
               " WHERE data ->> 'job_id' = $1 AND data ? 'job_id' ORDER BY position LIMIT 1)"
               " ORDER BY version")


class Store(Protocol):
    """What the write side needs of an event store; PostgreSQL's ``EventStore`` and the
    in-memory ``MemoryEventStore`` both keep these promises (tests/contract/test_write_side.py).
    """

    async def append(self, stream_id: str, events: Sequence[NewEvent],
                     expected_version: int = ANY_VERSION) -> list[RecordedEvent]:
        """Append ``events`` to one stream as one batch, committed on its own.

        Raises:
            ConcurrencyError: the stream is not at ``expected_version``.
        """
        ...

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> int | None:
        """Append every batch of ``appends`` with ``metadata``, all or none; the one way
        anything is appended with its metadata. Returns the global position of the last
        event appended (0 if none).

        With ``inbox`` = (consumer, event id), record that the consumer handled that event
        in the same transaction; if it was recorded already, append nothing and return
        None. An ``Append`` of no events at a version only checks that version.

        Raises:
            ConcurrencyError: a stream is not at its batch's expected version (nothing is
                appended).
        """
        ...

    async def commit_all(self, groups: Sequence[Group]) -> list[Outcome]:
        """Commit each group as ``commit`` does, all or none on its own, in order (a group
        sees what the groups before it appended); each group's outcome: what ``commit``
        returns, or the error that undid that group alone."""
        ...

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """The events of one stream from ``from_version`` on, oldest first ([] if none)."""
        ...

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """The events of each of ``stream_ids``, oldest first ([] for one with none), read
        at once: what ``read_stream`` gives for each, in one query."""
        ...

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in order."""
        ...

    async def stored(self, event_id: str, consumer: str) -> tuple[RecordedEvent | None, bool]:
        """The stored event of that id (None if there is none, or the id is no UUID), and
        whether ``consumer`` has handled it already."""
        ...

    async def stored_with_stream(self, event_id: str, consumer: str
                                 ) -> tuple[RecordedEvent | None, bool, list[RecordedEvent]]:
        """``stored``, and every event of the stored event's stream, oldest first (the event
        among them; [] if there is no such event), read at once: for a handler that decides
        on its event's stream (``shared.bus.Handlers.on_stream``)."""
        ...

    async def hosts(self) -> list[HostView]:
        """Every host new VMs may be placed on (imported, not gone), with its reserved
        capacity and its stream's version, as of the last committed append: never behind
        the store (``shared.domain.capacity`` is the rule)."""
        ...

    async def deploy_reads(self, stream_ids: Sequence[str], objects: Sequence[str] | None,
                           volume_id: str | None
                           ) -> tuple[dict[str, list[RecordedEvent]],
                                      dict[str, tuple[str, str, bool]], str | None]:
        """``read_streams``, ``inventory_objects`` (of ``objects``: every one for None) and
        ``volume_origin`` (None for no volume), read at once: what a deploy request is checked
        on."""
        ...

    async def placement_reads(self, from_versions: Mapping[str, int]
                              ) -> tuple[list[HostView], dict[str, list[RecordedEvent]]]:
        """``hosts``, and the events of each stream of ``from_versions`` from that version
        on (``read_stream``), read at once: what a batch of placements is decided on."""
        ...

    async def host(self, host_id: str, *, reservations: bool = True) -> Host:
        """A host as its stream tells it (``shared.domain.capacity.evolve`` is the rule): its
        latest import, whether it is gone, the reservation each VM holds on it (none read
        with ``reservations=False``: all a clone needs is its ref and whether it is
        placeable) and its stream's version, as of the last committed append: never behind
        the store; one the store never heard of is ``Host(host_id)``."""
        ...

    async def network(self, network_id: str, *, addresses: bool = True) -> Network:
        """A network as its stream tells it (``shared.domain.network.evolve`` is the rule):
        its import, whether it is gone, its range, the addresses each VM holds on it (none
        read with ``addresses=False``: all a clone needs is its binding) and its stream's
        version, as of the last committed append: never behind the store; one the store
        never heard of is ``Network(network_id)``. A commit that allocates an address
        another VM holds on the network fails with ``ConcurrencyError``, whatever version it
        expects."""
        ...

    async def clone_targets(self, pool_stream: str, host_id: str, network_ids: Sequence[str]
                            ) -> tuple[list[RecordedEvent], Host, list[Network]]:
        """What a clone lands on, read at once: the pool's stream (``read_stream``), the host
        without its reservations (``host``) and each of ``network_ids`` without its
        addresses (``network``), in their order."""
        ...

    async def snapshot_uses(self, vm_snapshot_id: str) -> tuple[list[str], list[str]]:
        """What depends on a VM snapshot, never behind the store: the VMs deployed from it,
        or from a template seeded from it, and not expunged; and the pools a seed of it was
        started on (both sorted)."""
        ...

    async def template_seed(self, template_id: str) -> tuple[str, str] | None:
        """The (VM snapshot, pool) whose seed the template of that id is (None if no seed
        was ever started for it)."""
        ...

    async def vms(self) -> list[VmEntry]:
        """Every VM the store knows, deployed or imported, ordered by id, never behind the
        store."""
        ...

    async def attached_volumes(self, vm_ids: Sequence[str]) -> dict[str, list[str]]:
        """The volumes attached to each of ``vm_ids`` now (neither deleted nor expunged
        with their VM), sorted; a VM with none is left out."""
        ...

    async def volume_origin(self, volume_id: str) -> str | None:
        """The VM whose import describes the volume's disk (None for a volume snapdeploy
        made, or an unknown one)."""
        ...

    async def vm_snapshots(self, vm_ids: Sequence[str], *,
                           deleted: bool = False) -> dict[str, list[str]]:
        """The VM snapshots of each of ``vm_ids`` not deleted (with ``deleted``, those
        deleted too), sorted; a VM with none is left out."""
        ...

    async def snapshot_by_ref(self, vm_id: str, ref: str) -> str | None:
        """The VM snapshot of ``vm_id`` that the hypervisor knows as ``ref`` (one not
        deleted first; None if there is none)."""
        ...

    async def inventory_objects(self, stream_ids: Sequence[str] | None = None
                                ) -> dict[str, tuple[str, str, bool]]:
        """Every zone, host, pool and network an inventory sync imported (or those of
        ``stream_ids`` among them): its stream → (kind, id, gone since)."""
        ...

    async def name_taken(self, account_name: str, username: str) -> bool:
        """Whether a new account ``account_name`` with its first user ``username`` would
        share a name (case-insensitively) with an account or user, or the user's name with
        another user; never behind the store. (A commit that names an account or user
        twice fails with ``NameTaken`` all the same.)"""
        ...

    async def account_named(self, name: str) -> str | None:
        """The id of the account of that name (case-insensitively), None if there is none."""
        ...

    async def account_users(self, account_id: str) -> list[str]:
        """The ids of the users created in an account, sorted; never behind the store."""
        ...

    async def holding(self, kind: str, obj_id: str) -> Holding | None:
        """Who holds one VM (``kind`` "vm"), volume ("volume") or VM snapshot
        ("vmsnapshot"), its state (a VM's or a volume's, "" for a VM snapshot) and whether
        it is gone (expunged, deleted), never behind the store: what the gateway checks a
        command's target against. None if the store never heard of it."""
        ...

    async def holdings(self, account_id: str) -> Usage:
        """What an account holds, as its resource limits count it, never behind the store:
        its VMs neither Error, Destroyed nor expunged (with their CPUs and memory); its
        volumes neither failed, being deleted nor gone, and the root volume of each of its
        VMs still Starting; the templates not removed seeded from its VM snapshots."""
        ...

    def account_decision(self, account_id: str) -> AbstractAsyncContextManager[Usage]:
        """Hold the account's decision lock while inside, with what it holds
        (``holdings``): one decision per account at a time, among every process using
        this store, so what one decision records counts for the next."""
        ...

    def decision_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock ``name`` while inside: one holder at a time among every process
        using this store (the copies of a service take turns, as one process's handlers
        do), and a process's own waiters queue without holding a connection each."""
        ...


# The transaction-scoped advisory lock (APPEND_LOCK, 0) every append holds shared until it
# commits, and readers by position take exclusively (migration 0025): "apnd" in ASCII.
APPEND_LOCK = 0x61706E64
# Each append also holds (STREAM_LOCK, hashtext(stream)) exclusively: "strm".
STREAM_LOCK = 0x7374726D


class EventStore:
    """Appends and reads events in one PostgreSQL database.

    Appends run side by side (migration 0025): each holds the advisory lock
    ``APPEND_LOCK`` shared, and its streams' ``STREAM_LOCK`` exclusively, until it
    commits, so appends to one stream take turns and appends to different streams share
    their flushes to disk. A reader by position (``read_all``/``follow``, ``head``) takes
    ``APPEND_LOCK`` exclusively for its statement: every append that took a position
    before has then committed or rolled back, so the reader never skips an event that
    commits later with a lower position. (Advisory locks, not a lock on the table: that
    one also waited for VACUUM and ANALYZE of it, a second each time, or a whole
    anti-wraparound vacuum.)
    """

    def __init__(self, pool: asyncpg.Pool, *, group_commit: bool = False) -> None:
        """With ``group_commit``, concurrent ``commit`` calls share statements
        (``GroupCommit``): for a process serving many requests at once."""
        self.pool = pool
        self.group_commit = GroupCommit(self.commit_all) if group_commit else None
        # Commits are announced to followers after they commit (``Announcer``).
        self.announcer = Announcer(pool)
        # Given the events each ``commit`` stored, as soon as it has: a process that
        # publishes them at once sets it (``shared.relay.Herald``; it must not raise).
        self.publisher: Callable[[list[RecordedEvent]], Awaitable[None]] | None = None
        self._decisions: dict[str, Turns] = {}
        # Account decisions wait in this process, holding no connection, one per account
        # and at most half the pool's connections at once: a holder needs more of them for
        # its reads and its commit, which waiters holding one each could otherwise take all.
        self._accounts: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._account_slots = asyncio.Semaphore(max(1, pool.get_max_size() // 2))

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY_VERSION,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to ``stream_id`` as one batch.

        Args:
            stream_id: the stream, ``<category>-<id>``.
            events: the events, in order.
            expected_version: the stream's version the caller decided on (``NO_STREAM`` if
                it must be new, ``ANY_VERSION`` to skip the check).
            conn: a connection inside a transaction to join (its commit is the caller's
                to announce: ``announcer.announce()``, else followers find it at their
                next poll); without one the append commits on its own, and is announced.

        Returns:
            The recorded events with their versions and positions.

        Raises:
            ConcurrencyError: the stream is not at ``expected_version``.
        """
        if not events:
            return []
        if conn is None:
            # One statement: its own transaction, one round trip.
            async with self.pool.acquire() as own:
                recorded = await self._append(own, stream_id, events, expected_version)
            self.announcer.announce()
            return recorded
        return await self._append(conn, stream_id, events, expected_version)

    async def _append(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
    ) -> list[RecordedEvent]:
        try:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM append_events($1, $2, $3, $4, $5, $6, $7)",
                stream_id,
                expected_version,
                [e.event_id for e in events],
                [type(e.data).__name__ for e in events],
                [e.data.SCHEMA for e in events],
                [_encoder.encode(e.data) for e in events],
                [_encoder.encode(e.metadata) for e in events],
            )
        except asyncpg.PostgresError as exc:
            raise _conflict(exc, stream_id, expected_version) from None
        return sorted((RecordedEvent(*row) for row in rows), key=lambda r: r.position)

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> int | None:
        """See ``Store.commit``: one statement (``commit_events``, migration 0017), shared
        with concurrent commits under ``group_commit``."""
        group = Group(appends, metadata, inbox)
        if self.group_commit is not None:
            return await self.group_commit.commit(group)
        (outcome,) = await self.commit_all([group])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def commit_all(self, groups: Sequence[Group]) -> list[Outcome]:
        """See ``Store.commit_all``: one statement."""
        consumers: list[str | None] = []
        causes: list[uuid.UUID | None] = []
        batches: list[tuple[int, Append]] = []
        events: list[_Unstored] = []
        for number, group in enumerate(groups, 1):
            consumer, cause = group.inbox or (None, None)
            consumers.append(consumer)
            causes.append(None if cause is None else uuid.UUID(cause))
            metadata = _encoder.encode(group.metadata)
            for append in group.appends:
                # An append of no events at a version is a check that the stream is there.
                if append.events or append.expected_version != ANY_VERSION:
                    batches.append((number, append))
                    events += [_Unstored(number, uuid.uuid4(), append.stream_id,
                                         type(event).__name__, event.SCHEMA,
                                         _encoder.encode(event), metadata)
                               for event in append.events]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT grp, last_position, state, message, detail, constraint_name, stream,"
                " positions, versions, recorded"
                " FROM commit_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                consumers, causes, [number for number, _ in batches],
                [append.stream_id for _, append in batches],
                [append.expected_version for _, append in batches],
                [len(append.events) for _, append in batches],
                [e.event_id for e in events], [e.type for e in events],
                [e.schema for e in events], [e.data for e in events],
                [e.metadata for e in events])
        rows = sorted(rows, key=lambda r: r["grp"])
        # A group that only checked versions (or recorded its inbox row) appended nothing.
        if any(row["state"] is None and row["last_position"] for row in rows):
            if self.publisher is not None:  # first: the next service waits for it
                await self.publisher(_recorded(events, rows))
            self.announcer.announce()
        outcomes: list[Outcome] = []
        for group, row in zip(groups, rows, strict=True):
            if row["state"] is None:
                outcomes.append(int(row["last_position"]))
            elif row["state"] == "duplicate":
                outcomes.append(None)
            else:
                stream = row["stream"] or ""
                expected = next((a.expected_version for a in group.appends
                                 if a.stream_id == stream), ANY_VERSION)
                error = asyncpg.PostgresError.new({
                    "C": row["state"], "M": row["message"] or "", "D": row["detail"] or "",
                    "n": row["constraint_name"] or ""})
                outcomes.append(_conflict(error, stream, expected))
        return outcomes

    async def stored(self, event_id: str, consumer: str) -> tuple[RecordedEvent | None, bool]:
        """See ``Store.stored``: one query."""
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            return None, False
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS}, EXISTS (SELECT 1 FROM inbox WHERE consumer = $1"
                " AND event_id = $2) AS seen FROM events WHERE event_id = $2",
                consumer, key,
            )
        if row is None:
            return None, False
        return RecordedEvent(*list(row.values())[:-1]), bool(row["seen"])

    async def stored_with_stream(self, event_id: str, consumer: str
                                 ) -> tuple[RecordedEvent | None, bool, list[RecordedEvent]]:
        """See ``Store.stored_with_stream``: one query."""
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            return None, False, []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS}, (SELECT EXISTS (SELECT 1 FROM inbox WHERE consumer = $1"
                " AND event_id = $2)) AS seen FROM events"
                " WHERE stream_id = (SELECT stream_id FROM events WHERE event_id = $2)"
                " ORDER BY version",
                consumer, key,
            )
        stream = [RecordedEvent(*list(row.values())[:-1]) for row in rows]
        stored = next((e for e in stream if e.event_id == key), None)
        return stored, bool(rows and rows[0]["seen"]), stream

    async def hosts(self) -> list[HostView]:
        """See ``Store.hosts``: the ``host_capacity`` table, kept by a trigger on events
        in each append's transaction (migration 0007)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_HOSTS)
        return [_host_view(row) for row in rows]

    async def deploy_reads(self, stream_ids: Sequence[str], objects: Sequence[str] | None,
                           volume_id: str | None
                           ) -> tuple[dict[str, list[RecordedEvent]],
                                      dict[str, tuple[str, str, bool]], str | None]:
        """See ``Store.deploy_reads``: one query, as ``placement_reads``."""
        read: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in stream_ids}
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT ARRAY(SELECT ({_COLUMNS}) FROM events WHERE stream_id = ANY($1::text[])"
                " ORDER BY stream_id, version) AS events,"
                " ARRAY(SELECT (stream_id, kind, object_id, gone) FROM inventory_objects"
                " WHERE $2::text[] IS NULL OR stream_id = ANY($2::text[])) AS objects,"
                " (SELECT imported_with FROM volume_links WHERE volume_id = $3) AS origin",
                list(read), None if objects is None else list(objects), volume_id)
        assert row is not None
        _add_by_stream(read, row["events"])
        found = {stream_id: (kind, object_id, gone)
                 for stream_id, kind, object_id, gone in row["objects"]}
        return read, found, row["origin"]

    async def placement_reads(self, from_versions: Mapping[str, int]
                              ) -> tuple[list[HostView], dict[str, list[RecordedEvent]]]:
        """See ``Store.placement_reads``: one query, each part a row set of its own (rows
        as records), where reading them side by side woke a server process each."""
        ids = list(from_versions)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT ARRAY(SELECT ROW(h.*) FROM ({_HOSTS}) AS h ORDER BY h.host_id) AS hosts,"
                f" ARRAY(SELECT ({_COLUMNS}) FROM events WHERE stream_id = ANY($1::text[])"
                " AND version >= ($2::integer[])[array_position($1::text[], stream_id)]"
                " ORDER BY stream_id, version) AS events",
                ids, [from_versions[s] for s in ids])
        assert row is not None
        read: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in ids}
        _add_by_stream(read, row["events"])
        return [_host_view(values) for values in row["hosts"]], read

    async def host(self, host_id: str, *, reservations: bool = True) -> Host:
        """See ``Store.host``: the ``host_capacity`` and ``host_reservations`` tables, kept
        by a trigger on events in each append's transaction (migrations 0007, 0019), in one
        query."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_HOST_COLUMNS}, r.vm_id, r.cpu_mhz, r.memory_mb FROM host_capacity c"
                " LEFT JOIN host_reservations r USING (host_id) WHERE c.host_id = $1", host_id
            ) if reservations else await conn.fetch(
                f"SELECT {_HOST_COLUMNS} FROM host_capacity c WHERE c.host_id = $1", host_id)
        if not rows:
            return Host(host_id)
        return _host(host_id, rows[0], {r["vm_id"]: (r["cpu_mhz"], r["memory_mb"])
                                        for r in rows if reservations and r["vm_id"] is not None})

    async def network(self, network_id: str, *, addresses: bool = True) -> Network:
        """See ``Store.network``: the ``network_state`` and ``network_addresses`` tables,
        kept by a trigger on events in each append's transaction (migration 0016), in one
        query."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_NETWORK_COLUMNS}, a.vm_id, a.address"
                " FROM network_state s LEFT JOIN network_addresses a USING (network_id)"
                " WHERE s.network_id = $1 ORDER BY a.vm_id, a.nic", network_id
            ) if addresses else await conn.fetch(
                f"SELECT {_NETWORK_COLUMNS} FROM network_state s WHERE s.network_id = $1",
                network_id)
        if not rows:
            return Network(network_id)
        held: dict[str, list[str]] = {}
        for row in rows:
            if addresses and row["vm_id"] is not None:
                held.setdefault(row["vm_id"], []).append(row["address"])
        return _network(network_id, rows[0], held)

    async def clone_targets(self, pool_stream: str, host_id: str, network_ids: Sequence[str]
                            ) -> tuple[list[RecordedEvent], Host, list[Network]]:
        """See ``Store.clone_targets``: one query, each part a row set of its own (rows as
        records), where reading them side by side woke three server processes."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT ARRAY(SELECT ({_COLUMNS}) FROM events WHERE stream_id = $1"
                " ORDER BY version) AS pool,"
                f" ARRAY(SELECT ({_HOST_COLUMNS}) FROM host_capacity c WHERE c.host_id = $2)"
                " AS host,"
                f" ARRAY(SELECT (s.network_id, {_NETWORK_COLUMNS}) FROM network_state s"
                " WHERE s.network_id = ANY($3::text[])) AS networks",
                pool_stream, host_id, list(dict.fromkeys(network_ids)))
        assert row is not None
        host = _host(host_id, row["host"][0], {}) if row["host"] else Host(host_id)
        found = {values[0]: _network(values[0], values[1:], {}) for values in row["networks"]}
        return ([RecordedEvent(*values) for values in row["pool"]], host,
                [found.get(n) or Network(n) for n in network_ids])

    async def snapshot_uses(self, vm_snapshot_id: str) -> tuple[list[str], list[str]]:
        """See ``Store.snapshot_uses``: the ``snapshot_uses`` table (migration 0007)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT kind, id FROM snapshot_uses WHERE vm_snapshot_id = $1 AND live"
                " ORDER BY kind, id", vm_snapshot_id)
        return ([r["id"] for r in rows if r["kind"] == "vm"],
                [r["id"] for r in rows if r["kind"] == "seed"])

    async def template_seed(self, template_id: str) -> tuple[str, str] | None:
        """See ``Store.template_seed``: the ``seed_templates`` table (migration 0007)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT vm_snapshot_id, pool_id FROM seed_templates"
                                      " WHERE template_id = $1", template_id)
        return None if row is None else (row["vm_snapshot_id"], row["pool_id"])

    async def vms(self) -> list[VmEntry]:
        """See ``Store.vms``: the ``vm_index`` table (migration 0008)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT vm_id, instance_name, imported, account_id, started, ended, destroying"
                " FROM vm_index ORDER BY vm_id")
        return [VmEntry(*row) for row in rows]

    async def attached_volumes(self, vm_ids: Sequence[str]) -> dict[str, list[str]]:
        """See ``Store.attached_volumes``: the ``volume_links`` table (migration 0008)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT vm_id, volume_id FROM volume_links WHERE live AND vm_id = ANY($1)"
                " ORDER BY vm_id, volume_id", list(vm_ids))
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row["vm_id"], []).append(row["volume_id"])
        return out

    async def volume_origin(self, volume_id: str) -> str | None:
        """See ``Store.volume_origin``: the ``volume_links`` table (migration 0008)."""
        async with self.pool.acquire() as conn:
            origin: str | None = await conn.fetchval(
                "SELECT imported_with FROM volume_links WHERE volume_id = $1", volume_id)
        return origin

    async def vm_snapshots(self, vm_ids: Sequence[str], *,
                           deleted: bool = False) -> dict[str, list[str]]:
        """See ``Store.vm_snapshots``: the ``vm_snapshot_refs`` table (migration 0008)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT vm_id, snapshot_id FROM vm_snapshot_refs WHERE (live OR $2)"
                " AND vm_id = ANY($1) ORDER BY vm_id, snapshot_id", list(vm_ids), deleted)
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row["vm_id"], []).append(row["snapshot_id"])
        return out

    async def snapshot_by_ref(self, vm_id: str, ref: str) -> str | None:
        """See ``Store.snapshot_by_ref``: the ``vm_snapshot_refs`` table (migration 0008)."""
        async with self.pool.acquire() as conn:
            found: str | None = await conn.fetchval(
                "SELECT snapshot_id FROM vm_snapshot_refs WHERE vm_id = $1 AND ref = $2"
                " ORDER BY live DESC, snapshot_id LIMIT 1", vm_id, ref)
        return found

    async def inventory_objects(self, stream_ids: Sequence[str] | None = None
                                ) -> dict[str, tuple[str, str, bool]]:
        """See ``Store.inventory_objects``: the ``inventory_objects`` table (migration
        0008)."""
        query = "SELECT stream_id, kind, object_id, gone FROM inventory_objects"
        async with self.pool.acquire() as conn:
            rows = await (conn.fetch(query) if stream_ids is None else
                          conn.fetch(query + " WHERE stream_id = ANY($1)", list(stream_ids)))
        return {r["stream_id"]: (r["kind"], r["object_id"], r["gone"]) for r in rows}

    async def name_taken(self, account_name: str, username: str) -> bool:
        """See ``Store.name_taken``: the ``account_names`` table (migration 0010)."""
        async with self.pool.acquire() as conn:
            taken = await conn.fetchval(
                "SELECT 1 FROM account_names WHERE name = lower($1)"
                " OR (kind = 'user' AND name = lower($2)) LIMIT 1", account_name, username)
        return taken is not None

    async def account_named(self, name: str) -> str | None:
        """See ``Store.account_named``: the ``account_names`` table (migration 0010)."""
        async with self.pool.acquire() as conn:
            found: str | None = await conn.fetchval(
                "SELECT id FROM account_names WHERE kind = 'account' AND name = lower($1)", name)
        return found

    async def account_users(self, account_id: str) -> list[str]:
        """See ``Store.account_users``: the ``account_names`` table (migration 0010)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT id FROM account_names WHERE kind = 'user'"
                                    " AND account_id = $1 ORDER BY id", account_id)
        return [r["id"] for r in rows]

    async def holding(self, kind: str, obj_id: str) -> Holding | None:
        """See ``Store.holding``: the ``account_holdings`` table (migration 0009)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT account_id, state, gone FROM account_holdings"
                " WHERE kind = $1 AND id = $2", kind, obj_id)
        return None if row is None else Holding(row["account_id"], row["state"], row["gone"])

    async def holdings(self, account_id: str) -> Usage:
        """See ``Store.holdings``: the ``account_holdings`` table (migration 0009)."""
        async with self.pool.acquire() as conn:
            return await _holdings(conn, account_id)

    @contextlib.asynccontextmanager
    async def account_decision(self, account_id: str) -> AsyncIterator[Usage]:
        """See ``Store.account_decision``: a PostgreSQL advisory lock, so several gateways
        agree; the holdings are read once it is held. Waiters queue in this process first
        (``_accounts``, ``_account_slots``)."""
        lock, waiting = self._accounts.setdefault(account_id, (asyncio.Lock(), [0]))
        waiting[0] += 1
        try:
            async with lock, self._account_slots, self.pool.acquire() as conn, \
                    advisory_lock(conn, f"limits:{account_id}"):
                yield await _holdings(conn, account_id)
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                del self._accounts[account_id]

    def decision_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """See ``Store.decision_lock``: this process's turns (``shared.db.Turns``), which
        hold PostgreSQL's advisory lock ``decision:name`` while any of them waits."""
        turns = self._decisions.get(name)
        if turns is None:
            turns = self._decisions[name] = Turns(self.pool, name)
        return turns.turn()

    async def stream_version(self, stream_id: str) -> int:
        async with self.pool.acquire() as conn:
            version: int = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
            )
            return version

    async def read_job_stream(self, job_id: str) -> list[RecordedEvent]:
        """The events of the stream of the first event that names ``job_id`` (its
        ``job_id`` field: a job is recorded on the stream of what it works on), oldest first
        ([] if none does), in one query."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_JOB_STREAM, job_id)
        return [RecordedEvent(*r) for r in rows]

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """The events of one stream from ``from_version`` on, oldest first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2"
                " ORDER BY version",
                stream_id,
                from_version,
            )
        return [RecordedEvent(*row) for row in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """See ``Store.read_streams``."""
        out: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in stream_ids}
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ANY($1)"
                " ORDER BY stream_id, version", list(out))
        _add_by_stream(out, rows)
        return out

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in order."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM read_events($1, $2)", after,
                                    limit)
        return [RecordedEvent(*row) for row in rows]

    async def head(self) -> int:
        """The highest committed global position (0 when empty), every one below it
        settled: a follower from here misses nothing still being appended."""
        async with self.pool.acquire() as conn:
            position: int = await conn.fetchval("SELECT events_head()")
        return position

    async def follow(
        self, after: int = 0, *, batch: int = 1000, idle_poll: float = 1.0,
        notifications: Notifications | None = None, lag: float = 0.0,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events after ``after``, forever: catch up, then wait for new ones.

        New commits wake the follower through LISTEN/NOTIFY, on a connection of its own or
        through the process's ``notifications`` (which must listen on ``NOTIFY_CHANNEL``);
        it also polls every ``idle_poll`` seconds, so a lost notification only delays,
        never loses. With ``lag``, it reads that long after it is woken: a follower that
        need not be first reads what several commits made, once.
        """
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        async with contextlib.AsyncExitStack() as listening:
            if notifications is not None:
                notifications.on(NOTIFY_CHANNEL, on_notify)
                listening.callback(notifications.off, NOTIFY_CHANNEL, on_notify)
            else:
                listener = await listening.enter_async_context(self.pool.acquire())
                await listener.add_listener(NOTIFY_CHANNEL, on_notify)
                listening.push_async_callback(_stop_listening, listener, on_notify)
            position = after
            while True:
                wake.clear()
                events = await self.read_all(position, batch)
                if events:
                    position = events[-1].position
                    yield events
                    if len(events) == batch:
                        continue  # more may be waiting
                    # A short page was all there was: anything committed since has
                    # notified (``wake`` was cleared before the read), so wait.
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the wait ends, and the follower would
                # never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(idle_poll):
                        await wake.wait()
                if lag:
                    await asyncio.sleep(lag)


async def _stop_listening(listener: asyncpg.Connection, on_notify: Callable[..., None]) -> None:
    with contextlib.suppress(Exception):
        await listener.remove_listener(NOTIFY_CHANNEL, on_notify)


def _add_by_stream(read: dict[str, list[RecordedEvent]],
                   rows: Iterable[Sequence[Any]]) -> None:
    """Each of ``rows`` (``_COLUMNS``, as a row or a record's values) to its stream's list."""
    for values in rows:
        event = RecordedEvent(*values)
        read[event.stream_id].append(event)


_HOSTS = ("SELECT host_id, name, zone_id, pool_ids, cpu_mhz_total, memory_mb_total,"
          " reserved_cpu_mhz, reserved_memory_mb, version FROM host_capacity"
          " WHERE imported AND NOT gone ORDER BY host_id")


def _host_view(values: Sequence[Any]) -> HostView:
    """A placeable host from a row of ``_HOSTS`` (or a record's values, in that order)."""
    (host_id, name, zone_id, pool_ids, cpu_mhz_total, memory_mb_total, reserved_cpu_mhz,
     reserved_memory_mb, version) = tuple(values)
    return HostView(id=host_id, name=name, zone_id=zone_id, pool_ids=list(pool_ids),
                    cpu_mhz_total=cpu_mhz_total, memory_mb_total=memory_mb_total,
                    reserved_cpu_mhz=reserved_cpu_mhz, reserved_memory_mb=reserved_memory_mb,
                    version=version)


_HOST_COLUMNS = ("c.name, c.ref, c.zone_id, c.pool_ids, c.cpu_mhz_total, c.memory_mb_total,"
                 " c.imported, c.gone, c.version")
_NETWORK_COLUMNS = "s.imported, s.gone, s.cidr, s.gateway, s.version"


def _host(host_id: str, values: Sequence[Any],
          reservations: dict[str, tuple[int, int]]) -> Host:
    """A host from ``_HOST_COLUMNS`` (a row or a record's values, in that order)."""
    name, ref, zone_id, pool_ids, cpu_mhz_total, memory_mb_total, imported, gone, version = \
        tuple(values)[:9]
    return Host(host_id, name=name, ref=ref, zone_id=zone_id, pool_ids=tuple(pool_ids),
                cpu_mhz_total=cpu_mhz_total, memory_mb_total=memory_mb_total,
                reservations=reservations, imported=imported, gone=gone, version=version)


def _network(network_id: str, values: Sequence[Any], held: dict[str, list[str]]) -> Network:
    """A network from ``_NETWORK_COLUMNS`` (a row or a record's values, in that order)."""
    imported, gone, cidr, gateway, version = tuple(values)[:5]
    return Network(network_id,
                   imported=None if imported is None else _network_decoder.decode(imported),
                   gone=gone, cidr=cidr, gateway=gateway, held=held, version=version)


def _conflict(exc: Exception, stream_id: str, expected: int) -> Exception:
    """What an append's error (an ``asyncpg.PostgresError``) means to its caller: another
    writer got there first (``ConcurrencyError``, ``NameTaken``), or the error itself."""
    if getattr(exc, "sqlstate", None) == _VERSION_CONFLICT:
        return ConcurrencyError(stream_id, expected, int(getattr(exc, "detail", "0") or 0))
    if getattr(exc, "constraint_name", None) == _NAME_TAKEN:
        return NameTaken(stream_id, str(getattr(exc, "detail", "")))
    return exc


async def _holdings(conn: asyncpg.Connection, account_id: str) -> Usage:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE kind = 'vm') AS vms,"
        " coalesce(sum(cpu_number) FILTER (WHERE kind = 'vm'), 0)::bigint AS cpu,"
        " coalesce(sum(memory_mb) FILTER (WHERE kind = 'vm'), 0)::bigint AS memory,"
        " count(*) FILTER (WHERE kind = 'vm' AND state = 'Starting') AS starting,"
        " count(*) FILTER (WHERE kind = 'volume') AS volumes,"
        " (SELECT count(*) FROM account_holdings s JOIN account_holdings t"
        "  ON t.kind = 'template' AND t.vm_snapshot_id = s.id AND t.held"
        "  WHERE s.kind = 'vmsnapshot' AND s.account_id = $1) AS templates"
        " FROM account_holdings WHERE account_id = $1 AND held", account_id)
    return Usage(user_vm=row["vms"], volume=row["volumes"] + row["starting"],
                 template=row["templates"], cpu=row["cpu"], memory=row["memory"])
