"""100 deploys at once from one VM snapshot: one seed, and never more reserved than a host has."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from typing import Any

import asyncpg
import pytest
from cs import CloudStack

from tests.e2e.helpers import events_of_type, seeds_started, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack

DEPLOYS = 100


def reserved_peaks(database_url: str) -> dict[str, tuple[int, int]]:
    """Per host: the most memory (MB) and CPU (MHz) ever reserved at once, replayed from the
    host streams in the store."""

    async def replay() -> dict[str, tuple[int, int]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT stream_id, type, data FROM events WHERE stream_id LIKE 'host-%'"
                " AND type IN ('CapacityReserved', 'CapacityReleased')"
                " ORDER BY stream_id, version")
        finally:
            await conn.close()
        held: dict[str, dict[str, tuple[int, int]]] = {}
        peaks: dict[str, tuple[int, int]] = {}
        for row in rows:
            data = json.loads(row["data"])
            host = data["host_id"]
            vms = held.setdefault(host, {})
            if row["type"] == "CapacityReserved":
                vms[data["vm_id"]] = (data["memory_mb"], data["cpu_mhz"])
            else:
                vms.pop(data["vm_id"], None)
            memory = sum(m for m, _ in vms.values())
            cpu = sum(c for _, c in vms.values())
            old = peaks.get(host, (0, 0))
            peaks[host] = (max(old[0], memory), max(old[1], cpu))
        return peaks

    return asyncio.run(replay())


def finished(client: CloudStack, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.queryAsyncJobResult(jobid=job_id)
        if job["jobstatus"] != 0:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still pending after {timeout}s")


def test_100_concurrent_deploys_seed_once_and_never_overcommit(
    stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim
) -> None:
    source = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = snapshot(cloud, source["id"], "load")
    hosts = {h["id"]: h for h in cloud.listHosts()["host"]}
    free_mb = sum((h["memorytotal"] - h["memoryallocated"]) // 2**20 for h in hosts.values())
    # An offering sized so that about 80 of the 100 fit: the rest must be refused, not squeezed in.
    memory = max(32, free_mb // 80)
    offering = cloud.createServiceOffering(name="load", displaytext="load", cpunumber=1,
                                           cpuspeed=100, memory=memory)["serviceoffering"]["id"]
    client = CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                        secret=stack["admin_secret_key"])
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(25) as pool:
        accepted = list(pool.map(lambda n: client.deployVirtualMachine(
            vmsnapshotid=snap, serviceofferingid=offering, name=f"load-{n}"), range(DEPLOYS)))
    results = [finished(client, a["jobid"]) for a in accepted]
    elapsed = time.monotonic() - started

    vms = {v["name"]: v for v in cloud.listVirtualMachines(listall="true")["virtualmachine"]
           if v["name"].startswith("load-")}
    running = [v for v in vms.values() if v["state"] == "Running"]
    failed = [v for v in vms.values() if v["state"] == "Error"]
    assert len(vms) == DEPLOYS and len(running) + len(failed) == DEPLOYS, results
    assert running, "no deploy succeeded"
    for vm in failed:
        assert "no host that reaches pool" in vm["errortext"], vm["errortext"]
    assert seeds_started(stack, snap) == 1
    assert events_of_type(stack, "TemplateSeeded", vm_snapshot_id=snap) == 1

    for host_id, (memory_mb, cpu_mhz) in reserved_peaks(stack["database_url"]).items():
        host = hosts[host_id]
        assert memory_mb * 2**20 <= host["memorytotal"], (host["name"], memory_mb)
        assert cpu_mhz <= host["cpunumber"] * host["cpuspeed"], (host["name"], cpu_mhz)
    in_vcenter = vcsim.vm_names()
    assert {v["instancename"] for v in running} <= in_vcenter
    assert not {v["instancename"] for v in failed} & in_vcenter
    print(f"{DEPLOYS} concurrent deploys: {len(running)} running, {len(failed)} refused for "
          f"capacity, one seed, {elapsed:.1f}s")
