from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

_JSONB_VERSION = b"\x01"


async def init_connection(conn: asyncpg.Connection) -> None:
    """Exchange jsonb as raw JSON bytes, so msgspec does all encoding and decoding."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: _JSONB_VERSION + value,
        decoder=lambda value: value[1:],
        format="binary",
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool.

    asyncpg's default reset runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release: half the statements a deploy cost the gateway. snapdeploy
    keeps no session state past a release: it sets no session settings, opens no cursors
    outside a transaction, and whoever takes an advisory lock or LISTENs undoes it before
    releasing, or drops the connection when it cannot (``advisory_lock``).
    asyncpg still rolls back a transaction left open and forgets the client's listeners."""


KEEPALIVE_S = 15
"""About how long PostgreSQL keeps the session of a client it no longer hears from over
TCP (its host vanished): and with it the advisory locks it held (``advisory_lock``, a
planner's turn at deciding, a lease), which would otherwise outlive it by hours."""
KEEPALIVES = {"tcp_keepalives_idle": str(KEEPALIVE_S // 3),
              "tcp_keepalives_interval": str(KEEPALIVE_S // 6),
              "tcp_keepalives_count": "3"}


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections carry snapdeploy's codecs, are not reset on release
    (``keep_session``) and are kept alive over TCP (``KEEPALIVES``)."""
    server_settings = {**KEEPALIVES, **kwargs.pop("server_settings", {})}
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, reset=keep_session,
        server_settings=server_settings, **kwargs
    )
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def advisory_lock(conn: asyncpg.Connection, key: str) -> AsyncIterator[None]:
    """Hold PostgreSQL's session advisory lock ``key`` (any text) on ``conn`` while inside.

    Pool connections are not reset on release (``keep_session``): if taking or releasing
    the lock fails or is cancelled midway, the connection is dropped, and the lock with
    its session, so no lock outlives its holder."""
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
    except BaseException:
        conn.terminate()
        raise
    try:
        yield
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
        except BaseException:
            conn.terminate()
            raise
