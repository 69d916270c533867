"""Deploy throughput with copies of every service, vCenter as slow as a real one; and how
long the relay, the projector and the planner take to fail over.

    python -m bench.scale [--replicas 1,2,4] [--deploys 256] [--in-flight 64] [--kills 10]

vcsim's methods are slowed to what a real vCenter takes (``--delays``: clone 2 s,
reconfigure 0.5 s, power-on 1 s). For each number of copies, a stack of its own
(``snapdeploy up --replicas N``), all of them up at once and measured in turns, the order
rotating from round to round: this machine's speed drifts within minutes, and stacks
measured one after the other would be compared at different speeds. In each turn,
``--deploys`` deploys, ``--in-flight`` at once (each one that ends replaced by the next, so
most of a round runs at that concurrency), through the API (round robin over the gateway
copies, as a load balancer would), and beside them the bare pyVmomi client
(``bench.deploys``' fast one: the same clone, reconfigure and power-on) at the same
concurrency against the same vcsim; ``--rounds`` turns per stack (medians reported),
after a wave of ``--in-flight`` deploys of each kind on each stack, not counted (it opens
the connections a full load uses). Per stack, where its counted deploys' time went
(``split``): up to vCenter, the vCenter step and the rest, from the client's clock and the
events' times in the store.
Then, in the stacks of two copies or more: ``--kills`` times, SIGKILL the active relay and
append an event at once, and time until it is published on NATS; the same for the
projector, until the event is projected; and for the planner, request deploys one after
the other from then on, and time until one is placed (its ``VmPlaced`` published).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import goal_line, stack, summary, write
from bench.deploys import Api, deploy_many, setup
from proto import subjects
from shared.drivers.vmware import VSphere
from shared.stack.launcher import ONE_ACTIVE, read_stack, role

DELAYS = "CloneVM_Task:2000,ReconfigVM_Task:500,PowerOnVM_Task:1000"


def copies(state: Path, service: str) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = read_stack(state)["services"]
    return {name: s for name, s in services.items() if s.get("service", name) == service}


async def one_active(state: Path, service: str, within: float = 120) -> str:
    """The copy of ``service`` holding its lease, once every copy answers and exactly one is
    active (the others standing by)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = copies(state, service)
        roles = await asyncio.gather(*(asyncio.to_thread(role, s["health_url"])
                                       for s in found.values()))
        if sorted(map(str, roles)) == ["active", *["standby"] * (len(roles) - 1)]:
            return next(name for name, r in zip(found, roles, strict=True) if r == "active")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no single active {service} within {within:.0f}s")


async def failover(api: Api, state: Path, service: str, kills: int,
                   ctx: dict[str, Any]) -> dict[str, Any]:
    """Seconds from SIGKILLing the active copy of ``service`` until an event appended right
    after is published by the relay (its committer, the gateway, publishes it at once, and
    the relay's copy comes after: that one is timed) or projected (projector); for the
    planner, until deploys requested from then on are placed again (``ctx`` is
    ``setup``'s)."""
    if service == "planner":
        return await _placement_failover(api, state, kills, ctx)
    published: dict[str, float] = {}

    async def on_event(msg: Any) -> None:
        if subjects.DIRECT_HEADER in (msg.headers or {}):
            return  # the gateway's own publish
        offering = json.loads(msg.data)["data"].get("offering_id")
        published.setdefault(offering, time.perf_counter())

    sub = await api.nc.subscribe("snapdeploy.events.*.ServiceOfferingCreated", cb=on_event)
    took = []
    try:
        for n in range(kills):
            killed = await _kill_active(state, service)
            name = f"failover-{service}-{n}-{uuid.uuid4().hex[:6]}"
            # A synchronous command: it appends at once (and then waits, at most a few
            # seconds, for the read models).
            creating = asyncio.ensure_future(api.call(
                "createServiceOffering", name=name, displaytext=name, cpunumber="1",
                cpuspeed="10", memory="32"))
            offering_id = None
            while True:
                if offering_id is None and creating.done():
                    offering_id = creating.result()["serviceoffering"]["id"]
                if service == "relay" and offering_id in published:
                    took.append(published[offering_id] - killed)
                    break
                if service == "projector" and (await api.call(
                        "listServiceOfferings", name=name)).get("serviceoffering"):
                    took.append(time.perf_counter() - killed)
                    break
                await asyncio.sleep(0.01)
            await creating
    finally:
        await sub.unsubscribe()
    return {"kills": kills, "seconds": summary(took)}


async def _kill_active(state: Path, service: str) -> float:
    """SIGKILL the active copy of ``service`` once one is; when (``perf_counter``)."""
    active = await one_active(state, service)
    os.kill(int(copies(state, service)[active]["pid"]), signal.SIGKILL)
    return time.perf_counter()


