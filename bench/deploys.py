"""Deploy latency, throughput and first-vs-n-th deploy, each beside the bare vSphere calls.

    python -m bench.deploys [--deploys 200] [--levels 1,8,64] [--sequence 20]

Starts a stack with `snapdeploy up` (vcsim with 8 hosts), snapshots a VM and seeds it, then:
1. overhead: deploys through the gateway (request sent -> JobCompleted seen on NATS),
   interleaved with the bare calls the deploy needs (CloneVM_Task, ReconfigVM_Task,
   PowerOnVM_Task through pyVmomi, same template, same vcsim) made by two bare clients:
   the fast one (each task's state read at once, then polled with a pause doubling from
   1 ms to 50 ms), against which the goals are judged, and one making a property collector
   per task;
2. throughput: deploys per second with 1, 8, 64 in flight, beside each bare client at the
   same concurrency;
3. first vs n-th: after prepareTemplate, the first deploy against deploys 2..n; without it,
   the first deploy's extra time against the seed's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
from pyVmomi import vim, vmodl

from bench.common import goal_line, stack, summary, write
from services.gateway.auth import sign
from shared.drivers.base import CloneRequest, NetworkBinding
from shared.drivers.vmware import VSphere, clone_spec, reconfigure_spec


class Api:
    """Signed CloudStack calls, and job completions seen on the NATS event stream."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.done: dict[str, asyncio.Future[float]] = {}

    async def __aenter__(self) -> Api:
        self.http = aiohttp.ClientSession()
        self.nc = await nats.connect(self.info["nats_url"], user=self.info["nats_user"],
                                     password=self.info["nats_password"])

        async def on_done(msg: Any) -> None:
            job = json.loads(msg.data)["data"]["job_id"]
            future = self.done.setdefault(job, asyncio.get_running_loop().create_future())
            if not future.done():
                future.set_result(time.perf_counter())

        await self.nc.subscribe("snapdeploy.events.*.JobCompleted", cb=on_done)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.nc.close()
        await self.http.close()

    async def call(self, command: str, **params: str) -> dict[str, Any]:
        pairs = [("command", command), ("response", "json"),
                 ("apikey", self.info["admin_api_key"]), *params.items()]
        pairs.append(("signature", sign(pairs, self.info["admin_secret_key"])))
        url = self.info["api_url"] + "?" + urllib.parse.urlencode(pairs)
        async with self.http.get(url) as response:
            body = await response.json()
        value: dict[str, Any] = next(iter(body.values()))
        if "errorcode" in value:
            raise RuntimeError(f"{command} failed: {value['errortext']}")
        return value

    async def job(self, command: str, **params: str) -> float:
        """Run an async command; seconds from sending it to its JobCompleted event."""
        return (await self.run(command, **params))[1]

    async def run(self, command: str, **params: str) -> tuple[dict[str, Any], float]:
        """Run an async command: its answer, and the seconds until its JobCompleted event."""
        started = time.perf_counter()
        answer = await self.call(command, **params)
        future = self.done.setdefault(answer["jobid"],
                                      asyncio.get_running_loop().create_future())
        finished = await asyncio.wait_for(future, 120)
        result = await self.call("queryAsyncJobResult", jobid=answer["jobid"])
        if result["jobstatus"] != 1:
            raise RuntimeError(f"{command} failed: {result.get('jobresult')}")
        return answer, finished - started


PC: Any = vmodl.query.PropertyCollector  # untyped constructors
TASK_DONE = ("success", "error")


