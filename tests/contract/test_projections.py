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
import pytest

from proto import streams
from proto.envelope import Metadata
from proto.events import (
    Event,
    JobCompleted,
    JobSubmitted,
    Nic,
    NicCreated,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmCreated,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmExpunged,
    VmPlaced,
    VmStarted,
    VmStopped,
)
from shared.eventstore import NO_STREAM, ConcurrencyError, EventStore, NewEvent
from shared.projections import ALL, CHECKPOINT, Projector, _apart, _runner
from tests.unit.test_rebuild_plans import IDS, random_event

META = Metadata(correlation_id="workload")


def vm_life(rng: random.Random) -> tuple[str, list[Event], str]:
    """A random VM history and the state CloudStack would show at its end."""
    vm, job = str(uuid.uuid4()), str(uuid.uuid4())
    account = f"acct{rng.randrange(3)}"
    events: list[Event] = [
        VmDeployRequested(
            vm_id=vm, job_id=job, account_id=account, user_id="u", name=vm[:8],
            display_name=vm[:8], instance_name=f"i-{vm[:8]}", zone_id="z",
            service_offering_id="so", cpu_number=1, cpu_speed=500, memory_mb=512,
            pool_id="p1", network_ids=["n1", "n2"][: rng.randrange(3)], vm_snapshot_id="snap",
        ),
        JobSubmitted(job_id=job, cmd="deploy", instance_type="VirtualMachine", instance_id=vm,
                     account_id=account, user_id="u"),
    ]
    if rng.random() < 0.2:
        events += [VmDeployFailed(vm_id=vm, step="plan", reason="no host"),
                   JobCompleted(job_id=job, succeeded=False, error_code=533,
                                error_text="no host")]
        return vm, events, "Error"
    events.append(VmPlaced(vm_id=vm, host_id="h1", pool_id="p1", cpu_number=1, cpu_speed=500,
                           memory_mb=512))
    events.append(VmCreated(vm_id=vm, ref="vm-42", host_id="h1", pool_id="p1", linked=True,
                            task_id="task-1"))
    events.append(NicCreated(vm_id=vm, task_id="task-2", nic=Nic(
        nic_id=str(uuid.uuid4()), network_id="n1", mac="00:0c:29:00:00:01", device_key=4000)))
    events.append(VmStarted(vm_id=vm, host_id="h1", hypervisor_ref="vm-42",
                            task_ids=["task-1", "task-2", "task-3"]))
    events.append(JobCompleted(job_id=job, succeeded=True))
    state = "Running"
    for follow, name in ((VmStopped, "Stopped"), (VmDestroyed, "Destroyed"),
                         (VmExpunged, "Expunging")):
        if rng.random() < 0.5:
            break
        events.append(follow(vm_id=vm))
        state = name
    return vm, events, state


def seed_life(rng: random.Random, snapshot: str, pool: str) -> list[Event]:
    events: list[Event] = [TemplateSeedStarted(vm_snapshot_id=snapshot, pool_id=pool,
                                               template_id="t", name="seed")]
    if rng.random() < 0.25:
        events.append(TemplateSeedFailed(vm_snapshot_id=snapshot, pool_id=pool, reason="full"))
        return events
    events.append(TemplateSeeded(vm_snapshot_id=snapshot, pool_id=pool, template_id="t",
                                 template_ref="vm-9", base_snapshot_ref="snapshot-9",
                                 install_path=f"[{pool}] seed-{snapshot}/seed.vmdk",
                                 task_ids=["task-9"]))
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


async def caught_up(projector: Projector, store: EventStore) -> None:
    """Wait until ``projector``'s checkpoint is the store's head."""
    head = await store.head()
    for _ in range(600):
        if await projector.checkpoint() == head:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the projector did not reach {head}")


