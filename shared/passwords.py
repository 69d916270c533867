"""Users' passwords and login sessions, kept out of the event store.

A password is kept only as a salted scrypt hash (``scrypt$<n>$<r>$<p>$<salt>$<hash>``,
base64) in the ``user_passwords`` table; it is never logged and never enters an event. A
login session (CloudStack's ``login``) is a pair of random tokens: the ``JSESSIONID``
cookie names the session and the ``sessionkey`` (a parameter of every later request, and
a cookie) proves the request was made by the page that logged in. The table holds only
their SHA-256. A session ends at ``logout``, after ``IDLE_S`` without a request, or
``MAX_AGE_S`` after the login whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD_LENGTH = 1024
IDLE_S = 30 * 60
MAX_AGE_S = 12 * 3600
# A session's last_seen is moved on at most this often (not one write per request).
TOUCH_EVERY_S = 60


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    """A new salted hash of ``password``."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


# Checked against when the user is unknown, so that a login takes as long either way.
_DECOY = hash_password(secrets.token_urlsafe(16))
_USER_LOCK = 0x70617373  # "pass": with the user id's hash, serialises one user's passwords


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` hashes (False for no hash, or a hash of
    a layout this code does not know)."""
    try:
        kind, n, r, p, salt, digest = (stored or _DECOY).split("$")
        if kind != "scrypt" or len(password) > MAX_PASSWORD_LENGTH:
            return False
        computed = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return stored is not None and hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass(frozen=True)
class Login:
    """Who a password or a session belongs to."""

    user_id: str
    user_name: str
    account_id: str
    account_name: str
    role: str


async def set_password(conn: asyncpg.Connection, login: Login, password: str) -> None:
    """Keep ``password``'s hash for the user (replacing any earlier one).

    One user's passwords are set one at a time (``_USER_LOCK``): two sessions inserting
    the same user's first row at once would otherwise meet on its name, which ``ON
    CONFLICT (user_id)`` does not cover (two gateways starting together, each making the
    configured admin password the admin's)."""
    hashed = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _USER_LOCK,
                           login.user_id)
        await conn.execute(
            "INSERT INTO user_passwords (user_id, user_name, account_id, account_name, role,"
            " password_hash) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE"
            " SET password_hash = excluded.password_hash, user_name = excluded.user_name,"
            " account_name = excluded.account_name, role = excluded.role, updated = now()",
            login.user_id, login.user_name, login.account_id, login.account_name, login.role,
            hashed)


async def has_password(conn: asyncpg.Connection, user_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM user_passwords WHERE user_id = $1", user_id))


async def check_login(conn: asyncpg.Connection, user_name: str, password: str) -> Login | None:
    """The user ``user_name`` names if ``password`` is theirs, else None."""
    row = await conn.fetchrow(
        "SELECT user_id, user_name, account_id, account_name, role, password_hash"
        " FROM user_passwords WHERE user_name = $1", user_name)
    stored = row["password_hash"] if row is not None else None
    # The KDF takes tens of milliseconds: off the event loop.
    if not await asyncio.to_thread(verify_password, password, stored) or row is None:
        return None
    return Login(row["user_id"], row["user_name"], row["account_id"], row["account_name"],
                 row["role"])


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Session:
    session_id: str  # the JSESSIONID cookie
    session_key: str  # the sessionkey parameter and cookie
    timeout_s: int


async def open_session(conn: asyncpg.Connection, login: Login) -> Session:
    """A new session for ``login``; expired sessions are removed on the way."""
    session_id, session_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE expires < now()"
                           " OR last_seen < now() - $1::interval", timedelta(seconds=IDLE_S))
        await conn.execute(
            "INSERT INTO sessions (id_hash, key_hash, user_id, account_id, account_name,"
            " user_name, role, expires) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " now() + $8::interval)",
            _digest(session_id), _digest(session_key), login.user_id, login.account_id,
            login.account_name, login.user_name, login.role, timedelta(seconds=MAX_AGE_S))
    return Session(session_id, session_key, IDLE_S)


async def resume_session(conn: asyncpg.Connection, session_id: str,
                         session_key: str) -> Login | None:
    """Who the live session ``session_id`` belongs to, if ``session_key`` is its key; it
    counts as a use of the session (its idle time starts again)."""
    if len(session_id) > 255 or len(session_key) > 255:
        return None
    row = await conn.fetchrow(
        "SELECT key_hash, user_id, user_name, account_id, account_name, role,"
        " last_seen < now() - $2::interval AS stale FROM sessions"
        " WHERE id_hash = $1 AND expires > now() AND last_seen > now() - $3::interval",
        _digest(session_id), timedelta(seconds=TOUCH_EVERY_S), timedelta(seconds=IDLE_S))
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), _digest(session_key)):
        return None
    if row["stale"]:
        await conn.execute("UPDATE sessions SET last_seen = now() WHERE id_hash = $1",
                           _digest(session_id))
    return Login(row["user_id"], row["user_name"], row["account_id"], row["account_name"],
                 row["role"])


async def close_session(conn: asyncpg.Connection, session_id: str) -> bool:
    """End the session ``session_id``; whether there was one."""
    done = await conn.execute("DELETE FROM sessions WHERE id_hash = $1", _digest(session_id))
    return bool(done != "DELETE 0")


async def forget_account(conn: asyncpg.Connection, account_id: str) -> None:
    """The account is deleted: its users' sessions end and their passwords are forgotten."""
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE account_id = $1", account_id)
        await conn.execute("DELETE FROM user_passwords WHERE account_id = $1", account_id)


async def remember_account_password(store: object, *, user_id: str, user_name: str,
                                    account_id: str, account_name: str, role: str,
                                    password: str | None) -> None:
    """createAccount's one step here: keep the first user's password as a hash, in the
    PostgreSQL store's database (an in-memory store, as tests use, keeps none)."""
    pool: asyncpg.Pool | None = getattr(store, "pool", None)
    if not password or pool is None:
        return
    async with pool.acquire() as conn:
        await set_password(conn, Login(user_id, user_name, account_id, account_name, role),
                           password)
