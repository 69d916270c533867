"""Helpers shared by the tests: settings for real servers, service processes, JetStream reads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from proto import subjects
from shared.config import Settings, as_env
from shared.stack._servers import Server, spawn


def settings_for(database_url: str, nats_server: Server, **overrides: str) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_server.url,
        nats_user=nats_server.user,
        nats_password=nats_server.password,
        **overrides,  # type: ignore[arg-type]
    )


async def nats_connect(server: Server) -> NATS:
    return await nats.connect(server.url, user=server.user, password=server.password)


def start_service(name: str, settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    """``python -m services.<name>`` as a child process, logging to ``log_dir/<name>.log``."""
    env = {**os.environ, **as_env(settings)}
    return spawn(name, [sys.executable, "-m", f"services.{name}"], log_dir / f"{name}.log",
                 env=env, cwd=Path(__file__).parent.parent)


async def stream_messages(nc: NATS) -> list[tuple[str, int]]:
    """(Nats-Msg-Id, position) of every message in the events stream, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.EVENTS_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.EVENTS_STREAM, seq)
        headers = msg.headers or {}
        out.append((headers["Nats-Msg-Id"], int(headers[subjects.POSITION_HEADER])))
    return out


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