async def emptied(pool: asyncpg.Pool) -> None:
    """The read models emptied and the checkpoint moved back to the start."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"TRUNCATE {', '.join(p.table.name for p in ALL)}")
        await conn.execute("UPDATE checkpoints SET position = 0 WHERE name = $1", CHECKPOINT)


async def from_scratch(store: EventStore, pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """The tables a projector makes of every event, starting from empty ones."""
    await emptied(pool)
    await Projector(store, ALL, batch=13).catch_up()
    return await tables(pool)


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
        await caught_up(live, store)
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
    templates = [r for r in before["catalog"] if r["kind"] == "template"]
    assert templates and all(r["version"] == 0 for r in templates)
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


async def test_a_rebuild_too_big_to_hold_in_memory_writes_as_it_goes(
    store: EventStore, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    for i in range(40):
        vm, events, _ = vm_life(rng)
        await store.append(f"vm-{vm}", [NewEvent(e, META) for e in events], NO_STREAM)
        await store.append(f"spoolref-snap-{i}-pool-1",
                           [NewEvent(e, META) for e in seed_life(rng, f"snap-{i}", "pool-1")],
                           NO_STREAM)
    projector = Projector(store, ALL, batch=20)
    await projector.catch_up()
    live = await tables(pool)
    # Held rows overflow after the first batches: the rest of the rebuild reads and writes
    # the tables batch by batch, and must end in the same place.
    monkeypatch.setattr(_runner, "HOLD_MAX_ROWS", 10)
    await projector.rebuild()
    assert await tables(pool) == live


async def append_varied_history(store: EventStore, rng: random.Random, events: int) -> None:
    """Events of every type with ids drawn from a few (so they meet the same rows), on the
    streams of the objects they name, and VM and seed lives beside them."""
    own = list(streams.OWN_STREAM.values())
    appended = 0
    while appended < events:
        stream = rng.choice(own)(rng.choice(IDS)) if rng.random() < 0.7 else f"vm-{rng.choice(IDS)}"
        # Not stored: a name taken, or one event naming a volume twice.
        with contextlib.suppress(ConcurrencyError, asyncpg.CardinalityViolationError):
            await store.append(stream, [NewEvent(random_event(rng), META)])
            appended += 1
        if rng.random() < 0.05:
            vm, lived, _ = vm_life(rng)
            await store.append(f"vm-{vm}", [NewEvent(e, META) for e in lived], NO_STREAM)
            snapshot, pool = rng.choice(IDS), f"pool-{rng.randrange(3)}"
            await store.append(f"spoolref-{uuid.uuid4()}", [NewEvent(e, META) for e in
                                                          seed_life(rng, snapshot, pool)])


async def test_a_rebuild_equals_the_live_projection_over_every_event_type(
    store: EventStore, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await append_varied_history(store, random.Random(11), 1500)
    live = Projector(store, ALL, batch=13)
    head = await live.catch_up()
    assert head == await store.head()
    expected = await tables(pool)
    assert all(len(rows) > 5 for rows in expected.values()), {
        name: len(rows) for name, rows in expected.items()}
    events = len(await store.read_all(0, 100_000))
    # Pages of 7 (each read while the last is folded), one page for all, and rows that
    # overflow what a rebuild holds after a few pages; each in one process, then with the
    # first projection folded in a second one (which, when the rows overflow, gives up and
    # leaves it to the rebuild: checked below by the warning it logs).
    for dsn in (None, database_url):
        for page, hold in ((7, _runner.HOLD_MAX_ROWS), (5000, _runner.HOLD_MAX_ROWS), (7, 40)):
            monkeypatch.setattr(_runner, "HOLD_MAX_ROWS", hold)
            caplog.clear()
            rebuilt = Projector(store, ALL, batch=page, apart_from=0)
            assert await rebuilt.rebuild(dsn) == events
            assert await live.checkpoint() == head
            assert await tables(pool) == expected, (dsn, page, hold)
            gave_up = [r for r in caplog.records if "second process failed" in r.getMessage()]
            assert len(gave_up) == (dsn is not None and hold < events), (dsn, page, hold)


@pytest.mark.parametrize("helper", [
    "import sys; sys.exit(3)",  # it never starts
    # It folds, writes frames of its rows, and dies before the table's end: the rows
    # copied are undone.
    "import os\n"
    "from shared.projections import _apart as a\n"
    "a._FRAME_ROWS, frame = 3, a._frame\n"
    "def dies(out, encoder, table, rows):\n"
    "    if not rows:\n"
    "        os._exit(1)\n"
    "    frame(out, encoder, table, rows)\n"
    "    out.flush()\n"
    "a._frame = dies\n"
    "a.main()\n",
    # It dies midway through its first frame.
    "import sys; d = sys.stdout.buffer; d.write((1000).to_bytes(8, 'big')); d.write(b'x')",
])
async def test_a_rebuild_whose_second_process_fails_folds_its_part_itself(
    store: EventStore, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, helper: str,
) -> None:
    await append_varied_history(store, random.Random(17), 300)
    live = Projector(store, ALL, batch=13)
    await live.catch_up()
    expected = await tables(pool)
    monkeypatch.setattr(_apart, "COMMAND", (sys.executable, "-c", helper))

    await Projector(store, ALL, batch=11, apart_from=0).rebuild(database_url)

    assert await tables(pool) == expected
    assert any("second process failed" in r.getMessage() for r in caplog.records)


async def test_a_live_projector_forgets_the_rows_it_holds_when_its_checkpoint_moves(
    store: EventStore, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live projector writes from the rows it last wrote, held in memory (a few here, so
    most are read back too): when another process empties the tables and moves the
    checkpoint back, its next write finds the checkpoint moved, writes nothing, and it
    replays from there with the rows read anew, ending where a projection from scratch
    ends."""
    monkeypatch.setattr(_runner, "CACHED_ROWS", 7)
    rng = random.Random(23)
    await append_varied_history(store, rng, 400)
    live = Projector(store, ALL, batch=9)
    running = asyncio.create_task(live.run())
    try:
        await caught_up(live, store)
        await emptied(pool)  # as another process might
        await append_varied_history(store, rng, 100)
        await caught_up(live, store)
        after = await tables(pool)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    assert after == await from_scratch(store, pool)


