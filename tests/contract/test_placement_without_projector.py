"""Placement decides from the event store alone: with the projector stopped, deploys placed
at once and concurrently never overbook a host and honour a requested host; restarted,
the projector catches up to read models equal to a rebuild. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg

from proto import streams
from proto.events import VmDeployFailed, VmPlaced
from services.planner.handlers import Planner
from shared.bus import Dispatcher, Outcome
from shared.domain import capacity
from shared.eventstore import Append, EventStore
from shared.projections import ALL, Projector
from tests.kit import deliver, deploy, given, host, new_stream

GB = 1024


async def tables(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with pool.acquire() as conn:
        for projection in ALL:
            key = ", ".join(projection.table.key)
            rows = await conn.fetch(f"SELECT * FROM {projection.table.name} ORDER BY {key}")
            out[projection.table.name] = [dict(r) for r in rows]
    return out


async def caught_up(projector: Projector, store: EventStore) -> None:
    head = await store.head()
    for _ in range(600):
        if await projector.checkpoint() == head:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the projector did not reach position {head}")


async def no_changes() -> list[Append]:
    return []


async def test_placements_are_right_with_the_projector_stopped(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    # Two hosts on pool-1 with room for 4 VMs of 1 GB each, one host on pool-2 only.
    await given(store, streams.host("h1"), host("h1", ["pool-1"], memory_mb=4 * GB))
    await given(store, streams.host("h2"), host("h2", ["pool-1"], memory_mb=4 * GB))
    await given(store, streams.host("h3"), host("h3", ["pool-2"], memory_mb=64 * GB))
    projector = Projector(store, ALL, batch=50)
    running = asyncio.create_task(projector.run())
    await caught_up(projector, store)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    stopped_at = await projector.checkpoint()

    planner = Dispatcher("planner", store, Planner(store, no_changes).handlers())
    # Two deploys name host h2, one after the other; then ten more all at once.
    requested = [str(uuid.uuid4()) for _ in range(2)]
    for vm_id in requested:
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, memory_mb=GB, host_id="h2"))
        first = (await store.read_stream(streams.vm(vm_id)))[0]
        result, _ = await deliver(planner, str(first.event_id))
        assert result.outcome is Outcome.HANDLED
    burst = [str(uuid.uuid4()) for _ in range(10)]
    for vm_id in burst:
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, memory_mb=GB))
    firsts = [(await store.read_stream(streams.vm(v)))[0] for v in burst]
    results = await asyncio.gather(*(deliver(planner, str(f.event_id)) for f in firsts))
    assert {result.outcome for result, _ in results} == {Outcome.HANDLED}

    # Every deploy settled; the requested host was honoured; no host is overbooked.
    ends = {}
    for vm_id in requested + burst:
        events = [e.event() for e in await store.read_stream(streams.vm(vm_id))]
        ends[vm_id] = events[1]
    for vm_id in requested:
        placed = ends[vm_id]
        assert isinstance(placed, VmPlaced) and placed.host_id == "h2"
    placed_on = [e.host_id for e in ends.values() if isinstance(e, VmPlaced)]
    assert sorted(placed_on) == ["h1"] * 4 + ["h2"] * 4
    failed = [e for e in ends.values() if isinstance(e, VmDeployFailed)]
    assert len(failed) == 4 and {e.error_code for e in failed} == {533}
    for host_id in ("h1", "h2", "h3"):
        recorded = await store.read_stream(streams.host(host_id))
        state = capacity.fold(host_id, [e.event() for e in recorded])
        view = state.view()
        assert view.reserved_memory_mb <= view.memory_mb_total
        assert {v.id: v for v in await store.hosts()}[host_id] == view
        held = {vm for vm, e in ends.items() if isinstance(e, VmPlaced) and e.host_id == host_id}
        assert set(state.reservations) == held

    # The read models did not move meanwhile: nothing above decided from them.
    assert await projector.checkpoint() == stopped_at < await store.head()

    restarted = Projector(store, ALL, batch=50)
    running = asyncio.create_task(restarted.run())
    try:
        await caught_up(restarted, store)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    live = await tables(pool)
    states = {str(r["id"]): r["state"] for r in live["vm_instances"]}
    assert len(states) == 12 and set(states.values()) == {"Starting", "Error"}
    hosts = {r["id"]: r for r in live["catalog"] if r["kind"] == "host"}
    assert len(hosts) == 3
    await Projector(store, ALL, batch=50).rebuild()
    assert await tables(pool) == live
