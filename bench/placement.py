"""Placement latency with 10, 100 and 1,000 hosts and 10,000 VMs placed on them.

    python -m bench.placement [--vms 10000] [--rounds 300]

Measures the planner's decision as it runs it: read every host's capacity view from the
catalog in PostgreSQL, then `choose_host`; and the decision alone, without the read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.common import goal_line, postgres, summary, write
from shared.db import create_pool, migrate
from shared.domain.deploy import choose_host
from shared.projections import queries


async def level(pool: Any, hosts: int, vms: int, rounds: int) -> dict[str, Any]:
    rng = random.Random(hosts)
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM catalog WHERE kind = 'host'")
        reservations: list[dict[str, list[int]]] = [{} for _ in range(hosts)]
        for _ in range(vms):
            reservations[rng.randrange(hosts)][str(uuid.uuid4())] = [10, 32]
        await conn.executemany(
            "INSERT INTO catalog (kind, id, zone_id, name, state, data, version, created)"
            " VALUES ('host', $1, 'z', $2, 'Up', $3, 1, now())",
            [(f"h{i}", f"host-{i}", msgspec.json.encode({
                "cpu_cores": 64, "cpu_mhz": 2000, "memory_bytes": 1024 * 2**30,
                "pool_ids": ["p1"], "reservations": reservations[i], "ref": f"host-{i}",
                "cluster": "c", "reserved_cpu_mhz": 10 * len(reservations[i]),
                "reserved_memory_mb": 32 * len(reservations[i])})) for i in range(hosts)])
    total, decide = [], []
    for n in range(rounds):
        started = time.perf_counter()
        async with pool.acquire() as conn:
            views = await queries.host_views(conn)
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
        levels = [await level(pool, hosts, args.vms, args.rounds) for hosts in (10, 100, 1000)]
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
