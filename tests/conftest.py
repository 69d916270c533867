"""Fixtures that start real servers: PostgreSQL, nats-server (JetStream), vcsim and a
private libvirt daemon (a KVM host).

They use the same start functions as `snapdeploy up`. One PostgreSQL server serves the
session and each test gets a fresh database; NATS servers are cheap, so each test that
asks for one gets its own.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import create_pool, migrate
from shared.eventstore import EventStore
from shared.stack._servers import Server, free_port, start_nats, start_postgres, start_vcsim
from tests.harness.libvirt import KvmSite

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_postgres(tmp_path_factory.mktemp("pg"), free_port(), secrets.token_hex(8))
    yield server
    server.stop()


@pytest.fixture
async def database_url(pg_server: Server) -> str:
    name = f"test_{next(_databases)}"
    conn = await asyncpg.connect(pg_server.url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return pg_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=20)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Server]:
    server = start_nats(tmp_path, free_port(), "snapdeploy", secrets.token_hex(8))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vcsim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_vcsim(tmp_path_factory.mktemp("vcsim"), free_port(), "admin", "vcsim-pass")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kvm_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvmSite]:
    site = KvmSite(tmp_path_factory.mktemp("kvm"))
    yield site
    site.stop()
