"""One connection that LISTENs for a whole process.

A process that hears several kinds of announcement (new commits, the projector's
checkpoint, API key changes) listens on one connection of its pool for all of them, not on
one each: a listening connection is held for good, and a pool's connections are for
requests.

``Notifications`` listens on the channels it is made with and hands each announcement's
payload to the callbacks registered for its channel (``on``). Every ``CHECK_S`` it checks
that the connection still answers; a connection lost, or silent for ``5 * CHECK_S``, is
closed and another one listens after a pause (doubling from 0.5 s up to ``BACKOFF_MAX_S``).
Nothing is heard meanwhile, so whoever relies on hearing is told: the callbacks given to
``watch`` are called with True each time listening begins (again) and with False when it
stops, and ``hearing()`` is False from a check left unanswered for ``2 * CHECK_S``, before
the connection is given up on. Whoever is only woken by announcements polls as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import asyncpg

log = logging.getLogger(__name__)

CHECK_S = 1.0
BACKOFF_MAX_S = 15.0


class Notifications:
    """The announcements on ``channels``, heard on one connection of ``pool`` while ``run``
    runs."""

    def __init__(self, pool: asyncpg.Pool, channels: Iterable[str]) -> None:
        self._pool = pool
        self._heard: dict[str, list[Callable[[str], None]]] = {c: [] for c in channels}
        self._watchers: list[Callable[[bool], None]] = []
        self.live = False  # listening now
        self.generation = 0  # how many times listening has begun
        self._answered_at = 0.0  # when the listening connection last answered
        self._delay = 0.5  # before listening again

    def on(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with the payload of each announcement on ``channel``."""
        if channel not in self._heard:
            raise ValueError(f"not listening on {channel!r}: only on {sorted(self._heard)}")
        self._heard[channel].append(callback)

    def off(self, channel: str, callback: Callable[[str], None]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._heard[channel].remove(callback)

    def watch(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` each time listening begins, ``callback(False)`` each time
        it stops."""
        self._watchers.append(callback)

    def hearing(self) -> bool:
        """Listening, on a connection that answered within the last ``2 * CHECK_S``: one
        that died without a word stops counting before it is noticed."""
        return self.live and time.monotonic() - self._answered_at <= 2 * CHECK_S

    def _dispatch(self, _conn: object, _pid: object, channel: str, payload: object) -> None:
        for callback in list(self._heard.get(channel, ())):
            callback(str(payload))

    def _set_live(self, live: bool) -> None:
        if live:
            self.generation += 1
            self._answered_at = time.monotonic()
        self.live = live
        for watcher in list(self._watchers):
            watcher(live)

    async def run(self) -> None:
        """Listen until cancelled; a lost connection is replaced after a pause."""
        while True:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("stopped hearing PostgreSQL's announcements on %s (%s: %s); "
                            "listening again in %.1fs", ", ".join(self._heard),
                            type(exc).__name__, exc, self._delay)
                await asyncio.sleep(self._delay)
                self._delay = min(BACKOFF_MAX_S, self._delay * 2)

    async def _listen(self) -> None:
        async with self._pool.acquire() as conn:
            closed = asyncio.Event()

            def on_close(_conn: object) -> None:
                closed.set()

            conn.add_termination_listener(on_close)
            try:
                for channel in self._heard:
                    await conn.add_listener(channel, self._dispatch)
                self._set_live(True)
                self._delay = 0.5
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CHECK_S):
                            await closed.wait()
                    if closed.is_set():
                        raise ConnectionError("its connection was closed")
                    try:
                        async with asyncio.timeout(CHECK_S * 5):
                            await conn.execute("SELECT 1")  # connected, so still hearing
                    except TimeoutError:
                        raise ConnectionError(f"its connection did not answer within "
                                              f"{CHECK_S * 5:.0f}s") from None
                    self._answered_at = time.monotonic()
            except asyncio.CancelledError:  # stopping: the connection goes back clean
                try:
                    for channel in self._heard:
                        await conn.remove_listener(channel, self._dispatch)
                except Exception:  # (a check cut short is still being cancelled)
                    with contextlib.suppress(Exception):
                        conn.terminate()
                raise
            except BaseException:
                # Not to be trusted (a check cut short is still being cancelled): closed,
                # never handed back to the pool still listening.
                with contextlib.suppress(Exception):  # (one closed already is detached)
                    conn.terminate()
                raise
            finally:
                self._set_live(False)
                with contextlib.suppress(Exception):  # (a connection terminated is detached)
                    conn.remove_termination_listener(on_close)