async def _placement_failover(api: Api, state: Path, kills: int,
                              ctx: dict[str, Any]) -> dict[str, Any]:
    """Deploys requested one after the other from the kill on, until one is placed: the
    first may have gone to the dead copy's pull request, and waits for the ack wait."""
    placed = asyncio.Event()
    asked: set[str] = set()

    async def on_event(msg: Any) -> None:
        if json.loads(msg.data)["data"].get("vm_id") in asked:
            placed.set()

    sub = await api.nc.subscribe("snapdeploy.events.vm.VmPlaced", cb=on_event)
    took = []
    try:
        for n in range(kills):
            asked.clear()
            placed.clear()
            killed = await _kill_active(state, "planner")
            for i in itertools.count():
                answer = await api.call(
                    "deployVirtualMachine", vmsnapshotid=ctx["snapshot"],
                    serviceofferingid=ctx["offering"], networkids=ctx["network"],
                    name=f"failover-planner-{n}-{i}")
                asked.add(answer["id"])
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await placed.wait()
                if placed.is_set():
                    break
            took.append(time.perf_counter() - killed)
    finally:
        await sub.unsubscribe()
    return {"kills": kills, "seconds": summary(took)}


@dataclass
class Stack:
    """A stack of ``replicas`` copies of every service, ready to deploy."""

    replicas: int
    state: Path
    api: Api
    ctx: dict[str, Any]
    service: list[float] = field(default_factory=list)  # deploys/s of each round
    bare: list[float] = field(default_factory=list)
    slots: dict[str, float] = field(default_factory=dict)  # each counted deploy's seconds


async def rounds_of(stacks: list[Stack], deploys: int, in_flight: int, rounds: int) -> None:
    """``rounds`` times, on each stack in turn (the stacks' order rotating from round to
    round, so none always runs first, last or at the same time of the run): ``deploys``
    through the services and as many by the bare client, ``in_flight`` at once (which goes
    first alternating)."""
    loop = asyncio.get_running_loop()

    async def bare_rate(s: Stack, prefix: str, count: int = deploys) -> float:
        with ThreadPoolExecutor(in_flight) as pool:
            started = time.perf_counter()
            await asyncio.gather(*(loop.run_in_executor(pool, s.ctx["bare"].deploy,
                                                        f"{prefix}{i}", "fast")
                                   for i in range(count)))
            return count / (time.perf_counter() - started)

    # First, on each stack, one wave of ``in_flight`` deploys of each kind, not counted:
    # ``setup``'s few deploys one at a time leave most of what a full load uses still to
    # open (the services' pooled connections to PostgreSQL, each a new backend with cold
    # caches; the cloners' connections to vCenter; the bare client's threads), and a
    # stack's first round paid for it (its slowest round, more so the more copies it had).
    for s in stacks:
        await deploy_many(s.api, s.ctx, in_flight, in_flight, "warm-")
        await bare_rate(s, "bwarm-", in_flight)
    for r in range(rounds):
        for s in stacks[r % len(stacks):] + stacks[:r % len(stacks)]:
            if r % 2:
                s.bare.append(await bare_rate(s, f"b{r}-"))
            s.service.append(deploys / await deploy_many(s.api, s.ctx, deploys, in_flight,
                                                         f"s{r}-", s.slots))
            if not r % 2:
                s.bare.append(await bare_rate(s, f"b{r}-"))
            print(f"round {r + 1}/{rounds}, {s.replicas} copies: {s.service[-1]:.2f} "
                  f"deploys/s (bare {s.bare[-1]:.2f})", flush=True)


async def split(s: Stack) -> dict[str, dict[str, float]]:
    """Where the counted deploys' time went, in ms (mean and median): the client's whole
    slot (request sent to its job's result read: a round's rate is about the deploys in flight
    over its mean), up to vCenter (``VmDeployRequested`` to ``VmSourceReady`` in the
    store: the gateway's commit, the planner's pickup and placement), the vCenter step
    (``VmSourceReady`` to ``VmCreated``: the cloner's pickup and its vSphere calls), and the
    rest (the request before its commit, `JobCompleted` to the client, the job's query)."""
    conn = await asyncpg.connect(read_stack(s.state)["database_url"])
    try:
        rows = await conn.fetch(
            "SELECT r.data ->> 'name' AS name, e.type, min(e.recorded_at) AS at FROM events e"
            " JOIN events r ON r.stream_id = e.stream_id AND r.type = 'VmDeployRequested'"
            " WHERE r.data ->> 'name' = ANY($1)"
            " AND e.type IN ('VmDeployRequested', 'VmSourceReady', 'VmCreated')"
            " GROUP BY 1, 2", list(s.slots))
    finally:
        await conn.close()
    at: dict[str, dict[str, Any]] = {}
    for row in rows:
        at.setdefault(row["name"], {})[row["type"]] = row["at"]
    parts: dict[str, list[float]] = {"slot": [], "to_vcenter": [], "vcenter": [], "rest": []}
    for name, slot in s.slots.items():
        times = at.get(name, {})
        if len(times) < 3:
            continue  # not created (none is, in a run that goes well)
        before = (times["VmSourceReady"] - times["VmDeployRequested"]).total_seconds()
        step = (times["VmCreated"] - times["VmSourceReady"]).total_seconds()
        for part, seconds in (("slot", slot), ("to_vcenter", before), ("vcenter", step),
                              ("rest", slot - before - step)):
            parts[part].append(seconds * 1000)
    return {part: {"mean": statistics.fmean(ms), "median": statistics.median(ms)}
            for part, ms in parts.items() if ms}


