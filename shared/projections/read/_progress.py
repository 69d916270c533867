"""How far the projector has got, followed by one process without polling.

Each checkpoint the projector saves is announced on ``PROJECTED_CHANNEL`` when it commits
(migration 0018), heard through the process's ``shared.db.Notifications``. Whoever waits
for a position (read your writes: a job done, a change made) is woken as soon as it is
projected. The checkpoint is also re-read every ``idle_poll`` seconds, so a lost
notification only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging

import asyncpg

from shared.db import Notifications
from shared.projections._runner import CHECKPOINT

log = logging.getLogger(__name__)

PROJECTED_CHANNEL = "snapdeploy_projected"
BACKOFF_MAX_S = 15.0


class Progress:
    """The projector's checkpoint as this process last heard it, and waits for it."""

    def __init__(self, pool: asyncpg.Pool, notifications: Notifications, *,
                 idle_poll: float = 0.5) -> None:
        self._pool = pool
        self._notifications = notifications
        self.idle_poll = idle_poll
        self.reached = 0
        # Every checkpoint saved since the last read is heard: ``reach`` can rely on being
        # woken. From a read made while listening until listening stops.
        self.live = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._listening = asyncio.Event()  # listening began: read the checkpoint now
        notifications.on(PROJECTED_CHANNEL, self._heard)
        notifications.watch(self._on_listening)

    def _advance(self, position: int) -> None:
        if position <= self.reached:
            return
        self.reached = position
        while self._waiters and self._waiters[0][0] <= position:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _heard(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._advance(int(payload))

    def _on_listening(self, listening: bool) -> None:
        self.live = False  # until the checkpoint is read again, while listening
        if listening:
            self._listening.set()

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
        """Read the checkpoint every ``idle_poll`` seconds and as soon as listening begins,
        until cancelled; a read that fails is tried again with backoff (meanwhile ``live``
        is False)."""
        delay = 0.5
        try:
            while True:
                self._listening.clear()
                notifications = self._notifications
                generation = notifications.generation if notifications.live else None
                try:
                    async with self._pool.acquire() as conn:
                        saved = int(await conn.fetchval(
                            "SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT)
                            or 0)
                    if not self.live:
                        # Following anew (at start, or after the listening connection was
                        # lost): the checkpoint may be behind what was heard before, when
                        # PostgreSQL came back without the last commits (a failover to a
                        # replica they had not reached; the projector writes them again).
                        # What the table says now is how far it has got.
                        self.reached = min(self.reached, saved)
                    self._advance(saved)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TimeoutError) as exc:
                    self.live = False
                    log.warning("could not read the projector's progress (%s: %s); "
                                "retrying in %.1fs", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(BACKOFF_MAX_S, delay * 2)
                    continue
                delay = 0.5
                # Read while listening, and listening since: every later save is heard.
                self.live = notifications.live and notifications.generation == generation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_poll):
                        await self._listening.wait()
        finally:
            self.live = False
