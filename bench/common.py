"""What every benchmark shares: statistics, the machine's description, result files, the CPU
time of process trees."""

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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (field 3 first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu(pid: int) -> tuple[int, float] | None:
    """``pid``'s start time (clock ticks after boot: tells it from a later process with the
    same pid) and the CPU seconds (user + system) of it and its descendants: every thread
    of each live one, and, through each one's cutime + cstime, the descendants it has
    reaped. None if ``pid`` is gone."""
    top = _stat(pid)
    if top is None:
        return None
    ticks, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        fields = top if current == pid else _stat(current)
        if fields is None:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        todo += _children(current)
    return int(top[19]), ticks / CLOCK_TICKS


def own_cpu(pid: int) -> tuple[int, float] | None:
    """As ``tree_cpu``, for ``pid`` alone (its threads, and the children it has reaped)."""
    fields = _stat(pid)
    if fields is None:
        return None
    return int(fields[19]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def cpu_ms(before: dict[str, tuple[int, float] | None],
           after: dict[str, tuple[int, float] | None]) -> dict[str, float | None]:
    """Per name, the CPU milliseconds between two readings of ``tree_cpu``/``own_cpu``;
    None where the process was gone or replaced (restarted) in between."""
    out: dict[str, float | None] = {}
    for name, first in before.items():
        last = after.get(name)
        same = first is not None and last is not None and first[0] == last[0]
        out[name] = (last[1] - first[1]) * 1000 if same and first and last else None
    return out


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
def stack(state_dir: Path, vcsim_args: str = "",
          up_args: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """A whole snapdeploy stack, as `snapdeploy up --detach` starts it (with ``up_args``)."""
    # vCenter's zone only (no KVM zone): these benchmarks measure the control plane on
    # vcsim; KVM's data plane has its own (bench.dataplane).
    env = {**os.environ, "SNAPDEPLOY_VCSIM_ARGS": vcsim_args, "SNAPDEPLOY_LOG_LEVEL": "WARNING",
           "SNAPDEPLOY_KVM_ZONES": ""}
    subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state_dir), *up_args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        yield read_stack(state_dir)
    finally:
        subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(state_dir)], check=True,
                       stdout=subprocess.DEVNULL)
