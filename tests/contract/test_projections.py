"""Read models against real PostgreSQL: live projection equals a rebuild from the stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import uuid
from typing import Any

import asyncpg

from proto.envelope import Metadata
from proto.events import (
    Event,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmExpunged,
    VmPlaced,
    VmStarted,
    VmStopped,
)
from shared.eventstore import NO_STREAM, EventStore, NewEvent
from shared.projections import ALL, Projector

META = Metadata(correlation_id="workload")


def vm_life(rng: random.Random) -> tuple[str, list[Event], str]:
    """A random VM history and the state CloudStack would show at its end."""
    vm, job = str(uuid.uuid4()), str(uuid.uuid4())
    events: list[Event] = [VmDeployRequested(
        vm_id=vm, job_id=job, account_id=f"acct{rng.randrange(3)}", user_id="u", name=vm[:8],
        display_name=vm[:8], instance_name=f"i-{vm[:8]}", zone_id="z", service_offering_id="so",
        vm_snapshot_id="snap", network_ids=["n1", "n2"][: rng.randrange(3)],
    )]
    if rng.random() < 0.2:
        events.append(VmDeployFailed(vm_id=vm, job_id=job, step="plan", reason="no host"))
        return vm, events, "Error"
    events.append(VmPlaced(vm_id=vm, host_id="h1", pool_id="p1", cpu_number=2, cpu_speed=1000,
                           memory_mb=2048))
    events.append(VmStarted(vm_id=vm, job_id=job, host_id="h1", hypervisor_ref="vm-42",
                            task_ids=["task-1", "task-2"]))
    state = "Running"
    for follow, name in ((VmStopped, "Stopped"), (VmDestroyed, "Destroyed"),
                         (VmExpunged, "Expunging")):
        if rng.random() < 0.5:
            break
        events.append(follow(vm_id=vm))
        state = name
    return vm, events, state


def seed_life(rng: random.Random, snapshot: str, pool: str) -> list[Event]:
    events: list[Event] = [TemplateSeedStarted(vm_snapshot_id=snapshot, pool_id=pool)]
    if rng.random() < 0.25:
        events.append(TemplateSeedFailed(vm_snapshot_id=snapshot, pool_id=pool, reason="full"))
        return events
    events.append(TemplateSeeded(vm_snapshot_id=snapshot, pool_id=pool, template_id="t",
                                 install_path=f"[{pool}] seed-{snapshot}/seed.vmdk"))
    if rng.random() < 0.3:
        events.append(TemplateRemoved(vm_snapshot_id=snapshot, pool_id=pool))
    return events


async def tables(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with pool.acquire() as conn:
        for projection in ALL:
            key = ", ".join(projection.table.key)
            rows = await conn.fetch(f"SELECT * FROM {projection.table.name} ORDER BY {key}")
            out[projection.table.name] = [dict(r) for r in rows]
    return out


async def test_rebuild_equals_live_after_a_concurrent_workload(
    store: EventStore, pool: asyncpg.Pool, database_url: str
) -> None:
    expected_states: dict[str, str] = {}

    async def writer(w: int) -> None:
        rng = random.Random(w)
        for i in range(30):
            vm, events, state = vm_life(rng)
            expected_states[vm] = state
            # Each step is its own append, as the services make them.
            for version, event in enumerate(events):
                await store.append(f"vm-{vm}", [NewEvent(event, META)], version)
            seed = seed_life(rng, f"snap-{w}-{i}", f"pool-{i % 3}")
            await store.append(f"spoolref-snap-{w}-{i}-pool-{i % 3}",
                               [NewEvent(e, META) for e in seed], NO_STREAM)

    live = Projector(store, ALL, batch=50)
    running = asyncio.create_task(live.run())
    try:
        await asyncio.gather(*(writer(w) for w in range(8)))
        head = await store.head()
        for _ in range(600):
            if await live.checkpoint() == head:
                break
            await asyncio.sleep(0.05)
        assert await live.checkpoint() == head
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    before = await tables(pool)
    states = {str(r["id"]): r["state"] for r in before["vm_instances"]}
    assert states == expected_states
    jobs = before["async_jobs"]
    assert len(jobs) == 240
    assert {j["status"] for j in jobs} == {1, 2}
    assert all((j["status"] == 2) == (j["error_text"] == "no host") for j in jobs)
    assert len(before["vmsnapshot_spool_ref"]) == 240
    assert {r["state"] for r in before["vmsnapshot_spool_ref"]} == {
        "Ready", "Error", "Destroyed"}

    rebuilt = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.cli", "projections", "rebuild"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True, text=True, check=True,
    )
    assert f"from {len(await store.read_all(0, 100_000))} events" in rebuilt.stdout
    assert await tables(pool) == before
