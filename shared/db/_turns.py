"""Decisions that take turns among every process using one database.

A ``Turns`` is one named lock: in a process, an asyncio lock its holders queue on (so
waiters hold no connection each); among processes, PostgreSQL's advisory lock on a pool
connection. The advisory lock is kept from one holder of the process to the next while
any is waiting, up to ``KEEP_MAX`` turns, and given up as soon as none is: a burst of
decisions in one process pays one hand-over between processes, not one per decision,
and a process with nothing to decide holds nothing. A process frozen while it holds the
advisory lock loses it after ``IDLE_LIMIT_S`` (``advisory_lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.db._pool import IDLE_LIMIT_S, advisory_lock

KEEP_MAX = 16
"""Turns in a row a process takes before it gives the advisory lock up, holders of its own
waiting or not, so the other processes get theirs."""


class Turns:
    """The lock ``name`` on ``pool``'s database, for the holders of this process."""

    def __init__(self, pool: asyncpg.Pool, name: str, *,
                 idle_limit_s: float = IDLE_LIMIT_S) -> None:
        self.pool = pool
        self.key = f"decision:{name}"
        self.idle_limit_s = idle_limit_s
        self._local = asyncio.Lock()
        self._waiting = 0
        self._held: contextlib.AsyncExitStack | None = None
        self._conn: asyncpg.Connection | None = None
        self._turns = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the lock while inside."""
        self._waiting += 1
        try:
            await self._local.acquire()
        except BaseException:
            # Cancelled while waiting: the last holder may have kept the advisory lock for
            # this turn, which will not be taken now.
            self._waiting -= 1
            if not self._waiting and not self._local.locked():
                async with self._local:
                    if not self._waiting:
                        await self._give_up()
            raise
        self._waiting -= 1
        try:
            if self._conn is not None and self._conn.is_closed():
                await self._give_up()  # its session ended, and the advisory lock with it
            if self._held is None:
                held = contextlib.AsyncExitStack()
                try:
                    conn = await held.enter_async_context(self.pool.acquire())
                    await held.enter_async_context(
                        advisory_lock(conn, self.key, idle_limit_s=self.idle_limit_s))
                except BaseException:
                    await held.aclose()
                    raise
                self._held, self._conn, self._turns = held, conn, 0
            self._turns += 1
            try:
                yield
            finally:
                if not self._waiting or self._turns >= KEEP_MAX:
                    await self._give_up()
        finally:
            self._local.release()

    async def _give_up(self) -> None:
        """Release the advisory lock and its connection, if held (under the local lock)."""
        held, self._held, self._conn = self._held, None, None
        if held is not None:
            # A failed unlock dropped the connection, and the lock with its session.
            with contextlib.suppress(Exception):
                await held.aclose()