class Bare:
    """The vSphere calls a deploy needs, straight through pyVmomi, each task waited for in
    one of two ways: ``fast`` reads the task's state at once and then polls it with a pause
    doubling from 1 ms up to 50 ms (the fastest correct client we know to write), ``collector``
    makes a property collector, a filter and ``WaitForUpdatesEx`` per task and destroys it
    after (what snapdeploy's driver did before)."""

    def __init__(self, session: VSphere, template: dict[str, Any], host_ref: str,
                 pool_ref: str, network: NetworkBinding) -> None:
        self.session = session
        self.content = session.content
        self.template = template
        self.host_ref = host_ref
        self.pool_ref = pool_ref
        self.network = network
        self.resource_pool = session._resource_pool(host_ref)
        self.folder = session._datacenter_of(template["template_ref"])[1]["vmFolder"]

    def _read(self, obj: Any, kind: Any, paths: list[str]) -> dict[str, Any]:
        found = self.content.propertyCollector.RetrieveContents([PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
            propSet=[PC.PropertySpec(type=kind, pathSet=paths)])])
        return {p.name: p.val for p in found[0].propSet}

    def _check(self, info: dict[str, Any]) -> Any:
        if info["info.state"] == "error":
            raise RuntimeError(f"bare task failed: {info.get('info.error')}")
        return info.get("info.result")

    def wait_fast(self, task: Any) -> Any:
        paths = ["info.state", "info.error", "info.result"]
        info = self._read(task, vim.Task, paths)
        pause = 0.001
        while info["info.state"] not in TASK_DONE:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            info = self._read(task, vim.Task, paths)
        return self._check(info)

    def wait_collector(self, task: Any) -> Any:
        collector = self.content.propertyCollector.CreatePropertyCollector()
        try:
            collector.CreateFilter(PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=task, skip=False)],
                propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state"])]), True)
            version, state = "", None
            while state not in TASK_DONE:
                update = collector.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=30))
                if update is None:
                    continue
                version = update.version
                for filter_set in update.filterSet:
                    for change_set in filter_set.objectSet:
                        for change in change_set.changeSet:
                            if change.name == "info.state":
                                state = change.val
        finally:
            collector.DestroyPropertyCollector()
        return self._check(self._read(task, vim.Task, ["info.state", "info.error",
                                                       "info.result"]))

    def deploy(self, name: str, how: str = "fast") -> float:
        """Clone, reconfigure and power on one VM; the seconds it took."""
        wait = self.wait_fast if how == "fast" else self.wait_collector
        request = CloneRequest(name=name, template_ref=self.template["template_ref"],
                               base_snapshot_ref=self.template["base_snapshot_ref"],
                               host_ref=self.host_ref, pool_ref=self.pool_ref, linked=True,
                               cpu_number=1, cpu_mhz=10, memory_mb=32, networks=[self.network])
        s = self.session
        started = time.perf_counter()
        template = s._mo(request.template_ref)
        vm = wait(template.CloneVM_Task(folder=self.folder, name=name,
                                        spec=clone_spec(request, self.resource_pool)))
        devices = self._read(vm, vim.VirtualMachine,
                             ["config.hardware.device"])["config.hardware.device"]
        wait(vm.ReconfigVM_Task(reconfigure_spec(request, devices)))
        wait(vm.PowerOnVM_Task())
        return time.perf_counter() - started


async def setup(api: Api, session: VSphere) -> dict[str, Any]:
    vms = (await api.call("listVirtualMachines", name="DC0_C0_RP0_VM0"))["virtualmachine"]
    offering = (await api.call("createServiceOffering", name=f"bench-{uuid.uuid4().hex[:6]}",
                               cpunumber="1", cpuspeed="10", memory="32"))["serviceoffering"]
    snap_job, _ = await api.run("createVMSnapshot", virtualmachineid=vms[0]["id"], name="bench")
    network = (await api.call("listNetworks", name="VM Network"))["network"][0]
    # Every deploy holds a guest address until it is expunged, and a run deploys more VMs
    # than a /24 holds.
    await api.call("updateNetwork", id=network["id"], cidr="10.128.0.0/16")
    template = (await api.call("prepareTemplate", vmsnapshotid=snap_job["id"]))["template"][0]
    conn = await asyncpg.connect(api.info["database_url"])
    try:
        data = json.loads(await conn.fetchval(
            "SELECT data::text FROM catalog WHERE kind = 'template' AND id = $1", template["id"]))
        host_ref = await conn.fetchval(
            "SELECT data ->> 'ref' FROM catalog WHERE kind = 'host' ORDER BY name LIMIT 1")
        pool_ref = await conn.fetchval(
            "SELECT data ->> 'ref' FROM catalog WHERE kind = 'pool' AND id = $1",
            template["storageid"])
    finally:
        await conn.close()
    bare = await session.call(lambda: Bare(session, data, host_ref, pool_ref,
                                           NetworkBinding("network-6", "VM Network")))
    # Warm the services' caches (connections, vCenter lookups per host), as in a system
    # that has been running: the phases measure deploys, not process start-up.
    for i in range(4):
        await api.job("deployVirtualMachine", vmsnapshotid=snap_job["id"],
                      serviceofferingid=offering["id"], networkids=network["id"], name=f"warm-{i}")
    return {"offering": offering["id"], "snapshot": snap_job["id"], "network": network["id"],
            "bare": bare, "vm": vms}