async def test_a_projector_that_takes_the_lead_back_forgets_what_it_held(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    """Two copies take turns at the lead (as ``Runtime.lead`` runs them): the one that comes
    back must not write from the rows it held before the other projected."""
    rng = random.Random(31)
    first, second = Projector(store, ALL, batch=9), Projector(store, ALL, batch=9)

    async def lead(projector: Projector, events: int) -> None:
        await append_varied_history(store, rng, events)
        running = asyncio.create_task(projector.run())
        try:
            await caught_up(projector, store)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    await lead(first, 300)
    await lead(second, 300)
    await lead(first, 300)
    after = await tables(pool)

    assert after == await from_scratch(store, pool)


async def test_a_rebuild_replays_exactly_the_events_up_to_its_checkpoint(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    rng = random.Random(12)
    await append_varied_history(store, rng, 600)
    stop = asyncio.Event()

    async def writer() -> None:
        # Appends while the rebuild reads: NicCreated, CapacityReserved and the like
        # change rows each time they are applied, so one applied twice or skipped shows.
        while not stop.is_set():
            await append_varied_history(store, rng, 3)

    writing = asyncio.create_task(writer())
    projector = Projector(store, ALL, batch=5)
    try:
        await asyncio.sleep(0.05)
        await projector.rebuild()
        rebuilt_at = await projector.checkpoint()
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await writing
    assert rebuilt_at < await store.head()  # events came after the rebuild's snapshot
    await projector.catch_up()
    after = await tables(pool)

    # The same events projected from scratch by the live projector, batch by batch.
    assert after == await from_scratch(store, pool)
