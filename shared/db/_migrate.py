"""Versioned schema migrations: ``migrations/NNNN_name.sql`` applied once each, in order.

Every service calls ``migrate`` on start; an advisory lock makes concurrent starts safe and
the ``schema_migrations`` table records what has been applied.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

_LOCK_KEY = 0x736E6170  # "snap": one advisory lock for all migrators


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("shared.db").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def applied_versions(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT version FROM schema_migrations ORDER BY version"
    )
    return [row["version"] for row in rows]


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Bring the schema to the newest version; returns the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = set(await applied_versions(conn))
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied schema migration %s", name)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
