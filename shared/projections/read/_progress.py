"""How far the projector has got, followed by one process without polling.

One connection LISTENs on ``PROJECTED_CHANNEL``: each checkpoint the projector saves is
announced there when it commits (migration 0018). Whoever waits for a position (read your
writes: a job done, a change made) is woken as soon as it is projected. The checkpoint is
also re-read every ``idle_poll`` seconds, so a lost notification only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging

import asyncpg

from shared.projections._runner import CHECKPOINT

log = logging.getLogger(__name__)

PROJECTED_CHANNEL = "snapdeploy_projected"
BACKOFF_MAX_S = 15.0


class Progress:
    """The projector's checkpoint as this process last heard it, and waits for it."""

    def __init__(self, pool: asyncpg.Pool, *, idle_poll: float = 0.5) -> None:
        self._pool = pool
        self.idle_poll = idle_poll
        self.reached = 0
        self.live = False  # listening now: ``reach`` can rely on being woken
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def _advance(self, position: int) -> None:
        if position <= self.reached:
            return
        self.reached = position
        while self._waiters and self._waiters[0][0] <= position:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _on_notify(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self._advance(int(str(payload)))

    async def reach(self, position: int, within: float) -> bool:
        """Wait (at most ``within`` seconds) until the checkpoint is at ``position`` or
        beyond; whether it got there. Only while ``live``."""
        if self.reached >= position:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (position, next(self._order), future))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await future
        return self.reached >= position

    async def run(self) -> None:
        """Follow the checkpoint until cancelled; a lost connection is reopened with
        backoff (meanwhile ``live`` is False)."""
        delay = 0.5
        while True:
            try:
                await self._follow()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("lost the projector's progress (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
            finally:
                self.live = False

    async def _follow(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.add_listener(PROJECTED_CHANNEL, self._on_notify)
            try:
                while True:
                    self._advance(int(await conn.fetchval(
                        "SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT) or 0))
                    self.live = True
                    await asyncio.sleep(self.idle_poll)
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(PROJECTED_CHANNEL, self._on_notify)