BARE = ("fast", "collector")  # the bare clients, the first the one goals are judged by


async def overhead(api: Api, ctx: dict[str, Any], n: int) -> dict[str, Any]:
    """Deploys, each followed by one deploy of each bare client (their order alternating):
    per bare client, the ratio of each deploy to the bare deploy next to it."""
    service: list[float] = []
    bare: dict[str, list[float]] = {how: [] for how in BARE}
    loop = asyncio.get_running_loop()
    for i in range(n):
        took = await api.job("deployVirtualMachine", vmsnapshotid=ctx["snapshot"],
                             serviceofferingid=ctx["offering"], networkids=ctx["network"],
                             name=f"o-{i}")
        service.append(took)
        for how in BARE if i % 2 == 0 else BARE[::-1]:
            bare[how].append(await loop.run_in_executor(None, ctx["bare"].deploy,
                                                        f"bare-{how}-o-{i}", how))
    out: dict[str, Any] = {"service_s": summary(service)}
    for how in BARE:
        ratios = [s / b for s, b in zip(service, bare[how], strict=True)]
        out[how] = {"bare_s": summary(bare[how]), "ratio": summary(ratios),
                    "ratio_of_medians": statistics.median(service)
                    / statistics.median(bare[how])}
    # The fast client's figures under the names earlier results used.
    out.update(bare_s=out["fast"]["bare_s"], ratio=out["fast"]["ratio"],
               ratio_of_medians=out["fast"]["ratio_of_medians"])
    return out


