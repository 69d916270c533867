"""One reader of new events for every audit stream the gateway serves.

A ``/client/events`` stream must not hold a PostgreSQL connection of its own: the gateway's
pool is small and the API needs it. The ``Fanout`` hears of new commits through the
gateway's ``shared.db.Notifications``, reads each new batch once (on a pooled connection,
for that read only) and hands it to every open stream that may see it. A stream that starts
behind the head catches up from the store first, one short read at a time (at most
``CATCH_UP_READERS`` such reads at once, so catching-up clients never take the API's
connections), then switches to the live feed.

While no stream is live the reader reads no events: it follows the store's head only, every
``IDLE_POLL_S`` and when a stream goes live, so a gateway nobody watches does not read every
commit. A stream that starts behind that head catches up to it, and events committed since
are read for it once it is live.

A stream that does not keep up is not waited for: its queue is bounded
(``MAX_BEHIND`` events), and when a batch would overflow it the stream is dropped; the
client reconnects with ``Last-Event-ID`` and catches up from the store.

Each account may hold at most ``max_per_account`` open streams; one more is refused with
``TooManyStreams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import asyncpg

from shared.db import Notifications
from shared.eventstore import NOTIFY_CHANNEL, EventStore, RecordedEvent

log = logging.getLogger(__name__)

BATCH = 500
"""Events read from the store at once, live or catching up."""
MAX_BEHIND = 10_000
"""Events queued for one stream before the stream is dropped as too slow."""
CATCH_UP_READERS = 2
"""Catch-up reads that may hold a pool connection at the same time."""
IDLE_POLL_S = 1.0
"""The live reader also polls this often, so a lost notification only delays."""
BACKOFF_MAX_S = 15.0


class TooManyStreams(Exception):
    """The account already holds as many open streams as it may."""

    def __init__(self, account_id: str, limit: int) -> None:
        super().__init__(f"account {account_id} already has {limit} open event streams")
        self.account_id = account_id
        self.limit = limit


class FellBehind(Exception):
    """The stream's queue overflowed; the client must reconnect with Last-Event-ID."""


class Subscription:
    """One client's view of the audit stream: its own position, filter and queue."""

    def __init__(self, fanout: Fanout, account_id: str, sees_all: bool, after: int,
                 max_behind: int) -> None:
        self._fanout = fanout
        self.account_id = account_id
        self.sees_all = sees_all
        # The highest position scanned for this client (delivered, queued or not visible).
        self.position = after
        self._max_behind = max_behind
        self._queue: deque[RecordedEvent] = deque()
        self._wake = asyncio.Event()
        self.live = False
        self.dropped = False
        self.closed = False

    def _sees(self, event: RecordedEvent) -> bool:
        return self.sees_all or event.meta().account_id == self.account_id

    def offer(self, events: list[RecordedEvent]) -> None:
        """Queue ``events`` (already filtered for this client) without waiting; drop the
        subscription if they do not fit."""
        fresh = [e for e in events if e.position > self.position]
        if not fresh or self.dropped:
            return
        if len(self._queue) + len(fresh) > self._max_behind:
            self.dropped = True
            self._queue.clear()
            self._fanout._leave(self)
        else:
            self._queue.extend(fresh)
            self.position = fresh[-1].position
        self._wake.set()

    def close(self) -> None:
        """Stop receiving events and free this stream's place in the account's cap."""
        if not self.closed:
            self.closed = True
            self._fanout._close(self)

    def skip_to(self, position: int) -> None:
        """Events up to ``position`` were scanned and none was for this client."""
        self.position = max(self.position, position)

    async def next(self, wait_s: float) -> list[RecordedEvent]:
        """The next events for this client, oldest first; ``[]`` when none came within
        ``wait_s`` seconds.

        Raises:
            FellBehind: the client did not keep up and must reconnect.
        """
        if self.dropped:
            raise FellBehind
        if not self.live:
            return await self._catch_up(wait_s)
        if not self._queue:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
        if self.dropped:
            raise FellBehind
        out = list(self._queue)
        self._queue.clear()
        return out

    async def _catch_up(self, wait_s: float) -> list[RecordedEvent]:
        fanout = self._fanout
        if not fanout.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await fanout.ready.wait()
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            if self.position >= fanout.head:
                # No await between this check and joining the live set: every batch the
                # live reader hands out from now on starts after ``fanout.head``.
                self.live = True
                fanout._join(self)
                return []
            batch = await fanout._read(self.position)
            if not batch:
                # The live reader saw a commit this read did not yet: read again.
                await asyncio.sleep(0.01)
                continue
            self.position = batch[-1].position
            mine = [e for e in batch if self._sees(e)]
            if mine:
                return mine
        return []


