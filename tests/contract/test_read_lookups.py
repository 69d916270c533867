"""Lookups stay lookups as the tables grow: with tens of thousands of VMs, naming a VM,
listing a VM snapshot, finding a VM's volumes and snapshots, and finding a job's stream in
the event store read rows by key, not every VM, every object of a kind or every event
(PostgreSQL's plans, after ANALYZE)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.eventstore import EventStore
from shared.eventstore._store import _JOB_STREAM
from shared.projections.read._reader import _NAMES, _SNAPSHOTS, ReadModels

VMS = 20_000


async def fill(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """VMS VMs, a VM snapshot and a volume of each; their ids."""
    ids = [uuid.uuid4() for _ in range(VMS)]
    now = datetime.now(UTC)
    await conn.copy_records_to_table(
        "vm_instances", columns=["id", "account_id", "name", "display_name", "instance_name",
                                 "zone_id", "cpu_number", "memory_mb", "state", "imported",
                                 "nics", "addresses", "created", "updated", "last_position"],
        records=[(vm, "a", f"vm-{i}", f"vm-{i}", f"i-{i}", "z", 1, 512, "Running", False,
                  b"[]", b"{}", now, now, i) for i, vm in enumerate(ids)])
    await conn.copy_records_to_table(
        "catalog", columns=["kind", "id", "account_id", "name", "state", "data", "version",
                            "created"],
        records=[(kind, f"{kind}-{i}", "a", f"{kind}-{i}", "Ready",
                  json.dumps({"vm_id": str(vm)}).encode(), 1, now)
                 for i, vm in enumerate(ids) for kind in ("vmsnapshot", "volume")])
    await conn.execute("ANALYZE")
    return ids


# A lookup by key touches a few pages of each table and index; the tables filled span
# hundreds (the VMs alone about 350).
FEW_PAGES = 40


async def pages(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    """How many buffer pages running ``sql`` touched (EXPLAIN ANALYZE's, its planning
    left out)."""
    found = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    plan = json.loads(found)[0]["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


async def test_a_vm_is_named_and_its_snapshots_listed_by_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ids = await fill(conn)
        vm = ids[VMS // 2]
        assert await pages(conn, _NAMES, [str(vm), "zone-1"], [vm]) < FEW_PAGES
        assert await pages(conn, f"{_SNAPSHOTS} WHERE id = $1",
                           f"vmsnapshot-{VMS // 2}") < FEW_PAGES
        for kind in ("volume", "vmsnapshot"):
            assert await pages(conn, "SELECT id FROM catalog WHERE kind = $1"
                               " AND data ->> 'vm_id' = $2", kind, str(vm)) < FEW_PAGES, kind
        assert await pages(conn, "SELECT * FROM vm_instances") > 5 * FEW_PAGES
    read = ReadModels(EventStore(pool))
    assert await read.names([str(vm), "vmsnapshot-7", "nothing", str(uuid.uuid4())]) == {
        str(vm): f"vm-{VMS // 2}", "vmsnapshot-7": "vmsnapshot-7"}
    assert await read.vm_parts(str(vm)) == ([f"volume-{VMS // 2}"],
                                               [f"vmsnapshot-{VMS // 2}"])


async def test_a_jobs_stream_is_found_by_its_index_with_the_plan_kept_for_any_job(
        pool: asyncpg.Pool) -> None:
    """``queryAsyncJobResult`` before the projector shows a job reads the job's stream:
    found from the first event naming the job through an index ordered by position, even
    with the plan PostgreSQL keeps for a prepared statement (made for any job id), which
    once walked every event in position order until it met the job's."""
    now = datetime.now(UTC)
    jobs = [str(uuid.uuid4()) for _ in range(VMS // 4)]
    records = []
    for i, job in enumerate(jobs):
        for version in range(1, 9):  # a deploy's stream: three of its events name the job
            data = {"job_id": job, "vm_id": str(i)} if version in (1, 2, 8) else {"n": version}
            records.append((uuid.uuid4(), f"vm-{i}", version, "E", 1,
                            json.dumps(data).encode(), b"{}", now))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "events", records=records, columns=["event_id", "stream_id", "version", "type",
                                                "schema", "data", "metadata", "recorded_at"])
        await conn.execute("ANALYZE events")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        assert await pages(conn, _JOB_STREAM, jobs[-1]) < FEW_PAGES
        assert await pages(conn, "SELECT * FROM events") > 5 * FEW_PAGES
    found = await EventStore(pool).read_job_stream(jobs[-1])
    assert [e.version for e in found] == list(range(1, 9))
    assert {e.stream_id for e in found} == {f"vm-{len(jobs) - 1}"}
