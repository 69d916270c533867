"""Fixtures of the contract tests that need NATS: a client, and a relay feeding JetStream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from shared.bus import ensure_events_stream
from shared.eventstore import EventStore
from shared.relay import Relay
from shared.stack._servers import Server
from tests.helpers import nats_connect


@pytest.fixture
async def nc(nats_server: Server) -> AsyncIterator[NATS]:
    conn = await nats_connect(nats_server)
    yield conn
    await conn.close()


@pytest.fixture
async def relay(store: EventStore, nc: NATS) -> AsyncIterator[None]:
    """The relay running, so events appended to ``store`` reach JetStream."""
    await ensure_events_stream(nc.jetstream())
    task = asyncio.create_task(Relay(store, nc.jetstream()).run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
