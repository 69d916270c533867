"""API key pairs in the ``api_keys`` table: secret keys sealed at rest, old pairs revoked.

HMAC verification needs the secret key itself, so it is kept encrypted rather than hashed:
AES-256-GCM under a key derived (HKDF-SHA256) from ``Settings.key_encryption_key``, with
the row's api key as associated data, so a sealed secret copied onto another row does not
open. A user has one live key pair: registering a new one revokes the others at once
(their rows stay, without a secret, so a revoked key is never brought back).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.config import Settings
from shared.db import Notifications

log = logging.getLogger(__name__)

MIN_KEK_LENGTH = 32
_VERSION = b"\x01"  # the layout below; a new algorithm would get a new first byte
_NONCE_BYTES = 12
_HKDF_INFO = b"snapdeploy api_keys secret_key v1"
_USER_LOCK = 0x6B657973  # "keys": with the user id's hash, serialises one user's changes
# Every change of an api_keys row is announced here when it commits (migration 0020).
CHANGED_CHANNEL = "snapdeploy_api_keys"
# LiveKeys: how many keys one process keeps.
HELD_KEYS = 10_000


class SealError(ValueError):
    """A sealed secret that does not open: another key encryption key, another row, or
    altered bytes."""


class SecretBox:
    """Seals and opens secret keys; ``api_key`` is the associated data of each."""

    def __init__(self, key_encryption_key: str) -> None:
        if len(key_encryption_key) < MIN_KEK_LENGTH:
            raise ValueError(
                f"the key encryption key (SNAPDEPLOY_KEY_ENCRYPTION_KEY) must be at least "
                f"{MIN_KEK_LENGTH} characters; `snapdeploy up` generates one into the state "
                "directory's secrets.json")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_HKDF_INFO).derive(key_encryption_key.encode())
        self._aead = AESGCM(key)

    def seal(self, api_key: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), api_key.encode())

    def open(self, api_key: str, sealed: bytes) -> str:
        """The secret sealed for ``api_key``.

        Raises:
            SealError: not sealed by this box for this api key.
        """
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SealError("not a sealed secret key of a known layout")
        nonce, body = sealed[1:1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, api_key.encode()).decode()
        except InvalidTag:
            raise SealError("the secret key does not open with this key encryption key "
                            "for this api key") from None


@lru_cache(maxsize=4)
def _box(key_encryption_key: str) -> SecretBox:
    return SecretBox(key_encryption_key)


def box(settings: Settings) -> SecretBox:
    """The box for ``settings`` (derived once per key).

    Raises:
        ValueError: no usable key encryption key is configured.
    """
    return _box(settings.key_encryption_key)


async def lookup(conn: asyncpg.Connection, secrets: SecretBox,
                 api_key: str) -> tuple[dict[str, Any], str] | None:
    """The live row of ``api_key`` (owner columns) and its secret key, or None."""
    row = await conn.fetchrow(
        "SELECT secret_sealed, account_id, account_name, user_id, user_name, role"
        " FROM api_keys WHERE api_key = $1 AND revoked IS NULL", api_key)
    if row is None or row["secret_sealed"] is None:
        return None  # unknown, revoked, or (from before sealing) not yet sealed
    try:
        secret = secrets.open(api_key, bytes(row["secret_sealed"]))
    except SealError:
        log.error("api key %s: its secret key does not open; was "
                  "SNAPDEPLOY_KEY_ENCRYPTION_KEY changed?", api_key)
        return None
    return dict(row), secret


class LiveKeys:
    """``lookup`` for one process, keeping each live key it has read (its row and secret,
    the most recently used ``HELD_KEYS``), so a signed request costs no statement.

    Kept only while ``notifications`` hears ``CHANGED_CHANNEL``, where every change of an
    api_keys row is announced when it commits: a change forgets that key at once, and the
    next request reads its row again (a revoked key is refused then). While not hearing
    (before listening has begun, from a lost connection until it listens again, and while
    the listening connection has not answered a check within ``2 * CHECK_S``: see
    ``shared.db.Notifications``), nothing kept is used and every lookup reads the table;
    what was kept is forgotten each time listening stops or begins. A lookup that read the
    table while a change was announced is not kept: what it read may be from before the
    change. Unknown and revoked keys are never kept, so a key made a moment ago works at
    once.
    """

    def __init__(self, pool: asyncpg.Pool, secrets: SecretBox,
                 notifications: Notifications) -> None:
        self._pool = pool
        self._secrets = secrets
        self._notifications = notifications
        self._held: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        # Changes heard, and listens begun or ended: a read across one is not kept.
        self._changes = 0
        notifications.on(CHANGED_CHANNEL, self.forget)
        notifications.watch(lambda _listening: self.forget())

    async def lookup(self, api_key: str) -> tuple[dict[str, Any], str] | None:
        """As ``lookup`` (the module's function) answers now."""
        hearing = self._notifications.hearing()
        held = self._held.get(api_key) if hearing else None
        if held is not None:
            self._held.move_to_end(api_key)
            return held
        changes = self._changes
        async with self._pool.acquire() as conn:
            found = await lookup(conn, self._secrets, api_key)
        if (found is not None and hearing and self._notifications.hearing()
                and changes == self._changes):
            self._held[api_key] = found
            if len(self._held) > HELD_KEYS:
                self._held.popitem(last=False)
        return found

    def forget(self, api_key: str | None = None) -> None:
        """Forget ``api_key`` (every key without one), and keep nothing that a lookup in
        flight read: the gateway's own revocations call it once they commit, so its next
        request is refused without waiting for the announcement (the other gateways'
        are as soon as PostgreSQL delivers it to them)."""
        self._changes += 1
        if api_key:
            self._held.pop(api_key, None)
        else:
            self._held.clear()


async def api_keys(conn: asyncpg.Connection) -> list[str]:
    """Every API key stored, live or revoked (``lookup`` tells which are live)."""
    return [r["api_key"] for r in await conn.fetch("SELECT api_key FROM api_keys")]


async def replace_user_keys(conn: asyncpg.Connection, secrets: SecretBox, *, api_key: str,
                            secret: str, account_id: str, account_name: str, user_id: str,
                            user_name: str, role: str) -> int:
    """Store a new key pair for the user and revoke every other pair of theirs, in one
    transaction; returns how many were revoked."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _USER_LOCK, user_id)
        revoked = await conn.fetch(
            "UPDATE api_keys SET revoked = now(), secret_key = NULL, secret_sealed = NULL"
            " WHERE user_id = $1 AND revoked IS NULL AND api_key <> $2 RETURNING api_key",
            user_id, api_key)
        await conn.execute(
            "INSERT INTO api_keys (api_key, secret_sealed, account_id, account_name, user_id,"
            " user_name, role) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (api_key) DO UPDATE SET secret_sealed = excluded.secret_sealed,"
            " secret_key = NULL WHERE api_keys.revoked IS NULL",
            api_key, secrets.seal(api_key, secret), account_id, account_name, user_id,
            user_name, role)
    return len(revoked)


async def revoke_account(conn: asyncpg.Connection, account_id: str) -> None:
    """Revoke every live key pair of an account's users (the account is deleted)."""
    await conn.execute(
        "UPDATE api_keys SET revoked = now(), secret_key = NULL, secret_sealed = NULL"
        " WHERE account_id = $1 AND revoked IS NULL", account_id)


async def ensure_configured(conn: asyncpg.Connection, secrets: SecretBox, *, api_key: str,
                            secret: str, account_id: str, account_name: str, user_id: str,
                            user_name: str, role: str) -> bool:
    """Make a configured key pair (the admin's) the user's live one, unless that api key was
    revoked by a later ``registerUserKeys``: a revoked key stays revoked. Returns whether
    the pair is live."""
    revoked = await conn.fetchval(
        "SELECT revoked IS NOT NULL FROM api_keys WHERE api_key = $1", api_key)
    if revoked:
        return False
    await replace_user_keys(conn, secrets, api_key=api_key, secret=secret,
                            account_id=account_id, account_name=account_name, user_id=user_id,
                            user_name=user_name, role=role)
    return True


async def seal_clear_rows(conn: asyncpg.Connection, secrets: SecretBox) -> int:
    """Seal the secret keys stored in clear before sealing existed; returns how many."""
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT api_key, secret_key FROM api_keys WHERE secret_key IS NOT NULL FOR UPDATE")
        for row in rows:
            await conn.execute(
                "UPDATE api_keys SET secret_sealed = $2, secret_key = NULL WHERE api_key = $1",
                row["api_key"], secrets.seal(row["api_key"], row["secret_key"]))
    return len(rows)