async def throughput(api: Api, ctx: dict[str, Any], levels: list[int],
                     per_level: int) -> dict[str, Any]:
    out = {}
    for level in levels:
        count = max(per_level, level)
        gate = asyncio.Semaphore(level)

        async def one(i: int, level: int = level, gate: asyncio.Semaphore = gate) -> None:
            async with gate:
                await api.job("deployVirtualMachine", vmsnapshotid=ctx["snapshot"],
                              serviceofferingid=ctx["offering"], networkids=ctx["network"],
                              name=f"t{level}-{i}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        service_rate = count / (time.perf_counter() - started)

        loop = asyncio.get_running_loop()
        row: dict[str, Any] = {"deploys": count, "service_per_s": service_rate}
        for how in BARE:
            with ThreadPoolExecutor(level) as pool:
                started = time.perf_counter()
                await asyncio.gather(*(loop.run_in_executor(pool, ctx["bare"].deploy,
                                                            f"bare-{how}-t{level}-{i}", how)
                                       for i in range(count)))
                bare_rate = count / (time.perf_counter() - started)
            row[how] = {"bare_per_s": bare_rate, "fraction_of_bare": service_rate / bare_rate}
        row.update(bare_per_s=row["fast"]["bare_per_s"],
                   fraction_of_bare=row["fast"]["fraction_of_bare"])
        out[str(level)] = row
    return out


async def first_vs_nth(api: Api, ctx: dict[str, Any], length: int) -> dict[str, Any]:
    small_vm = (await api.call("listVirtualMachines", name="DC0_C0_RP0_VM1"))["virtualmachine"]
    other_vm = (await api.call("listVirtualMachines", name="DC0_H0_VM0"))["virtualmachine"]
    results: dict[str, Any] = {}
    for label, vm, prepare in (("after_prepare", small_vm, True),
                               ("without_prepare", other_vm, False)):
        job, _ = await api.run("createVMSnapshot", virtualmachineid=vm[0]["id"], name=label)
        seed_s = None
        if prepare:
            started = time.perf_counter()
            await api.call("prepareTemplate", vmsnapshotid=job["id"])
            seed_s = time.perf_counter() - started
        times = [await api.job("deployVirtualMachine", vmsnapshotid=job["id"],
                               serviceofferingid=ctx["offering"], networkids=ctx["network"],
                               name=f"{label[:5]}-{i}") for i in range(length)]
        rest = statistics.median(times[1:])
        results[label] = {"deploys_s": times, "first_s": times[0], "median_rest_s": rest,
                          "first_over_rest": times[0] / rest, "seed_s": seed_s}
    seed = results["after_prepare"]["seed_s"]
    extra = results["without_prepare"]["first_s"] - results["without_prepare"]["median_rest_s"]
    results["extra_first_over_seed"] = extra / seed if seed else float("nan")
    return results


async def pipeline(info: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Where a deploy's time goes: median gap between its consecutive events in the store."""
    conn = await asyncpg.connect(info["database_url"])
    try:
        rows = await conn.fetch(
            "SELECT e.stream_id, e.type, e.recorded_at FROM events e JOIN events r"
            " ON r.stream_id = e.stream_id AND r.type = 'VmDeployRequested'"
            " WHERE r.data ->> 'name' LIKE $1 ORDER BY e.stream_id, e.version", prefix + "%")
    finally:
        await conn.close()
    gaps: dict[str, list[float]] = {}
    previous: dict[str, Any] = {}
    for row in rows:
        before = previous.get(row["stream_id"])
        if before is not None and before["type"] != row["type"]:
            step = f"{before['type']} -> {row['type']}"
            gaps.setdefault(step, []).append(
                (row["recorded_at"] - before["recorded_at"]).total_seconds() * 1000)
        previous[row["stream_id"]] = row
    return {step: statistics.median(values) for step, values in gaps.items()
            if len(values) >= 2}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state, stack(Path(state), "-host 8") as info:
        session = await VSphere.connect(info["vcenter_url"], info["vcenter_user"],
                                        info["vcenter_password"], verify_tls=False,
                                        threads=max(args.levels) + 4)
        try:
            async with Api(info) as api:
                ctx = await setup(api, session)
                # On a quiet system first: the later phases leave work behind them.
                first = await first_vs_nth(api, ctx, args.sequence)
                over = await overhead(api, ctx, args.deploys)
                rate = await throughput(api, ctx, args.levels, args.per_level)
            steps = await pipeline(info, "o-")
        finally:
            await session.close()
    return {"overhead": over, "throughput": rate, "first_vs_nth": first,
            "pipeline_median_ms": steps}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deploys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploys", type=int, default=200, help="deploys for the overhead")
    parser.add_argument("--levels", default="1,8,64", help="requests in flight, comma-separated")
    parser.add_argument("--per-level", type=int, default=64, help="deploys per level")
    parser.add_argument("--sequence", type=int, default=20, help="deploys for first vs n-th")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    result = asyncio.run(run(args))
    path = write("deploys", result, args.out)
    over, first = result["overhead"], result["first_vs_nth"]
    print(goal_line("deploy latency / fast bare client, median", over["ratio"]["median"],
                    "<= 2.0", over["ratio"]["median"] <= 2.0))
    print(goal_line("deploy latency / fast bare client, p99", over["ratio"]["p99"], "<= 3.0",
                    over["ratio"]["p99"] <= 3.0))
    print(f"{'(against the collector-per-task bare client: median, p99)':<58} "
          f"{over['collector']['ratio']['median']:>12.3f} {over['collector']['ratio']['p99']:.3f}")
    for level, row in result["throughput"].items():
        print(goal_line(f"throughput at {level} in flight / fast bare",
                        row["fraction_of_bare"], ">= 0.6", row["fraction_of_bare"] >= 0.6))
    after = first["after_prepare"]["first_over_rest"]
    print(goal_line("first deploy after prepareTemplate / median of the rest", after, "<= 1.1",
                    after <= 1.1))
    print(goal_line("first deploy's extra time / the seed's time (no prepare)",
                    first["extra_first_over_seed"], "~ 1.0",
                    0.5 <= first["extra_first_over_seed"] <= 1.5))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
