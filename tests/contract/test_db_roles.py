"""The services' PostgreSQL role: it appends and reads events, but cannot rewrite, delete
or bypass them, nor change the schema (real PostgreSQL)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from proto.envelope import Metadata
from proto.events import ZoneImported
from shared import db
from shared.eventstore import NO_STREAM, EventStore, NewEvent


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.netloc.rsplit('@', 1)[1]}"))


async def test_the_services_role_appends_but_cannot_rewrite_history(database_url: str) -> None:
    role, password = f"svc_{uuid.uuid4().hex[:12]}", "a password with ' and \\ in it"
    owner = await asyncpg.connect(database_url)
    try:
        applied = await db.prepare(owner, role, password)
        assert applied  # a fresh database: every migration ran, as the owner
        assert await db.prepare(owner, role, password) == []  # again: nothing to do
        grants = db.grants_sql(role, "snapdeploy")
        on_events = [line for line in grants.splitlines() if " events" in line]
        assert on_events == [f'GRANT SELECT ON events, schema_migrations TO "{role}";']
    finally:
        await owner.close()

    pool = await db.create_pool(as_role(database_url, role, password), max_size=2)
    try:
        store = EventStore(pool)
        meta = Metadata(correlation_id="c", causation_id="c", actor="test", account_id="a")
        recorded = await store.append("zone-1", [NewEvent(
            ZoneImported(zone_id="z1", name="zone", ref="datacenter-1"), meta)], NO_STREAM)
        assert [r.version for r in recorded] == [1]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = "
                                       "current_user") is False
            assert await db.pending(conn) == []
            # What the services do: checkpoints, inbox, read models, keys.
            await conn.execute("INSERT INTO checkpoints VALUES ('t', 1)"
                               " ON CONFLICT (name) DO UPDATE SET position = 2")
            await conn.execute("INSERT INTO inbox (consumer, event_id) VALUES ('t', $1)",
                               uuid.uuid4())
            await conn.execute("DELETE FROM catalog WHERE kind = 'none'")
            # What they may not: write events other than through append_events(), change
            # or remove them, or change the schema.
            for sql in (
                "INSERT INTO events (event_id, stream_id, version, type, schema, data, metadata)"
                " VALUES (gen_random_uuid(), 'forged', 1, 'X', 1, '{}', '{}')",
                "UPDATE events SET type = 'Forged'",
                "DELETE FROM events",
                "TRUNCATE events",
                "DELETE FROM inbox",
                "LOCK TABLE events IN EXCLUSIVE MODE",
                "CREATE TABLE mine (id int)",
                "DROP TABLE catalog",
                "ALTER FUNCTION append_events(text, integer, uuid[], text[], smallint[],"
                " jsonb[], jsonb[]) SECURITY INVOKER",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.execute(sql)
            assert await conn.fetchval("SELECT count(*) FROM events") == 1
    finally:
        await pool.close()
