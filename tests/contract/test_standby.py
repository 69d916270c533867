"""The relay and the projector run one active copy; replicas stand by and take over.

Two real ``python -m services.relay`` and two ``python -m services.projector`` processes
run against one PostgreSQL and one nats-server. Each pair has one active copy (its
``/healthz`` says ``role``); events flow; the active copy of each is SIGKILLed; the standby
takes over, and events appended after the kill reach JetStream and the read models.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

from proto.envelope import Metadata
from proto.events import VmStopped
from shared.eventstore import Append, EventStore
from shared.stack._servers import Server, free_port, terminate
from shared.stack.launcher import role
from tests.helpers import eventually, nats_connect, settings_for, start_service, stream_messages

META = Metadata(correlation_id="standby", causation_id="standby", actor="test")


def health(port: int) -> str:
    return f"http://127.0.0.1:{port}/healthz"


async def roles(copies: list[tuple[subprocess.Popen[bytes], int]]) -> list[str | None]:
    return await asyncio.gather(*(asyncio.to_thread(role, health(port)) for _, port in copies))


async def test_one_copy_is_active_and_a_standby_takes_over_when_it_is_killed(
        store: EventStore, database_url: str, nats_server: Server, tmp_path: Path) -> None:
    copies: dict[str, list[tuple[subprocess.Popen[bytes], int]]] = {}
    for service in ("relay", "projector"):
        for n in range(2):
            port = free_port()
            settings = settings_for(database_url, nats_server,
                                    health_listen=f"127.0.0.1:{port}")
            copies.setdefault(service, []).append(
                (start_service(service, settings, tmp_path / f"{service}-{n}"), port))
    nc = await nats_connect(nats_server)
    try:
        async def append() -> int:
            vm_id = str(uuid.uuid4())
            position = await store.commit([Append(f"vm-{vm_id}", [VmStopped(vm_id=vm_id)])],
                                          META)
            assert position is not None
            return position

        async def flowed(position: int) -> None:
            async def relayed() -> bool:
                try:
                    return any(p == position for _, p in await stream_messages(nc))
                except Exception:
                    return False

            async def projected() -> bool:
                async with store.pool.acquire() as conn:
                    reached = await conn.fetchval(
                        "SELECT position FROM checkpoints WHERE name = 'projector'")
                return (reached or 0) >= position

            await eventually(relayed, 60, f"position {position} in JetStream")
            await eventually(projected, 60, f"position {position} projected")

        for service, pair in copies.items():
            async def one_active(pair: list[tuple[subprocess.Popen[bytes], int]] = pair
                                 ) -> bool:
                return sorted(map(str, await roles(pair))) == ["active", "standby"]

            await eventually(one_active, 60, f"one active {service} and one standby")
        await flowed(await append())

        for service, pair in copies.items():
            active = (await roles(pair)).index("active")
            process, _ = pair[active]
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            _, standby_port = pair[1 - active]

            async def took_over(port: int = standby_port) -> bool:
                return await asyncio.to_thread(role, health(port)) == "active"

            await eventually(took_over, 60, f"the standby {service} to take over")
        # Events appended after both kills still flow, through the copies that took over.
        await flowed(await append())
    finally:
        await nc.close()
        for pair in copies.values():
            for process, _ in pair:
                terminate(process)
