"""A busy NATS server answers a new client's handshake late: its own first PING, sent two
seconds after the client came, then arrives ahead of the PONG nats.py waits for, and nats.py
hands back a client that never sends anything. ``shared.bus.open_nats`` connects again.

The busy server is a real nats-server checking a password against a bcrypt hash so costly
that the check outlasts those two seconds, as a normal hash does on a machine where many
services connect at once."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from shared.bus import open_nats
from shared.stack._servers import (
    Server,
    free_port,
    private_dir,
    single_user,
    start_nats,
    write_private,
)

USER, PASSWORD = "busy", "a-password"
SLOW_ROUNDS = 2 ** 16  # over 3 s to check here: past the server's first PING at 2 s
FAST_ROUNDS = 2 ** 4


@functools.cache
def authorization(rounds: int) -> str:
    return single_user(USER, PASSWORD, rounds)


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[Server]:
    """nats-server whose one user's password takes seconds to check."""
    write_private(private_dir(tmp_path / "nats") / "auth.conf", authorization(SLOW_ROUNDS))
    server = start_nats(tmp_path, free_port(), USER, PASSWORD,
                        authorization='include "auth.conf"')
    yield server
    server.stop()


def quicken(server: Server, state: Path) -> None:
    """The server checks the password quickly from now on (its load has gone)."""
    write_private(state / "nats" / "auth.conf", authorization(FAST_ROUNDS))
    server.process.send_signal(signal.SIGHUP)


async def test_nats_py_alone_returns_a_client_that_never_connected(
        busy_server: Server) -> None:
    # What open_nats works around: if nats.py ever reads past the server's PING, this
    # fails, and open_nats's second attempt is no longer needed.
    nc = await nats.connect(busy_server.url, user=USER, password=PASSWORD, connect_timeout=10,
                            allow_reconnect=False)
    try:
        assert not nc.is_connected
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("anyone", b"", timeout=1)
    finally:
        await nc.close()


async def test_open_nats_connects_again_and_the_connection_works(
        busy_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shared.bus")
    opening = asyncio.ensure_future(open_nats([busy_server.url], user=USER, password=PASSWORD,
                                              connect_timeout=10))
    async with asyncio.timeout(60):
        while not any("PING before the PONG" in r.getMessage() for r in caplog.records):
            assert not opening.done(), "connected at once: the server was not busy enough"
            await asyncio.sleep(0.05)
        quicken(busy_server, tmp_path)
        nc = await opening
    try:
        assert nc.is_connected

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("echo", cb=echo)
        assert (await nc.request("echo", b"through", timeout=5)).data == b"through"
    finally:
        await nc.close()
