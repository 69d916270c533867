"""`snapdeploy up --nats-nodes 3 --replicas 2`: a NATS cluster with the events stream on all
three nodes and two copies of every service. Deploys go on while a NATS node is killed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cs import CloudStack

from proto import subjects
from shared.bus import nats_servers
from shared.stack.launcher import SERVICES, alive, read_stack, role
from tests.e2e.conftest import SNAPDEPLOY, pids_of, processes_of
from tests.e2e.helpers import (
    compose_config,
    events_of_type,
    finished_job,
    snapshot,
    vm_named,
    wait_for,
)

pytestmark = pytest.mark.stack

NODES, REPLICAS = 3, 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SNAPDEPLOY_KVM_ZONES": "", "SNAPDEPLOY_VCENTER_TIMEOUT": "5"}
    subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state), "--nats-nodes",
                    str(NODES), "--replicas", str(REPLICAS)], check=True, timeout=240, env=env)
    yield read_stack(state)
    current = json.loads((state / "stack.json").read_text())
    subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(state)], check=True, timeout=120)
    left = [pid for pid in pids_of(current) if alive(pid)]
    assert left == [], f"processes left running after `snapdeploy down`: {left}"
    assert processes_of(state) == []


def current(stack: dict[str, Any]) -> dict[str, Any]:
    return read_stack(Path(stack["state_dir"]))


def stream_info(stack: dict[str, Any]) -> Any:
    """The events stream's info, asked as the monitor identity of any node."""

    async def ask() -> Any:
        nc = await nats.connect(nats_servers(stack["nats_url"]), user=stack["nats_user"],
                                password=stack["nats_password"],
                                inbox_prefix=f"_INBOX.{stack['nats_user']}")
        try:
            return await nc.jetstream(timeout=5).stream_info(subjects.EVENTS_STREAM)
        finally:
            await nc.close()

    return asyncio.run(ask())


