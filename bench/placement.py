"""Placement latency with 10, 100 and 1,000 hosts and 10,000 VMs placed on them.

    python -m bench.placement [--vms 10000] [--rounds 300]

Measures the planner's decision as it runs it: read every host's capacity from the
write-side table the event store keeps (`host_capacity`, `EventStore.hosts()`), then
`choose_host`; and the decision alone, without the read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import goal_line, postgres, summary, write
from shared.db import create_pool, migrate
from shared.domain.deploy import choose_host
from shared.eventstore import EventStore


async def level(store: EventStore, hosts: int, vms: int, rounds: int) -> dict[str, Any]:
    rng = random.Random(hosts)
    held = [0] * hosts
    for _ in range(vms):
        held[rng.randrange(hosts)] += 1
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM host_reservations")
        await conn.execute("DELETE FROM host_capacity")
        await conn.executemany(
            "INSERT INTO host_capacity (host_id, name, zone_id, pool_ids, cpu_mhz_total,"
            " memory_mb_total, reserved_cpu_mhz, reserved_memory_mb, imported, version)"
            " VALUES ($1, $2, 'z', '{p1}', $3, $4, $5, $6, true, $7)",
            [(f"h{i}", f"host-{i}", 64 * 2000, 1024 * 1024, 10 * held[i], 32 * held[i],
              held[i] + 1) for i in range(hosts)])
        await conn.executemany(
            "INSERT INTO host_reservations (host_id, vm_id, cpu_mhz, memory_mb)"
            " VALUES ($1, $2, 10, 32)",
            [(f"h{i}", str(uuid.uuid4())) for i in range(hosts) for _ in range(held[i])])
    total, decide = [], []
    for n in range(rounds):
        started = time.perf_counter()
        views = await store.hosts()
        read = time.perf_counter()
        choose_host(views, "p1", 10, 32, spread_key=f"vm-{n}")
        done = time.perf_counter()
        total.append((done - started) * 1000)
        decide.append((done - read) * 1000)
    return {"hosts": hosts, "vms": vms, "placement_ms": summary(total),
            "decision_only_ms": summary(decide)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with postgres() as url:
        pool = await create_pool(url, max_size=2)
        async with pool.acquire() as conn:
            await migrate(conn)
        store = EventStore(pool)
        levels = [await level(store, hosts, args.vms, args.rounds)
                  for hosts in (10, 100, 1000)]
        await pool.close()
    growth = levels[-1]["placement_ms"]["median"] / levels[0]["placement_ms"]["median"]
    return {"levels": levels, "growth_10_to_1000_hosts": growth}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000, help="VMs already placed")
    parser.add_argument("--rounds", type=int, default=300, help="placements per level")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    path = write("placement", result, args.out)
    for row in result["levels"]:
        p99 = row["placement_ms"]["p99"]
        print(goal_line(f"placement p99 ms, {row['hosts']} hosts, {row['vms']} VMs", p99,
                        "< 50" if row["hosts"] == 1000 else "-",
                        row["hosts"] != 1000 or p99 < 50))
    print(goal_line("median growth from 10 to 1,000 hosts (linear = 100)",
                    result["growth_10_to_1000_hosts"], "<= 100",
                    result["growth_10_to_1000_hosts"] <= 100))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