def row_of(s: Stack, deploys: int, in_flight: int) -> dict[str, Any]:
    fractions = [a / b for a, b in zip(s.service, s.bare, strict=True)]
    return {"replicas": s.replicas, "deploys": deploys, "in_flight": in_flight,
            "rounds": len(s.service), "service_per_s": statistics.median(s.service),
            "bare_per_s": statistics.median(s.bare),
            "fraction_of_bare": statistics.median(fractions),
            "rounds_service_per_s": s.service, "rounds_bare_per_s": s.bare}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stack up at once (each idle while another is measured), measured in turns
    (``rounds_of``); then the failovers, stack by stack."""
    async with contextlib.AsyncExitStack() as up:
        stacks = []
        for replicas in args.replicas:
            folder = Path(up.enter_context(tempfile.TemporaryDirectory()))
            # 12 hosts: room for the VMs of every round (none is expunged).
            info = up.enter_context(stack(folder, f"-host 12 -method-delay {args.delays}",
                                          ("--replicas", str(replicas))))
            session = await VSphere.connect(info["vcenter_url"], info["vcenter_user"],
                                            info["vcenter_password"], verify_tls=False,
                                            threads=args.in_flight + 4)
            up.push_async_callback(session.close)
            api = await up.enter_async_context(Api(info))
            stacks.append(Stack(replicas, folder, api, await setup(api, session)))
        await rounds_of(stacks, args.deploys, args.in_flight, args.rounds)
        rows = []
        for s in stacks:
            row = row_of(s, args.deploys, args.in_flight)
            row["split_ms"] = await split(s)
            if s.replicas >= 2 and args.kills:
                for service in ONE_ACTIVE:
                    row[f"{service}_failover"] = await failover(s.api, s.state, service,
                                                                args.kills, s.ctx)
            rows.append(row)
    return {"delays": args.delays, "interleaved": True, "warmed": True, "levels": rows}


def within_spread(levels: list[dict[str, Any]]) -> bool:
    """Whether each number of copies' median is at least the slowest round of the number
    before it: lower only within what the rounds of one stack differ by."""
    return all(b["service_per_s"] >= min(a["rounds_service_per_s"])
               for a, b in itertools.pairwise(levels))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2,4", help="copies of each service to try")
    parser.add_argument("--deploys", type=int, default=256,
                        help="deploys per measurement (four times --in-flight: a sustained load, "
                        "not one wave whose slowest deploy decides the rate)")
    parser.add_argument("--in-flight", type=int, default=64, help="deploys at once")
    parser.add_argument("--rounds", type=int, default=5,
                        help="measurements per number of copies (their median is reported)")
    parser.add_argument("--kills", type=int, default=10,
                        help="SIGKILLs of the active relay, projector and planner "
                        "(2 copies or more)")
    parser.add_argument("--delays", default=DELAYS,
                        help=f"vcsim's method delays in ms (default {DELAYS})")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    args.replicas = [int(n) for n in args.replicas.split(",")]
    result = asyncio.run(run(args))
    path = write("scale", result, args.out)
    rates = []
    for row in result["levels"]:
        rates.append(row["service_per_s"])
        print(goal_line(f"{row['replicas']} copies: {row['in_flight']} in flight / bare "
                        f"({row['service_per_s']:.1f} vs {row['bare_per_s']:.1f}/s)",
                        row["fraction_of_bare"], ">= 0.8", row["fraction_of_bare"] >= 0.8))
        for service in ONE_ACTIVE:
            if f"{service}_failover" in row:
                took = row[f"{service}_failover"]["seconds"]
                print(goal_line(f"  {service} failover, median of {took['n']} kills (s)",
                                took["median"], "-", True))
    for row in result["levels"]:
        parts = row["split_ms"]
        print(f"{row['replicas']} copies, ms a deploy (mean / median): "
              + ", ".join(f"{part} {parts[part]['mean']:.0f} / {parts[part]['median']:.0f}"
                          for part in parts))
    strictly = all(b >= a for a, b in itertools.pairwise(rates))
    print(goal_line("more copies never lower throughput: slowest / fastest",
                    min(rates) / max(rates), "-", strictly))
    print(goal_line("  the same, beyond the rounds' spread (each median at least the slowest "
                    "round before)", min(rates) / max(rates), "-", within_spread(result["levels"])))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
