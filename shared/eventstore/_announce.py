"""Telling the store's followers that events were committed, once they are.

An append does not NOTIFY in its own transaction (migration 0026): PostgreSQL makes the
commits of transactions that notify take turns, each through its flush to disk, so
appends side by side would share no flush. The process that committed announces instead,
right after, on ``NOTIFY_CHANNEL``: in a transaction of its own that does not wait for the
disk (the announcement is only a wake-up), one at a time, the commits made while one is
on its way announced together by the next. Followers still poll (``EventStore.follow``): an
announcement lost with its process only delays them until their next poll.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "snapdeploy_events"

_ANNOUNCE = (f"SELECT set_config('synchronous_commit', 'off', true),"
             f" pg_notify('{NOTIFY_CHANNEL}', '')")


class Announcer:
    """Announces the commits of one process's store on ``NOTIFY_CHANNEL``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._again = False
        self._sending: asyncio.Task[None] | None = None

    def announce(self) -> None:
        """Announce, soon, what was committed until now."""
        if self._sending is not None and not self._sending.done():
            self._again = True  # the one on its way may have left before this commit
            return
        self._sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(_ANNOUNCE)
            except Exception as exc:  # the followers' next poll finds the events
                log.debug("events committed but not announced: %s", exc)
                return
