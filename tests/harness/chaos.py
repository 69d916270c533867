"""Kill every snapdeploy process in turn during a stream of deploys, then check nothing was
lost, nothing happened twice and nothing was left behind.

    python -m tests.harness.chaos --rounds 5 --report chaos.json

Starts a stack of its own (``snapdeploy up --detach``), takes a VM snapshot, and submits
deploys from it through the CloudStack API without pause, as a client that retries with the
same ``requestid`` when it gets no answer; vCenter refuses a share of the reconfigure calls,
so some deploys fail half-way and must clean up. Meanwhile it SIGKILLs each process — the
services, nats-server and PostgreSQL — in turn at random moments, and waits for the launcher
to bring it back before the next. When every kill is done it stops submitting, waits for
every accepted deploy to settle, and checks:

* every accepted deploy ended Running (its VM in vCenter, powered on, once) or Error (its VM
  not in vCenter, its capacity released);
* no VM in vCenter that snapdeploy does not know about (orphans);
* no effect twice: one placement, one outcome and one job result per deploy, one
  reservation per VM; JetStream holds each stored event exactly once;
* the read models equal a rebuild from the event store.

With ``--replicas N --nats-nodes M`` the stack runs N copies of each service and a cluster
of M NATS nodes, and a round kills every copy, every node, and the active relay,
projector and planner. The report gives the numbers. `make test` runs one round of each
(tests/e2e/test_chaos.py); `make chaos` runs five and writes CHAOS.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from cs import CloudStack, CloudStackApiException
from pyVmomi import vim

from proto import subjects
from shared.bus import open_nats
from shared.stack.launcher import ONE_ACTIVE, alive, healthy, read_stack, role
from tests.harness.vsphere import Vcsim

SNAPDEPLOY = [sys.executable, "-m", "shared.cli"]
# What one round kills in a stack of one copy each (``targets``).
TARGETS = ("gateway", "planner", "seeder", "cloner", "volume", "relay", "projector",
           "nats-server", "postgres")
# With copies, the active copy of each service that runs one (ONE_ACTIVE) is also killed on
# purpose: ``relay:active``.
ACTIVE = ":active"
READ_MODELS = {"vm_instances": "id", "async_jobs": "id", "vmsnapshot_spool_ref": "id",
               "catalog": "kind, id"}


@dataclass
class Report:
    rounds: int = 0
    seconds: float = 0.0
    kills: dict[str, int] = field(default_factory=dict)
    deploys_accepted: int = 0
    client_retries: int = 0
    rejected: list[str] = field(default_factory=list)
    running: int = 0
    failed_with_cleanup: int = 0
    failed_reasons: dict[str, int] = field(default_factory=dict)
    unsettled: list[str] = field(default_factory=list)
    failed_but_in_vcenter: list[str] = field(default_factory=list)
    running_but_not_in_vcenter: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    effects_twice: list[str] = field(default_factory=list)
    capacity_leaks: list[str] = field(default_factory=list)
    events_stored: int = 0
    events_in_jetstream: int = 0
    projections_equal_rebuild: bool = False

    @property
    def ok(self) -> bool:
        return (self.deploys_accepted > 0 and not self.rejected and not self.unsettled
                and not self.failed_but_in_vcenter and not self.running_but_not_in_vcenter
                and not self.orphans and not self.effects_twice and not self.capacity_leaks
                and self.events_stored == self.events_in_jetstream
                and self.projections_equal_rebuild)

    def summary(self) -> str:
        kills = ", ".join(f"{k} {n}" for k, n in self.kills.items())
        return "\n".join([
            f"chaos: {self.rounds} round(s) of SIGKILL ({kills}) in {self.seconds:.0f}s",
            f"  deploys accepted      {self.deploys_accepted} "
            f"({self.client_retries} client retries, {len(self.rejected)} rejected)",
            f"  running               {self.running}",
            f"  failed with cleanup   {self.failed_with_cleanup} {self.failed_reasons or ''}",
            f"  unsettled             {len(self.unsettled)}",
            f"  orphans in vCenter    {len(self.orphans)}",
            f"  left-overs of failed  {len(self.failed_but_in_vcenter)}",
            f"  running but missing   {len(self.running_but_not_in_vcenter)}",
            f"  effects twice         {len(self.effects_twice)}",
            f"  capacity leaks        {len(self.capacity_leaks)}",
            f"  events stored / in JetStream  {self.events_stored} / {self.events_in_jetstream}",
            f"  read models == rebuild        {self.projections_equal_rebuild}",
            f"  verdict               {'OK' if self.ok else 'FAILED'}",
        ])


def _say(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


def targets(info: dict[str, Any]) -> list[str]:
    """What one round kills in a running stack: every copy of every service and every
    server but vcsim (whose faults are injected instead), and with copies the active copy
    of each service that runs one (``ONE_ACTIVE``; ``relay:active``), found by its
    /healthz role."""
    services = list(info["services"])
    out = [name for name in services if not name.startswith("gateway")]
    out += [name for name in services if name.startswith("gateway")]
    out += [name for name in info["servers"] if name != "vcsim"]
    if (info.get("replicas") or 1) > 1:
        out += [f"{service}{ACTIVE}" for service in ONE_ACTIVE]
    return out


class Chaos:
    """``replicas`` copies of each service and ``nats_nodes`` NATS nodes (``up``'s options)."""

    def __init__(self, state_dir: Path, rounds: int, interval: float, seed: int,
                 fault_rate: float = 0.1, *, replicas: int = 1, nats_nodes: int = 1) -> None:
        self.state_dir = state_dir
        self.rounds = rounds
        self.interval = interval
        self.fault_rate = fault_rate
        self.replicas = replicas
        self.nats_nodes = nats_nodes
        self.rng = random.Random(seed)
        self.report = Report(rounds=rounds, kills={})
        self.accepted: dict[str, str] = {}  # vm id -> job id
        self.done = threading.Event()
        self.info: dict[str, Any] = {}

    # ---- the stack ---------------------------------------------------------------------

    def stack(self) -> dict[str, Any]:
        return read_stack(self.state_dir)

    def up(self) -> None:
        # 8 hosts per cluster: room for a thousand small VMs, so that capacity is not what
        # ends the deploys of a long run.
        # vCenter's zone only: the faults and checks here are vCenter's (KVM's are tested
        # in tests/e2e/test_kvm.py).
        env = {**os.environ, "SNAPDEPLOY_VCENTER_TIMEOUT": "10",
               "SNAPDEPLOY_VCSIM_ARGS": "-host 8", "SNAPDEPLOY_KVM_ZONES": ""}
        subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(self.state_dir),
                        "--replicas", str(self.replicas), "--nats-nodes", str(self.nats_nodes)],
                       check=True, timeout=300, env=env, stdout=subprocess.DEVNULL)
        self.info = self.stack()
        self.report.kills = dict.fromkeys(targets(self.info), 0)

    def down(self) -> None:
        subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(self.state_dir)], check=False,
                       timeout=180, stdout=subprocess.DEVNULL)

    def pid_of(self, target: str) -> int:
        info = self.stack()
        group = "servers" if target in info["servers"] else "services"
        return int(info[group][target]["pid"])

    def active(self, service: str) -> str:
        """The copy of ``service`` that holds its lease now."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            copies: dict[str, dict[str, Any]] = self.stack()["services"]
            for name, copy in copies.items():
                if copy.get("service", name) == service and \
                        role(copy["health_url"]) == "active":
                    return name
            time.sleep(0.2)
        raise RuntimeError(f"no copy of {service} became active within 60s")

    def kill(self, target: str) -> None:
        name = self.active(target.removesuffix(ACTIVE)) if target.endswith(ACTIVE) else target
        pid = self.pid_of(name)
        os.kill(pid, signal.SIGKILL)
        self.report.kills[target] += 1
        target = name
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                new_pid = self.pid_of(target)
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                continue  # the launcher is rewriting stack.json
            if new_pid == pid or not alive(new_pid):
                continue
            services = self.stack()["services"]
            if all(healthy(s["health_url"]) for s in services.values()):
                _say(f"killed {target} (pid {pid}); back as pid {new_pid}, all healthy")
                return
        raise RuntimeError(f"{target} did not come back within 180s after SIGKILL")

    # ---- the workload ------------------------------------------------------------------

    def client(self, n: int = 0) -> CloudStack:
        """A client of the ``n``-th gateway (round robin over the copies, as a load
        balancer would)."""
        urls = self.info.get("gateway_urls") or [self.info["gateway_url"]]
        return CloudStack(endpoint=urls[n % len(urls)] + "/client/api",
                          key=self.info["admin_api_key"],
                          secret=self.info["admin_secret_key"], timeout=30)

    def prepare(self) -> dict[str, str]:
        cloud = CloudStack(endpoint=self.info["api_url"], key=self.info["admin_api_key"],
                           secret=self.info["admin_secret_key"], fetch_result=True,
                           poll_interval=0.2, job_timeout=120)
        source = next(v for v in cloud.listVirtualMachines()["virtualmachine"]
                      if v["name"] == "DC0_C0_RP0_VM0")
        snap = cloud.createVMSnapshot(virtualmachineid=source["id"], name="chaos")
        # Every deploy holds a guest address on the VM's networks until it is expunged, and
        # five rounds deploy more VMs than the default /24 holds.
        for network in cloud.listNetworks()["network"]:
            cloud.updateNetwork(id=network["id"], cidr="10.128.0.0/16")
        offering = cloud.createServiceOffering(name="chaos", displaytext="chaos", cpunumber=1,
                                               cpuspeed=10, memory=32)
        if self.fault_rate > 0:
            # Some deploys must fail half-way (VM cloned, reconfigure refused), so their
            # cleanup is tested under the kills too.
            Vcsim(self.info["vcenter_url"], self.info["vcenter_user"],
                  self.info["vcenter_password"]).fail(
                "ReconfigVM_Task", "injected by the chaos harness", max_count=0,
                probability=self.fault_rate)
        return {"vmsnapshotid": snap["vmsnapshot"]["id"],
                "serviceofferingid": offering["serviceoffering"]["id"]}

    def submit(self, params: dict[str, str]) -> None:
        """Deploy until told to stop; each request retried with its requestid until answered."""
        n = 0
        # Request ids of this run only: a state folder kept from an earlier run remembers
        # that run's ids, and a repeated id with other parameters is refused.
        run = uuid.uuid4().hex[:8]
        while not self.done.is_set():
            request = {**params, "name": f"chaos-{n}", "requestid": f"chaos-{run}-{n}"}
            tries = 0
            while True:
                try:
                    # A retry goes to the next gateway copy, as a load balancer's would.
                    answer = self.client(n + tries).deployVirtualMachine(**request)
                except CloudStackApiException as exc:
                    code = int((exc.error or {}).get("errorcode", 0))
                    if code < 500:  # refused: a client would not send it again
                        self.report.rejected.append(f"chaos-{n}: {exc.error}")
                        break
                except Exception:  # no answer: the gateway, or what it needs, is down
                    pass
                else:
                    self.accepted[answer["id"]] = answer["jobid"]
                    break
                self.report.client_retries += 1
                tries += 1
                time.sleep(0.5)
            n += 1
            time.sleep(self.interval)

    def run(self) -> Report:
        started = time.monotonic()
        self.up()
        try:
            params = self.prepare()
            submitter = threading.Thread(target=self.submit, args=(params,), daemon=True)
            submitter.start()
            for round_ in range(self.rounds):
                for target in self.report.kills:
                    time.sleep(self.rng.uniform(0.5, 3.0))
                    self.kill(target)
                _say(f"round {round_ + 1} of {self.rounds} done; "
                     f"{len(self.accepted)} deploys accepted so far")
            self.done.set()
            submitter.join(120)
            self.report.deploys_accepted = len(self.accepted)
            asyncio.run(self.check())
        finally:
            self.down()
        self.report.seconds = time.monotonic() - started
        return self.report

    # ---- the checks --------------------------------------------------------------------

    async def check(self) -> None:
        conn = await asyncpg.connect(self.info["database_url"])
        try:
            await self._settle(conn)
            await self._outcomes(conn)
            await self._effects_once(conn)
            await self._capacity(conn)
            await self._published(conn)
            await self._rebuild(conn)
        finally:
            await conn.close()

    async def _settle(self, conn: asyncpg.Connection, within: float = 600) -> None:
        _say(f"waiting for {len(self.accepted)} deploys to settle")
        deadline = time.monotonic() + within
        pending = set(self.accepted)
        while pending and time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1::text[])"
                " AND type IN ('VmStarted', 'VmDeployFailed')",
                [f"vm-{vm}" for vm in pending])
            pending -= {r["stream_id"].removeprefix("vm-") for r in rows}
            await asyncio.sleep(1)
        self.report.unsettled = sorted(pending)

    async def _outcomes(self, conn: asyncpg.Connection) -> None:
        await self._caught_up(conn, "projector")
        vcsim = Vcsim(self.info["vcenter_url"], self.info["vcenter_user"],
                      self.info["vcenter_password"])
        in_vcenter = vcsim.props(vim.VirtualMachine, ["name", "runtime.powerState"])
        names = Counter(p["name"] for _, p in in_vcenter)
        power = {p["name"]: p["runtime.powerState"] for _, p in in_vcenter}
        rows = await conn.fetch("SELECT id::text, instance_name, state, error_text"
                                " FROM vm_instances WHERE id = ANY($1::uuid[])",
                                list(self.accepted))
        reasons: Counter[str] = Counter()
        for row in rows:
            if row["state"] == "Running":
                self.report.running += 1
                if names[row["instance_name"]] != 1 or power[row["instance_name"]] != "poweredOn":
                    self.report.running_but_not_in_vcenter.append(row["id"])
            elif row["state"] == "Error":
                if names[row["instance_name"]]:
                    self.report.failed_but_in_vcenter.append(row["id"])
                else:
                    self.report.failed_with_cleanup += 1
                    reason = str(row["error_text"]).split(" failed at ", 1)[-1]
                    reasons[re.sub(r"i-\w{4}-\w{8}-VM", "<VM>", reason)[:100]] += 1
        self.report.failed_reasons = dict(reasons)
        known = {r["ref"] for r in await conn.fetch(
            "SELECT hypervisor_ref AS ref FROM vm_instances WHERE hypervisor_ref IS NOT NULL"
            " UNION SELECT data ->> 'template_ref' FROM catalog WHERE kind = 'template'"
            " AND removed IS NULL")}
        self.report.orphans = sorted(f"{obj._moId} ({p['name']})" for obj, p in in_vcenter
                                     if obj._moId not in known)

    async def _effects_once(self, conn: asyncpg.Connection) -> None:
        twice = await conn.fetch(
            "SELECT stream_id, type, count(*) AS n FROM events"
            " WHERE stream_id = ANY($1::text[])"
            " AND type IN ('VmDeployRequested', 'VmPlaced', 'VmStarted', 'VmDeployFailed')"
            " GROUP BY stream_id, type HAVING count(*) > 1",
            [f"vm-{vm}" for vm in self.accepted])
        outcomes = await conn.fetch(
            "SELECT stream_id FROM events WHERE stream_id = ANY($1::text[])"
            " AND type IN ('VmStarted', 'VmDeployFailed')"
            " GROUP BY stream_id HAVING count(*) > 1", [f"vm-{vm}" for vm in self.accepted])
        jobs = await conn.fetch(
            "SELECT data ->> 'job_id' AS job, count(*) AS n FROM events"
            " WHERE type = 'JobCompleted' GROUP BY 1 HAVING count(*) > 1")
        reservations = await conn.fetch(
            "SELECT data ->> 'vm_id' AS vm, count(*) AS n FROM events"
            " WHERE type = 'CapacityReserved' GROUP BY 1 HAVING count(*) > 1")
        self.report.effects_twice = (
            [f"{r['stream_id']}: {r['type']} x{r['n']}" for r in twice]
            + [f"{r['stream_id']}: both started and failed" for r in outcomes]
            + [f"job {r['job']}: JobCompleted x{r['n']}" for r in jobs]
            + [f"VM {r['vm']}: CapacityReserved x{r['n']}" for r in reservations])

    async def _capacity(self, conn: asyncpg.Connection) -> None:
        """Reserved on the hosts: exactly the running VMs of this run, replayed from the store."""
        rows = await conn.fetch(
            "SELECT type, data ->> 'vm_id' AS vm FROM events"
            " WHERE type IN ('CapacityReserved', 'CapacityReleased') ORDER BY position")
        held: set[str] = set()
        for row in rows:
            (held.add if row["type"] == "CapacityReserved" else held.discard)(row["vm"])
        running = {r["id"] for r in await conn.fetch(
            "SELECT id::text FROM vm_instances WHERE state = 'Running' AND NOT imported")}
        mine = set(self.accepted)
        self.report.capacity_leaks = sorted(
            [f"VM {vm} holds capacity but is not running" for vm in (held & mine) - running]
            + [f"VM {vm} runs without a reservation" for vm in (running & mine) - held])

    async def _published(self, conn: asyncpg.Connection, within: float = 120) -> None:
        nc = await open_nats(self.info["nats_url"].split(","),
                             user=self.info["nats_user"], password=self.info["nats_password"])
        try:
            deadline = time.monotonic() + within
            while True:
                stored = int(await conn.fetchval("SELECT count(*) FROM events"))
                info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM)
                published = int(info.state.messages)
                if published >= stored or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        finally:
            await nc.close()
        self.report.events_stored, self.report.events_in_jetstream = stored, published

    async def _caught_up(self, conn: asyncpg.Connection, checkpoint: str,
                         within: float = 120) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            reached = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = $1", checkpoint)
            if (reached or 0) >= head:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{checkpoint} did not catch up within {within:.0f}s")

    async def _rebuild(self, conn: asyncpg.Connection) -> None:
        await self._caught_up(conn, "projector")
        live = await _read_models(conn)
        env = {**os.environ, "SNAPDEPLOY_DATABASE_URL": self.info["database_url"],
               "SNAPDEPLOY_DATABASE_ADMIN_URL": self.info["database_admin_url"]}
        await asyncio.to_thread(subprocess.run, [*SNAPDEPLOY, "projections", "rebuild"],
                                check=True, env=env, stdout=subprocess.DEVNULL, timeout=600)
        self.report.projections_equal_rebuild = live == await _read_models(conn)


async def _read_models(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
            for table, key in READ_MODELS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.chaos",
        description="SIGKILL every snapdeploy process in turn during a stream of deploys, "
                    "then check that every deploy settled, nothing is orphaned in vCenter, "
                    "nothing happened twice and the read models equal a rebuild.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each process is killed (default 1)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between deploy requests (default 0.2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the kill moments")
    parser.add_argument("--fault-rate", type=float, default=0.1,
                        help="share of vCenter reconfigure calls made to fail (default 0.1)")
    parser.add_argument("--state-dir", type=Path, default=Path(".chaos"),
                        help="where the stack keeps its data and logs (default .chaos)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="copies of each service (up --replicas; default 1)")
    parser.add_argument("--nats-nodes", type=int, default=1,
                        help="NATS nodes, clustered when more than one (default 1)")
    parser.add_argument("--report", type=Path, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    report = Chaos(args.state_dir.resolve(), args.rounds, args.interval, args.seed,
                   args.fault_rate, replicas=args.replicas, nats_nodes=args.nats_nodes).run()
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
