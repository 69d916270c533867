"""Versioned schema migrations: ``migrations/NNNN_name.sql`` applied once each, in order.

Services migrate on start when the schema is behind and their role may change it (a
single-role database); otherwise ``snapdeploy db migrate`` (or ``snapdeploy up``) does, as
the schema's owner. An advisory lock makes concurrent migrators safe and the
``schema_migrations`` table records what has been applied.
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


async def pending(conn: asyncpg.Connection) -> list[str]:
    """The migrations not yet applied (all of them on an empty database). Needs only read
    access, so a service whose role may not change the schema can tell it is current."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = set(await applied_versions(conn)) if exists else set()
    return [name for version, name, _ in _migrations() if version not in done]


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
