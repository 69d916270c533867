"""What every benchmark shares: statistics, the machine's description, result files."""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.stack.launcher import read_stack

RESULTS = Path(__file__).parent / "results"
SNAPDEPLOY = [sys.executable, "-m", "shared.cli"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median": statistics.median(values), "p99": percentile(values, 99),
            "min": min(values), "max": max(values)}


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory_kb = next((int(line.split()[1]) for line in meminfo
                      if line.startswith("MemTotal")), 0)
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory_kb / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def write(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``result`` as ``<out>/<name>.json`` with the machine and the command."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join(["python", "-m", f"bench.{name}", *sys.argv[1:]]),
              "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2))
    return path


def goal_line(label: str, value: float, goal: str, met: bool) -> str:
    return f"{label:<58} {value:>12.3f}   goal {goal:<10} {'met' if met else 'MISSED'}"


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway embedded PostgreSQL server; yields its URL."""
    from shared.stack._servers import free_port, start_postgres

    with tempfile.TemporaryDirectory() as state:
        server = start_postgres(Path(state), free_port(), secrets.token_hex(8))
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def stack(state_dir: Path, vcsim_args: str = "") -> Iterator[dict[str, Any]]:
    """A whole snapdeploy stack, as `snapdeploy up --detach` starts it."""
    # vCenter's zone only (no KVM zone): these benchmarks measure the control plane on
    # vcsim; KVM's data plane has its own (bench.dataplane).
    env = {**os.environ, "SNAPDEPLOY_VCSIM_ARGS": vcsim_args, "SNAPDEPLOY_LOG_LEVEL": "WARNING",
           "SNAPDEPLOY_KVM_ZONES": ""}
    subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state_dir)], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    try:
        yield read_stack(state_dir)
    finally:
        subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(state_dir)], check=True,
                       stdout=subprocess.DEVNULL)
