"""Render BENCHMARKS.md and the plot from the results in bench/results/.

    python -m bench.report [--results bench/results] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS

GOALS = {
    "overhead_median": 2.0,
    "overhead_p99": 3.0,
    "throughput": 0.6,
    "first_after_prepare": 1.1,
    "append_batched": 10_000,
    "append_fraction": 0.8,
    "rebuild": 100_000,
    "placement_p99_ms": 50,
}


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def deploys(r: dict[str, Any]) -> list[str]:
    o, f = r["overhead"], r["first_vs_nth"]
    lines = [
        "## Deploys (`python -m bench.deploys`)",
        "",
        f"{o['ratio']['n']} deploys through the gateway (request sent → `JobCompleted` on NATS), "
        "each followed by the bare vSphere calls the deploy needs (clone, reconfigure, "
        "power-on through pyVmomi, same seeded template, same vcsim).",
        "",
        "| measure | value | goal | |",
        "|---|---|---|---|",
        f"| deploy latency, median | {o['service_s']['median'] * 1000:.0f} ms | | |",
        f"| bare calls, median | {o['bare_s']['median'] * 1000:.0f} ms | | |",
        f"| ratio, median of pairs | {o['ratio']['median']:.2f} | ≤ 2.0 | "
        f"{verdict(o['ratio']['median'] <= GOALS['overhead_median'])} |",
        f"| ratio, p99 of pairs | {o['ratio']['p99']:.2f} | ≤ 3.0 | "
        f"{verdict(o['ratio']['p99'] <= GOALS['overhead_p99'])} |",
    ]
    for level, row in r["throughput"].items():
        lines.append(f"| throughput, {level} in flight | {row['service_per_s']:.1f}/s vs bare "
                     f"{row['bare_per_s']:.1f}/s = {row['fraction_of_bare']:.2f} | ≥ 0.6 | "
                     f"{verdict(row['fraction_of_bare'] >= GOALS['throughput'])} |")
    after = f["after_prepare"]
    lines.append(f"| first deploy after prepareTemplate / median of deploys 2-"
                 f"{len(after['deploys_s'])} | {after['first_over_rest']:.2f} | ≤ 1.1 | "
                 f"{verdict(after['first_over_rest'] <= GOALS['first_after_prepare'])} |")
    lines.append(f"| without prepareTemplate: first deploy's extra time / the seed's own time "
                 f"| {f['extra_first_over_seed']:.2f} | ≈ 1 | "
                 f"{verdict(0.5 <= f['extra_first_over_seed'] <= 1.5)} |")
    steps = r.get("pipeline_median_ms", {})
    if steps:
        lines += ["", "Where a deploy's time goes (median gap between consecutive events of one "
                  "VM in the store; the gap before `VmCreated`/`VmStarted` is the vCenter work):",
                  "", "| step | median ms |", "|---|---|"]
        lines += [f"| {step} | {ms:.1f} |" for step, ms in steps.items()]
    return lines


def eventstore(r: dict[str, Any]) -> list[str]:
    lines = ["## Event store (`python -m bench.eventstore`)", "",
             "Appends through `EventStore.append` beside plain asyncpg inserts of the same rows "
             "under the same table lock; rebuild of every projection beside a plain ordered "
             "fetch of the same events. PostgreSQL with `fsync=on`.", "",
             "| measure | store | raw ceiling | store / raw | goal | |",
             "|---|---|---|---|---|---|"]
    for key, row in r["appends"].items():
        writers, batch = key.split("x")
        goal = "≥ 10,000/s and ≥ 0.8 of raw" if batch == "10" else "≥ 0.8 of raw"
        met = row["fraction_of_raw"] >= GOALS["append_fraction"] and (
            batch != "10" or row["store_events_per_s"] >= GOALS["append_batched"])
        lines.append(f"| appends, {writers} writer(s), batches of {batch} | "
                     f"{row['store_events_per_s']:,.0f}/s | {row['raw_events_per_s']:,.0f}/s | "
                     f"{row['fraction_of_raw']:.2f} | {goal} | {verdict(met)} |")
    rb = r["rebuild"]
    lines.append(f"| rebuild, {rb['events']:,} events | {rb['rebuild_events_per_s']:,.0f}/s | "
                 f"{rb['raw_fetch_events_per_s']:,.0f}/s | {rb['fraction_of_fetch']:.2f} | "
                 f"≥ 100,000/s | {verdict(rb['rebuild_events_per_s'] >= GOALS['rebuild'])} |")
    return lines


def placement(r: dict[str, Any]) -> list[str]:
    lines = ["## Placement (`python -m bench.placement`)", "",
             "Reading every host's capacity from the store's write-side table "
             "(`host_capacity`, `EventStore.hosts()`) and choosing, as the planner does.",
             "", "| hosts | VMs placed | median | p99 | goal | |", "|---|---|---|---|---|---|"]
    for row in r["levels"]:
        p99 = row["placement_ms"]["p99"]
        goal = "p99 < 50 ms" if row["hosts"] == 1000 else ""
        met = verdict(p99 < GOALS["placement_p99_ms"]) if row["hosts"] == 1000 else ""
        lines.append(f"| {row['hosts']:,} | {row['vms']:,} | "
                     f"{row['placement_ms']['median']:.1f} ms | {p99:.1f} ms | {goal} | {met} |")
    lines.append(f"| growth of the median, 10 → 1,000 hosts | | "
                 f"x{r['growth_10_to_1000_hosts']:.1f} | | ≤ x100 (linear) | "
                 f"{verdict(r['growth_10_to_1000_hosts'] <= 100)} |")
    return lines


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if "deploys" in results:
        rows = results["deploys"]["throughput"]
        levels = list(rows)
        axes[0].plot(levels, [rows[k]["service_per_s"] for k in levels], "o-",
                     label="snapdeploy")
        axes[0].plot(levels, [rows[k]["bare_per_s"] for k in levels], "s--",
                     label="bare vSphere calls")
        axes[0].set_xlabel("deploys in flight")
        axes[0].set_ylabel("deploys per second")
        axes[0].set_title("Throughput on vcsim")
        axes[0].legend()
    if "placement" in results:
        rows = results["placement"]["levels"]
        hosts = [r["hosts"] for r in rows]
        axes[1].plot(hosts, [r["placement_ms"]["median"] for r in rows], "o-", label="median")
        axes[1].plot(hosts, [r["placement_ms"]["p99"] for r in rows], "s--", label="p99")
        axes[1].axhline(50, color="grey", linestyle=":", label="goal (p99)")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("hosts (10,000 VMs placed)")
        axes[1].set_ylabel("ms")
        axes[1].set_title("Placement latency")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def render(results_dir: Path, out: Path) -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))
               if p.stem in ("deploys", "eventstore", "placement")}  # chaos.json: README
    any_result: dict[str, Any] = next(iter(results.values()), {})
    m = any_result.get("machine", {})
    lines = ["# Benchmarks", "",
             "Ratios measured side by side in one run; absolute times are this machine's. "
             "Regenerate with `make bench` (all three, then this page).", "",
             f"Machine: {m.get('cpus')} cores ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, "
             f"Python {m.get('python')}, Linux {m.get('kernel')}.", ""]
    for name, render_part in (("deploys", deploys), ("eventstore", eventstore),
                              ("placement", placement)):
        if name in results:
            lines += [*render_part(results[name]), "",
                      f"Run {results[name]['when']}: `{results[name]['command']}`", ""]
    png = out.with_suffix(".png")
    plot(results, png)
    lines += [f"![throughput and placement]({png.name})", ""]
    analysis = Path(__file__).with_name("analysis.md")
    if analysis.exists():
        lines += [analysis.read_text()]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    render(args.results, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
