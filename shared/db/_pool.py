from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
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


# timestamptz as PostgreSQL sends it: microseconds since 2000-01-01 UTC, the largest and the
# smallest int64 standing for infinity and -infinity.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INFINITY = 2**63 - 1
_NEG_INFINITY = -(2**63)


def pg_microseconds(value: datetime | date) -> int:
    """A timestamp as PostgreSQL holds it (``fast_timestamps``), read as asyncpg's own
    encoder reads it: a naive one or a date in local time, ``datetime.max`` and ``min``
    as infinity."""
    try:
        return (value - _PG_EPOCH) // _MICROSECOND
    except TypeError:  # naive, or a date
        if value == datetime.max:
            return _INFINITY
        if value == datetime.min:
            return _NEG_INFINITY
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        return (value.astimezone(UTC) - _PG_EPOCH) // _MICROSECOND


def _encode_timestamp(value: Any) -> tuple[int]:
    return (value if type(value) is int else pg_microseconds(value),)


def _decode_timestamp(value: tuple[int]) -> datetime:
    if value[0] == _INFINITY:
        return datetime.max
    if value[0] == _NEG_INFINITY:
        return datetime.min
    return _PG_EPOCH + timedelta(microseconds=value[0])


@contextlib.asynccontextmanager
async def fast_timestamps(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """While inside, ``conn`` writes timestamps with its own encoder (``pg_microseconds``)
    and takes an int as one already encoded: asyncpg's own costs twice the CPU (0.66
    against 0.30 µs a value, measured on a COPY of 2,000,000), and a rebuild writes
    hundreds of thousands. It reads them as asyncpg does. Not inside a transaction: its
    way out queries the server. If that fails, the connection is dropped, so no other
    user gets its codec."""
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_encode_timestamp,
                              decoder=_decode_timestamp, format="tuple")
    try:
        yield
    finally:
        try:
            await conn.reset_type_codec("timestamptz", schema="pg_catalog")
        except BaseException:
            conn.terminate()
            raise


async def keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool.

    asyncpg's default reset runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release: half the statements a deploy cost the gateway. snapdeploy
    keeps no session state past a release: it sets no session settings (but the idle limit
    ``advisory_lock`` sets and resets), opens no cursors
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

IDLE_LIMIT_S = 10
"""How long a session holding a lease or a turn at deciding may sit idle before PostgreSQL
ends it, and the lock with it (``idle_session_timeout``): a holder that is alive but
frozen (stopped, or its host paused) still answers TCP's keepalives, and would keep every
other copy waiting for as long as it stays frozen. A lease's holder checks its session
every second; a turn at deciding lasts milliseconds. Past the limit, the lock is
another's: for those two locks the expected versions (and JetStream's message ids, and the
projector's checkpoint), not the locks, keep the work correct. Locks that are the only
guard of a decision (an account's limits) set no limit."""


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
async def advisory_lock(conn: asyncpg.Connection, key: str, *,
                        idle_limit_s: float | None = None) -> AsyncIterator[None]:
    """Hold PostgreSQL's session advisory lock ``key`` (any text) on ``conn`` while inside.

    Pool connections are not reset on release (``keep_session``): if taking or releasing
    the lock fails or is cancelled midway, the connection is dropped, and the lock with
    its session, so no lock outlives its holder. With ``idle_limit_s``, the session ends
    if it sits idle that long while the lock is held (``IDLE_LIMIT_S``): set in the
    statement that takes the lock, which reads the setting it had first, and put back in
    the one that releases it."""
    before: str | None = None
    try:
        if idle_limit_s is None:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
        else:
            # The setting is read in the row the statement scans, before its own columns
            # are worked out (pg_settings' reset value, read instead at release, costs a
            # scan of every setting: half a millisecond of the server's time each turn).
            before = await conn.fetchval(
                "WITH before AS MATERIALIZED (SELECT current_setting('idle_session_timeout')"
                " AS setting) SELECT setting, pg_advisory_lock(hashtextextended($1, 0)),"
                " set_config('idle_session_timeout', $2, false) FROM before",
                key, str(int(idle_limit_s * 1000)))
    except BaseException:
        conn.terminate()
        raise
    try:
        yield
    finally:
        try:
            if before is None:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
            else:
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0)),"
                    " set_config('idle_session_timeout', $2, false)", key, before)
        except BaseException:
            conn.terminate()
            raise
