"""Passwords kept in PostgreSQL (``shared.passwords``), against a real server."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared import passwords

ADMIN = passwords.Login("admin-user", "admin", "admin-account", "admin", "admin")


async def test_the_same_users_password_set_at_once_from_many_sessions_is_kept_once(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """As two gateways starting together each make the configured admin password the
    admin's: neither fails on the other's row, and the user has one password, one of
    theirs. (The hash is made cheap here, so that the sessions' inserts meet.)"""
    monkeypatch.setattr(passwords, "hash_password", lambda password: f"hashed:{password}")

    async def set_one(password: str) -> None:
        async with pool.acquire() as conn:
            await passwords.set_password(conn, ADMIN, password)

    for attempt in range(20):
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM user_passwords")
        chosen = [f"password-{attempt}-{i}" for i in range(16)]
        await asyncio.gather(*(set_one(p) for p in chosen))
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT user_name, password_hash FROM user_passwords")
        assert len(rows) == 1
        assert rows[0]["user_name"] == "admin"
        assert rows[0]["password_hash"] in {f"hashed:{p}" for p in chosen}
