"""Event store appends and projection rebuilds, each beside the raw PostgreSQL ceiling.

    python -m bench.eventstore [--appends 20000] [--events 1000000] [--rounds 3]
                               [--callers 64]

Appends: events per second through EventStore.append with 1 and 8 writers and batches of 1
and 10, beside plain asyncpg inserts of the same rows under the same locks (the advisory
locks appends take: the store's shared, the stream's exclusive). Group commit: commits per
second of 64 concurrent requests in one process (as the gateway makes them), one statement
each beside grouped (``EventStore(group_commit=True)``). Rebuild: `Projector.rebuild` over a
store of N events (VM lifecycles), with the first projection folded in a second process,
beside a plain ordered fetch of the same rows (every column, asyncpg's own codecs), in
turns, the median of each. One embedded PostgreSQL server, started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import uvloop

from bench.common import goal_line, postgres, write
from proto.envelope import Metadata
from proto.events import (
    Event,
    JobCompleted,
    JobSubmitted,
    VmDeployRequested,
    VmPlaced,
    VmStarted,
)
from shared.db import create_pool, migrate
from shared.eventstore import APPEND_LOCK, NO_STREAM, STREAM_LOCK, Append, EventStore, NewEvent
from shared.projections import ALL, Projector
from shared.projections._runner import REBUILD_COLUMNS

META = Metadata(correlation_id="bench", actor="bench")
# Every column of a stored event.
EVENT_COLUMNS = ("position, event_id, stream_id, version, type, schema, data, metadata,"
                 " recorded_at")
_encode = msgspec.json.encode


def lifecycle(i: int) -> list[Event]:
    vm, job = str(uuid.UUID(int=i * 2 + 1)), str(uuid.UUID(int=i * 2 + 2))
    return [
        VmDeployRequested(vm_id=vm, job_id=job, account_id="a", user_id="u", name=f"vm-{i}",
                          display_name=f"vm-{i}", instance_name=f"i-{i}", zone_id="z",
                          service_offering_id="o", cpu_number=1, cpu_speed=500, memory_mb=512,
                          pool_id="p", network_ids=["n"], vm_snapshot_id="s"),
        JobSubmitted(job_id=job, cmd="deploy", instance_type="VirtualMachine", instance_id=vm,
                     account_id="a", user_id="u"),
        VmPlaced(vm_id=vm, host_id="h", pool_id="p", cpu_number=1, cpu_speed=500, memory_mb=512),
        VmStarted(vm_id=vm, host_id="h", hypervisor_ref=f"vm-{i}", task_ids=["t1", "t2", "t3"]),
        JobCompleted(job_id=job, succeeded=True),
    ]


async def fresh_db(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def appends(admin_url: str, total: int, writers: int, batch: int) -> dict[str, float]:
    url = await fresh_db(admin_url, f"appends_{writers}_{batch}")
    pool = await create_pool(url, max_size=writers + 2)
    async with pool.acquire() as conn:
        await migrate(conn)
    store = EventStore(pool)
    per_writer = total // writers // batch
    payloads = lifecycle(0)

    async def writer(w: int) -> None:
        for b in range(per_writer):
            await store.append(f"vm-{w}-{b}",
                               [NewEvent(payloads[i % 5], META) for i in range(batch)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    store_rate = per_writer * writers * batch / (time.perf_counter() - started)

    rows = [(uuid.uuid4(), "x", 1, type(e).__name__, 1, _encode(e), _encode(META))
            for e in payloads] * 2

    async def raw(w: int) -> None:
        for b in range(per_writer):
            stream = f"raw-{w}-{b}"
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1, 0),"
                                   " pg_advisory_xact_lock($2, hashtext($3))",
                                   APPEND_LOCK, STREAM_LOCK, stream)
                await conn.executemany(
                    "INSERT INTO events (event_id, stream_id, version, type, schema, data,"
                    " metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [(uuid.uuid4(), stream, i + 1, *rows[i][3:]) for i in range(batch)])

    started = time.perf_counter()
    await asyncio.gather(*(raw(w) for w in range(writers)))
    raw_rate = per_writer * writers * batch / (time.perf_counter() - started)
    await pool.close()
    return {"store_events_per_s": store_rate, "raw_events_per_s": raw_rate,
            "fraction_of_raw": store_rate / raw_rate}


async def rebuild(admin_url: str, total_events: int, rounds: int) -> dict[str, Any]:
    url = await fresh_db(admin_url, "rebuild")
    pool = await create_pool(url, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
        now = datetime.now(UTC)
        records = []
        for i in range(total_events // 5):
            for version, event in enumerate(lifecycle(i), start=1):
                records.append((uuid.uuid4(), f"vm-{i}", version, type(event).__name__, 1,
                                _encode(event), _encode(META), now))
            if len(records) >= 50_000:
                await conn.copy_records_to_table(
                    "events", records=records, columns=["event_id", "stream_id", "version",
                                                        "type", "schema", "data", "metadata",
                                                        "recorded_at"])
                records = []
        if records:
            await conn.copy_records_to_table(
                "events", records=records, columns=["event_id", "stream_id", "version", "type",
                                                    "schema", "data", "metadata",
                                                    "recorded_at"])
        count = await conn.fetchval("SELECT count(*) FROM events")
        await conn.execute("VACUUM (ANALYZE) events")  # as autovacuum leaves a stored table

    async def fetch(columns: str) -> float:
        # The fastest plain read we know: asyncpg's own codecs (jsonb read as text in C, not
        # through the pool's bytes codec), pages of 10,000 by position.
        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            position, fetched = 0, 0
            while True:
                rows = await conn.fetch(f"SELECT {columns} FROM events WHERE position > $1"
                                        " ORDER BY position LIMIT 10000", position)
                if not rows:
                    break
                fetched += len(rows)
                position = rows[-1]["position"]
            return fetched / (time.perf_counter() - started)
        finally:
            await conn.close()

    async def replay() -> float:
        started = time.perf_counter()
        applied = await Projector(EventStore(pool), ALL, batch=5000).rebuild(url)
        return applied / (time.perf_counter() - started)

    # Side by side, in turns, the order changing each round: one run of any varies by a
    # fifth here (the two cores are shared), so each is the median of the rounds. The raw
    # fetch reads every column of the rows; the narrow one only those a rebuild reads.
    runs: dict[str, Callable[[], Awaitable[float]]] = {
            "rebuild": replay,
            "fetch": lambda: fetch(EVENT_COLUMNS),
            "fetch_rebuild_columns": lambda: fetch(REBUILD_COLUMNS)}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        names = list(runs)
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(await runs[name]())
    await pool.close()
    rate = {name: statistics.median(values) for name, values in rates.items()}
    return {"events": count, "rounds": rounds, "rebuild_events_per_s": rate["rebuild"],
            "raw_fetch_events_per_s": rate["fetch"],
            "fraction_of_fetch": rate["rebuild"] / rate["fetch"],
            "rebuild_columns": REBUILD_COLUMNS,
            "raw_fetch_rebuild_columns_events_per_s": rate["fetch_rebuild_columns"],
            "fraction_of_fetch_rebuild_columns": rate["rebuild"] / rate["fetch_rebuild_columns"],
            "rounds_rebuild_events_per_s": rates["rebuild"],
            "rounds_raw_fetch_events_per_s": rates["fetch"],
            "rounds_raw_fetch_rebuild_columns_events_per_s": rates["fetch_rebuild_columns"]}


async def group_commit(admin_url: str, callers: int, commits: int,
                       rounds: int) -> dict[str, Any]:
    """Commits of ``callers`` concurrent requests in one process, as the gateway's API calls
    make them (a small append each, to its own stream, on a pool of the gateway's size):
    one statement per commit beside group commit, in alternating rounds on one database."""
    url = await fresh_db(admin_url, "group_commit")
    pool = await create_pool(url, max_size=10)
    async with pool.acquire() as conn:
        await migrate(conn)
    event = lifecycle(0)[1]
    per_caller = commits // callers
    rates: dict[str, list[float]] = {"one_per_request": [], "grouped": []}
    statements: list[float] = []
    for r in range(rounds):
        for how in sorted(rates, reverse=r % 2 == 1):
            store = EventStore(pool, group_commit=how == "grouped")

            async def caller(c: int, how: str = how, r: int = r,
                             store: EventStore = store) -> None:
                for i in range(per_caller):
                    await store.commit([Append(f"{how}-{r}-{c}-{i}", [event], NO_STREAM)],
                                       META)

            started = time.perf_counter()
            await asyncio.gather(*(caller(c) for c in range(callers)))
            rates[how].append(per_caller * callers / (time.perf_counter() - started))
            if store.group_commit is not None:
                statements.append(store.group_commit.statements)
    await pool.close()
    one, grouped = (statistics.median(rates[k]) for k in ("one_per_request", "grouped"))
    return {"callers": callers, "commits": per_caller * callers, "rounds": rounds,
            "one_per_request_per_s": one, "grouped_per_s": grouped,
            "grouped_over_one": grouped / one,
            "commits_per_statement": per_caller * callers / statistics.median(statements)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with postgres() as url:
        out: dict[str, Any] = {"appends": {}}
        for writers in (1, 8):
            for batch in (1, 10):
                out["appends"][f"{writers}x{batch}"] = await appends(url, args.appends, writers,
                                                                      batch)
        out["group_commit"] = await group_commit(url, args.callers, args.commits, rounds=3)
        out["rebuild"] = await rebuild(url, args.events, args.rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.eventstore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=20_000, help="events per append run")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to rebuild from")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the rebuild and the raw fetch, side by side")
    parser.add_argument("--callers", type=int, default=64,
                        help="concurrent requests committing, for group commit")
    parser.add_argument("--commits", type=int, default=6_400,
                        help="commits per group-commit round")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    # On the loop the services and `snapdeploy projections rebuild` run on, for the store's
    # figures and the raw ones alike.
    result = uvloop.run(run(args))
    path = write("eventstore", result, args.out)
    for key, row in result["appends"].items():
        writers, batch = key.split("x")
        print(goal_line(f"appends/s, {writers} writer(s), batches of {batch}",
                        row["store_events_per_s"], ">= 10000" if batch == "10" else "-",
                        batch != "10" or row["store_events_per_s"] >= 10_000))
        print(goal_line(f"  / raw locked inserts ({row['raw_events_per_s']:.0f}/s)",
                        row["fraction_of_raw"], ">= 0.8", row["fraction_of_raw"] >= 0.8))
    gc = result["group_commit"]
    print(goal_line(f"commits/s, {gc['callers']} concurrent requests, one statement each",
                    gc["one_per_request_per_s"], "-", True))
    print(goal_line(f"  grouped ({gc['commits_per_statement']:.1f} commits per statement)",
                    gc["grouped_per_s"], "-", True))
    print(goal_line("  grouped / one statement each", gc["grouped_over_one"], "> 1",
                    gc["grouped_over_one"] > 1))
    rb = result["rebuild"]
    print(goal_line(f"rebuild events/s over {rb['events']} events", rb["rebuild_events_per_s"],
                    ">= 100000", rb["rebuild_events_per_s"] >= 100_000))
    print(goal_line(f"  / raw ordered fetch ({rb['raw_fetch_events_per_s']:.0f}/s)",
                    rb["fraction_of_fetch"], ">= 0.5", rb["fraction_of_fetch"] >= 0.5))
    print(goal_line("  / raw fetch of the columns the rebuild reads"
                    f" ({rb['raw_fetch_rebuild_columns_events_per_s']:.0f}/s)",
                    rb["fraction_of_fetch_rebuild_columns"], "-", True))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
