"""Each benchmark, once at a tiny size, so that `make bench` keeps working. No timing is
asserted: only that every figure the report needs is produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import render

pytestmark = pytest.mark.stack

ROOT = Path(__file__).parent.parent


def bench(name: str, out: Path, *args: str) -> dict:  # type: ignore[type-arg]
    subprocess.run([sys.executable, "-m", f"bench.{name}", "--out", str(out), *args],
                   cwd=ROOT, check=True, timeout=600, stdout=subprocess.DEVNULL)
    return json.loads((out / f"{name}.json").read_text())  # type: ignore[no-any-return]


def test_every_benchmark_runs_small_and_the_report_renders(tmp_path: Path) -> None:
    deploys = bench("deploys", tmp_path, "--deploys", "2", "--levels", "1,2", "--per-level",
                    "2", "--sequence", "3", "--first-repeats", "2", "--rounds", "2")
    assert deploys["overhead"]["ratio"]["n"] == 2
    assert set(deploys["throughput"]) == {"1", "2"}
    assert len(deploys["throughput"]["2"]["rounds_service_per_s"]) == 2
    assert len(deploys["first_vs_nth"]["after_prepare"]["deploys_s"]) == 3
    assert len(deploys["first_vs_nth"]["after_prepare"]["series_s"]) == 2
    # Both deploys are the slowest 2, each with its steps from the store, which with the
    # rest of its time add up to all of it.
    slowest = deploys["slowest_ms"]
    assert sorted(s["name"] for s in slowest) == ["o-0", "o-1"]
    for deploy in slowest:
        assert "VmSourceReady -> VmCreated" in deploy["steps"]
        assert sum(deploy["steps"].values()) + deploy["outside"] == \
            pytest.approx(deploy["ms"])
    store = bench("eventstore", tmp_path, "--appends", "80", "--events", "500", "--commits",
                  "128", "--rounds", "2")
    assert set(store["appends"]) == {"1x1", "1x10", "8x1", "8x10"}
    assert store["group_commit"]["commits"] == 128
    assert store["rebuild"]["events"] == 500
    assert len(store["rebuild"]["rounds_rebuild_events_per_s"]) == 2
    assert len(store["rebuild"]["rounds_raw_fetch_events_per_s"]) == 2
    placement = bench("placement", tmp_path, "--vms", "100", "--rounds", "3")
    assert [row["hosts"] for row in placement["levels"]] == [10, 100, 1000]
    scale = bench("scale", tmp_path, "--replicas", "1,2", "--deploys", "2", "--in-flight", "2",
                  "--kills", "1", "--rounds", "2", "--delays",
                  "CloneVM_Task:100,PowerOnVM_Task:50")
    one, two = scale["levels"]
    assert scale["interleaved"] and [one["replicas"], two["replicas"]] == [1, 2]
    assert len(one["rounds_service_per_s"]) == len(two["rounds_bare_per_s"]) == 2
    assert "relay_failover" not in one and two["relay_failover"]["kills"] == 1
    text = render(tmp_path, tmp_path / "BENCHMARKS.md")
    assert "## Deploys" in text and "## Event store" in text and "## Placement" in text
    assert "## Copies of every service" in text
    assert (tmp_path / "BENCHMARKS.png").stat().st_size > 1000
