"""One active copy among replicas: a lease held as a PostgreSQL session advisory lock.

The relay, the projector and the planner each run one active copy; their replicas are
hot standbys. A copy takes the lease (``acquire`` waits while another holds it) on a
connection of its own, outside any pool, and holds it as long as that session lives.
When the holder dies (even SIGKILL), PostgreSQL ends its session at once and a standby's
wait returns: the takeover is as quick as the standby's start. When PostgreSQL cannot
tell (the holder's host vanished), TCP keepalives on the lease's connection end the
session within about ``shared.db._pool.KEEPALIVE_S`` seconds. A holder frozen without
dying (stopped: its host still answers TCP, but its checks of the session stop) loses
the lease after ``IDLE_LIMIT_S`` seconds idle. A holder that loses its connection stops
its work (``lost`` returns) before another can have taken over, as far as it can tell; a
frozen one, at its first check once it runs again.

The lease is an efficiency, not the guard: the relay republishes nothing new (JetStream
drops repeated message ids), the projector's checkpoint row is locked per batch, and the
planner's placements are appended at the versions they were decided on, so two active
copies for a moment would cost work, not correctness.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from shared.db._pool import IDLE_LIMIT_S, KEEPALIVES, init_connection

CHECK_S = 1.0
"""How often the holder checks that its lease's connection is alive."""


class Lease:
    """The lease ``name`` on the database at ``dsn``, for one holder at a time."""

    def __init__(self, dsn: str, name: str, *, holder: str = "snapdeploy",
                 idle_limit_s: float = IDLE_LIMIT_S) -> None:
        self.dsn = dsn
        self.name = name
        self.holder = holder
        self.idle_limit_s = idle_limit_s
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Wait until this process holds the lease (as long as another holds it)."""
        # Idle past IDLE_LIMIT_S (frozen: its checks stopped), the session ends.
        conn = await asyncpg.connect(self.dsn, timeout=10, server_settings={
            "application_name": self.holder, **KEEPALIVES,
            "idle_session_timeout": str(int(self.idle_limit_s * 1000))})
        try:
            await init_connection(conn)
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))",
                               f"lease:{self.name}", timeout=None)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    async def lost(self) -> None:
        """Return once the lease is lost: its connection failed, or does not answer."""
        conn = self._conn
        assert conn is not None, "acquire() first"
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                async with asyncio.timeout(CHECK_S * 5):
                    await conn.fetchval("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                return

    async def release(self) -> None:
        """Give the lease up (its session ends)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.close()
            conn.terminate()
