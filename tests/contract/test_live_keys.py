"""The API keys a gateway keeps (``shared.apikeys.LiveKeys``), against a real PostgreSQL: kept
only while changes are heard (migration 0020's announcements, on the connection
``shared.db.Notifications`` listens on), forgotten at a change, at a lost connection, and
never kept from a read that a change crossed.

Each test proves a key was or was not kept the same way: it revokes the key with the
announcement switched off, so only a key kept would still be answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from shared import apikeys
from shared.apikeys import LiveKeys, SecretBox
from shared.db import Notifications
from shared.db._listen import CHECK_S
from tests.helpers import eventually

BOX = SecretBox("k" * 32)
OWNER = {"account_id": "acct-1", "account_name": "acct", "user_id": "user-1",
         "user_name": "user", "role": "user"}


@pytest.fixture
async def notifications(pool: asyncpg.Pool) -> AsyncIterator[Notifications]:
    """One listening connection, as a gateway's: also on a channel these tests never use."""
    heard = Notifications(pool, (apikeys.CHANGED_CHANNEL, "snapdeploy_events"))
    task = asyncio.ensure_future(heard.run())
    await until(lambda: heard.live, "listening")
    yield heard
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def keys(pool: asyncpg.Pool, notifications: Notifications) -> LiveKeys:
    return LiveKeys(pool, BOX, notifications)


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    async def now() -> bool:
        return check()

    await eventually(now, within, what)


async def make_key(pool: asyncpg.Pool, api_key: str) -> None:
    async with pool.acquire() as conn:
        await apikeys.replace_user_keys(conn, BOX, api_key=api_key, secret=f"{api_key}-secret",
                                        **OWNER)


async def revoke_unheard(pool: asyncpg.Pool, api_key: str) -> None:
    """Revoke ``api_key`` without announcing it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed")
        await conn.execute("UPDATE api_keys SET revoked = now(), secret_key = NULL,"
                           " secret_sealed = NULL WHERE api_key = $1", api_key)
        await conn.execute("ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed")


async def test_a_key_is_kept_and_forgotten_when_its_row_changes(
        pool: asyncpg.Pool, keys: LiveKeys) -> None:
    await make_key(pool, "kept")
    found = await keys.lookup("kept")
    assert found is not None and found[1] == "kept-secret" and found[0]["user_id"] == "user-1"
    await revoke_unheard(pool, "kept")
    assert await keys.lookup("kept") == found  # kept: the table was not read again

    async with pool.acquire() as conn:  # a change announced: the key is read again
        await conn.execute("UPDATE api_keys SET role = role WHERE api_key = 'kept'")
    await eventually(lambda: none(keys.lookup("kept")), 10, "kept refused")

    await make_key(pool, "other")
    assert await keys.lookup("other") is not None
    await make_key(pool, "third")  # the user's new pair revokes "other", announced
    await eventually(lambda: none(keys.lookup("other")), 10, "other refused")
    assert await keys.lookup("third") is not None
    assert await keys.lookup("no-such-key") is None


async def none(answer: Awaitable[object]) -> bool:
    return await answer is None


async def test_a_read_that_a_change_crossed_is_not_kept(
        pool: asyncpg.Pool, keys: LiveKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_key(pool, "crossed")
    read = apikeys.lookup
    heard = keys._changes

    async def crossed(conn: asyncpg.Connection, secrets: SecretBox,
                      api_key: str) -> tuple[dict[str, Any], str] | None:
        found = await read(conn, secrets, api_key)
        # A change announced while this read's answer is on its way.
        async with pool.acquire() as other:
            await other.execute("UPDATE api_keys SET role = role WHERE api_key = 'crossed'")
        await until(lambda: keys._changes > heard, "the change heard")
        return found

    monkeypatch.setattr(apikeys, "lookup", crossed)
    assert await keys.lookup("crossed") is not None
    monkeypatch.setattr(apikeys, "lookup", read)
    await revoke_unheard(pool, "crossed")
    assert await keys.lookup("crossed") is None  # read again: it was not kept


async def test_nothing_is_kept_while_changes_are_not_heard(
        pool: asyncpg.Pool, keys: LiveKeys, notifications: Notifications) -> None:
    await make_key(pool, "lost")
    assert await keys.lookup("lost") is not None
    async with pool.acquire() as conn:
        listeners = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND (query = 'SELECT 1' OR query LIKE 'LISTEN %')")
    assert listeners == 1
    await until(lambda: not notifications.live, "the connection lost")
    await revoke_unheard(pool, "lost")
    assert await keys.lookup("lost") is None  # forgotten with the connection

    await make_key(pool, "back")
    await until(lambda: notifications.live, "listening again", 20.0)  # after its pause
    assert await keys.lookup("back") is not None
    await revoke_unheard(pool, "back")
    assert await keys.lookup("back") is not None  # kept again


async def test_nothing_kept_is_used_while_the_listening_connection_does_not_answer(
        pool: asyncpg.Pool, keys: LiveKeys, notifications: Notifications) -> None:
    await make_key(pool, "frozen")
    assert await keys.lookup("frozen") is not None
    async with pool.acquire() as conn:
        [backend] = await conn.fetchval(
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND datname = current_database()"
            " AND (query = 'SELECT 1' OR query LIKE 'LISTEN %')")
    os.kill(backend, signal.SIGSTOP)  # it hears nothing, and says nothing
    try:
        await revoke_unheard(pool, "frozen")
        await asyncio.sleep(2 * CHECK_S + 0.5)
        assert notifications.live  # not given up on yet, but its last check went unanswered
        assert await keys.lookup("frozen") is None
        # Given up on after its check's time: closed, and another connection listens.
        await until(lambda: not notifications.live, "the frozen connection given up on")
        await make_key(pool, "after")
        await until(lambda: notifications.live, "listening on another connection", 20.0)
        assert await keys.lookup("after") is not None
        await revoke_unheard(pool, "after")
        assert await keys.lookup("after") is not None  # kept again
    finally:
        os.kill(backend, signal.SIGCONT)