def handled(health_url: str, consumer: str, event_type: str) -> float:
    """How many messages of ``event_type`` this copy's consumer handled (its /metrics)."""
    with urllib.request.urlopen(health_url.replace("/healthz", "/metrics"), timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("snapdeploy_messages_handled_total{"):
            labels, value = line.split("{", 1)[1].rsplit("} ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if found == {"consumer": consumer, "type": event_type, "outcome": "handled"}:
                total += float(value)
    return total


def test_every_node_and_every_copy_runs_and_the_stream_has_three_replicas(
        stack: dict[str, Any]) -> None:
    assert [n for n in stack["servers"] if n.startswith("nats-server")] == [
        "nats-server", "nats-server-2", "nats-server-3"]
    urls = nats_servers(stack["nats_url"])
    assert len(urls) == NODES
    assert sorted(urls) == sorted(s["url"] for n, s in stack["servers"].items()
                                  if n.startswith("nats-server"))
    assert stack["nats_nodes"] == NODES and stack["nats_replicas"] == NODES
    for service in SERVICES:
        copies = [n for n, s in stack["services"].items() if s["service"] == service]
        assert copies == [service, f"{service}-2"]
    info = stream_info(stack)
    assert info.config.num_replicas == NODES
    assert info.cluster is not None and len(info.cluster.replicas) == NODES - 1
    # Both gateways answer the API: the first on api_url, the other on its own port.
    assert len(stack["gateway_urls"]) == REPLICAS
    assert stack["gateway_urls"][0] == stack["gateway_url"]
    for url in stack["gateway_urls"]:
        client = CloudStack(endpoint=f"{url}/client/api", key=stack["admin_api_key"],
                            secret=stack["admin_secret_key"])
        assert client.listZones()["count"] >= 1


def deploy_source(cloud: CloudStack, name: str) -> tuple[str, str]:
    """A new snapshot of DC0_C0_RP0_VM0 and a small offering, both called ``name``."""
    snap = snapshot(cloud, vm_named(cloud, "DC0_C0_RP0_VM0")["id"], name)
    offering = cloud.createServiceOffering(name=name, displaytext=name, cpunumber=1,
                                           cpuspeed=100, memory=64)["serviceoffering"]["id"]
    return snap, offering


def test_deploys_reach_running_while_a_nats_node_is_killed(stack: dict[str, Any],
                                                           cloud: CloudStack) -> None:
    clients = [CloudStack(endpoint=f"{url}/client/api", key=stack["admin_api_key"],
                          secret=stack["admin_secret_key"]) for url in stack["gateway_urls"]]
    admin = clients[0]
    snap, offering = deploy_source(cloud, "cluster")

    def deploy(n: int) -> dict[str, Any]:
        accepted: dict[str, Any] = clients[n % len(clients)].deployVirtualMachine(
            vmsnapshotid=snap, serviceofferingid=offering, name=f"cl-{n}")
        return accepted

    # The node that leads the stream goes: a new leader must be elected for it.
    leader = stream_info(stack).cluster.leader
    victim = "nats-server" if leader.endswith("-1") else f"nats-server-{leader.rsplit('-', 1)[1]}"
    victim_pid = stack["servers"][victim]["pid"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = list(pool.map(deploy, range(8)))
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        later = list(pool.map(deploy, range(8, 24)))
    accepted = first + later
    jobs = [finished_job(admin, a["jobid"], timeout=150) for a in accepted]
    assert [j["jobstatus"] for j in jobs] == [1] * len(accepted), jobs
    vms = {v["name"]: v for v in admin.listVirtualMachines(listall="true")["virtualmachine"]
           if v["name"].startswith("cl-")}
    assert sorted(vms) == sorted(f"cl-{n}" for n in range(len(accepted)))
    assert {v["state"] for v in vms.values()} == {"Running"}
    # Each handled once, whichever copy took it: one placement and one clone per VM.
    assert events_of_type(stack, "VmPlaced") >= len(accepted)
    for vm in vms.values():
        assert events_of_type(stack, "VmPlaced", vm_id=vm["id"]) == 1
        assert events_of_type(stack, "VmCreated", vm_id=vm["id"]) == 1
    print(f"{len(accepted)} deploys Running, {time.monotonic() - killed_at:.1f}s after "
          f"{victim} was killed")

    # The launcher restarted the killed node on its ports; the stream is whole again.
    wait_for(lambda: current(stack)["servers"][victim]["pid"] != victim_pid,
             f"{victim} restarted", timeout=30)
    now = current(stack)
    assert now["servers"][victim]["url"] == stack["servers"][victim]["url"]

    def whole() -> bool:
        info = stream_info(stack)
        return info.config.num_replicas == NODES and info.cluster is not None and \
            len(info.cluster.replicas) == NODES - 1 and \
            all(p.current and not p.offline for p in info.cluster.replicas)

    wait_for(whole, "the stream's three replicas current again", timeout=60)


def test_copies_of_a_service_share_its_durable_consumer(stack: dict[str, Any],
                                                       cloud: CloudStack) -> None:
    """The cloners of both copies take some of the deploys; together, each deploy once (the
    store above says no VM was placed or cloned twice). A copy whose NATS node was killed
    above may have taken none while it reconnected (the other copy took them all): more
    deploys are made, four at a time, until each copy has taken some. The planner runs one
    active copy: it places every one of them, and the copy standing by none."""
    services = current(stack)["services"]
    snap, offering = deploy_source(cloud, "shared")
    planners = ("planner", "planner-2")
    roles = {name: role(services[name]["health_url"]) for name in planners}
    assert sorted(map(str, roles.values())) == ["active", "standby"], roles

    def placed() -> dict[str, float]:
        return {name: handled(services[name]["health_url"], "planner", "VmDeployRequested")
                for name in planners}

    def cloned() -> list[float]:
        return [handled(services[name]["health_url"], "cloner", "VmSourceReady")
                for name in ("cloner", "cloner-2")]

    before = placed()
    made = 0
    deadline = time.monotonic() + 120
    while made == 0 or not all(c > 0 for c in cloned()):
        assert time.monotonic() < deadline, cloned()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            vms = list(pool.map(lambda n: cloud.deployVirtualMachine(
                vmsnapshotid=snap, serviceofferingid=offering, name=f"sh-{n}"),
                range(made, made + 4)))
        assert {v["virtualmachine"]["state"] for v in vms} == {"Running"}
        made += 4
        for vm in vms:  # room for the next four
            cloud.destroyVirtualMachine(id=vm["virtualmachine"]["id"], expunge="true")
    after = placed()
    for name, was in roles.items():
        assert (after[name] - before[name] >= made) if was == "active" \
            else after[name] == before[name], (roles, before, after)
    print(f"each cloner took some, after {made} more deploys: {cloned()}; placed: {after}")


def test_docker_compose_runs_three_nats_nodes_and_scalable_services() -> None:
    shown = compose_config()
    for node in ("nats", "nats-2", "nats-3"):
        assert f"\n  {node}:\n" in shown
    assert "SNAPDEPLOY_NATS_URL: nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222" in shown
    assert "SNAPDEPLOY_NATS_REPLICAS: '3'" in shown or 'SNAPDEPLOY_NATS_REPLICAS: "3"' in shown
    # No fixed container name, and the gateways take one host port each of a range: every
    # service scales with --scale.
    assert "container_name" not in shown
    assert "published: 8080-8089" in shown