class Fanout:
    """The gateway's single reader of new events, shared by every audit stream."""

    def __init__(self, store: EventStore, notifications: Notifications | None, *,
                 max_per_account: int, max_behind: int = MAX_BEHIND,
                 idle_poll: float = IDLE_POLL_S) -> None:
        """Without ``notifications`` (a store not in PostgreSQL), new events are read every
        ``idle_poll`` seconds."""
        self.store = store
        self.max_per_account = max_per_account
        self.max_behind = max_behind
        self.idle_poll = idle_poll
        # The position of the last event handed to the live streams.
        self.head = 0
        self.ready = asyncio.Event()
        self._live: set[Subscription] = set()
        self._open: dict[str, int] = {}
        self._catch_up = asyncio.Semaphore(CATCH_UP_READERS)
        self._wake = asyncio.Event()  # a commit was announced
        self._joined = asyncio.Event()  # a stream went live
        if notifications is not None:
            notifications.on(NOTIFY_CHANNEL, self._on_notify)

    def open_streams(self, account_id: str) -> int:
        return self._open.get(account_id, 0)

    def open(self, account_id: str, *, sees_all: bool, after: int) -> Subscription:
        """A subscription for a client of ``account_id`` from position ``after`` on, counted
        against the account's cap until ``close()``.

        Raises:
            TooManyStreams: the account holds ``max_per_account`` open streams already.
        """
        if self.open_streams(account_id) >= self.max_per_account:
            raise TooManyStreams(account_id, self.max_per_account)
        self._open[account_id] = self.open_streams(account_id) + 1
        return Subscription(self, account_id, sees_all, after, self.max_behind)

    def _join(self, sub: Subscription) -> None:
        self._live.add(sub)
        self._joined.set()

    def _leave(self, sub: Subscription) -> None:
        self._live.discard(sub)

    def _close(self, sub: Subscription) -> None:
        self._leave(sub)
        left = self._open[sub.account_id] - 1
        if left:
            self._open[sub.account_id] = left
        else:
            del self._open[sub.account_id]

    async def _read(self, after: int) -> list[RecordedEvent]:
        async with self._catch_up:
            return await self.store.read_all(after, BATCH)

    def _dispatch(self, events: list[RecordedEvent]) -> None:
        self.head = events[-1].position
        if not self._live:
            return
        by_account: dict[str, list[RecordedEvent]] = {}
        if any(not s.sees_all for s in self._live):
            for event in events:
                by_account.setdefault(event.meta().account_id or "", []).append(event)
        for sub in list(self._live):
            mine = events if sub.sees_all else by_account.get(sub.account_id)
            if mine:
                sub.offer(mine)
            else:
                sub.skip_to(self.head)

    async def run(self) -> None:
        """Read new events and hand them out, until cancelled; a lost connection is
        reopened with backoff."""
        delay = 0.5
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("audit stream reader lost PostgreSQL (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)

    async def _follow_head(self) -> None:
        """With no stream live: move the head to the store's, then wait for a stream to go
        live (or ``idle_poll``)."""
        head = await self.store.head()
        if not self._live:  # else a stream joined at the head it saw: read on from there
            self.head = max(self.head, head)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_poll):
                await self._joined.wait()

    def _on_notify(self, _payload: str) -> None:
        self._wake.set()

    async def _follow(self) -> None:
        if not self.ready.is_set():
            self.head = await self.store.head()
            self.ready.set()
        while True:
            self._wake.clear()
            self._joined.clear()
            if not self._live:
                await self._follow_head()
                continue
            events = await self.store.read_all(self.head, BATCH)
            if events:
                self._dispatch(events)
                if len(events) == BATCH:
                    continue  # more may be waiting; else later commits notify
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_poll):
                    await self._wake.wait()
