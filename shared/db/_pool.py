from __future__ import annotations

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


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections carry snapdeploy's codecs."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, **kwargs
    )
    assert pool is not None
    return pool
