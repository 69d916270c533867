"""Render BENCHMARKS.md and the plot from the results in bench/results/.

    python -m bench.report [--results bench/results] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.scale import within_spread

GOALS = {
    "overhead_median": 2.0,
    "overhead_p99": 3.0,
    "throughput": 0.6,
    "first_after_prepare": 1.1,
    "append_batched": 10_000,
    "append_fraction": 0.8,
    "rebuild": 100_000,
    "placement_p99_ms": 50,
    "seed_over_cp": 1.3,
    "nth_deploy_growth": 1.2,
}


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


BARE_LABELS = {
    "fast": "fast bare client (task state read at once, then polled)",
    "collector": "bare client with a property collector per task",
}


def deploys(r: dict[str, Any]) -> list[str]:
    o, f = r["overhead"], r["first_vs_nth"]
    # Results from before the fast bare client was measured hold one bare figure, the
    # collector-per-task client's.
    bare = {how: o[how] for how in BARE_LABELS if how in o} or {
        "collector": {"bare_s": o["bare_s"], "ratio": o["ratio"]}}
    judged = "fast" if "fast" in bare else "collector"
    lines = [
        "## Deploys (`python -m bench.deploys`)",
        "",
        f"{o['service_s']['n']} deploys through the gateway (request sent → `JobCompleted` on "
        "NATS), each followed by the bare vSphere calls the deploy needs (clone, reconfigure, "
        "power-on through pyVmomi, same seeded template, same vcsim; like snapdeploy, each "
        "reads the template's base snapshot's devices once, and so adds a clone's NICs "
        "without reading its devices first), made by each bare "
        "client in turn (their order alternating; each deploy begun 0.1 s after the one "
        "before it ended, on a stack done with what that one left): the **fast** one reads "
        "each task's state "
        "at once and then polls it with a pause growing by half from 1 ms to 50 ms (the "
        "schedule snapdeploy's driver polls with); the "
        "**collector** one makes a property collector, a filter and `WaitForUpdatesEx` per "
        f"task. The goals are judged against the {judged} one.",
        "",
        "| measure | value | goal | |",
        "|---|---|---|---|",
        f"| deploy latency, median | {o['service_s']['median'] * 1000:.0f} ms | | |",
    ]
    for how, b in bare.items():
        lines.append(f"| {BARE_LABELS[how]}, median | {b['bare_s']['median'] * 1000:.0f} ms "
                     "| | |")
    for how, b in bare.items():
        goals = how == judged
        lines += [
            f"| ratio to the {how} bare client, median of pairs | {b['ratio']['median']:.2f} | "
            + (f"≤ 2.0 | {verdict(b['ratio']['median'] <= GOALS['overhead_median'])} |"
               if goals else "| |"),
            f"| ratio to the {how} bare client, p99 of pairs | {b['ratio']['p99']:.2f} | "
            + (f"≤ 3.0 | {verdict(b['ratio']['p99'] <= GOALS['overhead_p99'])} |"
               if goals else "| |"),
        ]
    for level, row in r["throughput"].items():
        rates = {how: row[how] for how in BARE_LABELS if how in row} or {
            "collector": {"bare_per_s": row["bare_per_s"],
                          "fraction_of_bare": row["fraction_of_bare"]}}
        for how, rate in rates.items():
            # One at a time, the rate is the latency's inverse: the latency goals judge it.
            goals = how == judged and level != "1"
            lines.append(
                f"| throughput, {level} in flight, vs the {how} bare client (median of "
                f"{row.get('rounds', 1)} rounds) | "
                f"{row['service_per_s']:.1f}/s vs {rate['bare_per_s']:.1f}/s = "
                f"{rate['fraction_of_bare']:.2f} | "
                + (f"≥ 0.6 | {verdict(rate['fraction_of_bare'] >= GOALS['throughput'])} |"
                   if goals else "| |"))
    after = f["after_prepare"]
    lines.append(f"| first deploy after prepareTemplate / median of deploys 2-"
                 f"{len(after['deploys_s'])} (median over {len(after.get('series_s', [1]))} "
                 f"snapshots prepared) | {after['first_over_rest']:.2f} | ≤ 1.1 | "
                 f"{verdict(after['first_over_rest'] <= GOALS['first_after_prepare'])} |")
    lines.append(f"| without prepareTemplate: first deploy's extra time / the seed's own time "
                 f"| {f['extra_first_over_seed']:.2f} | ≤ 1 (the seed, no more) | "
                 f"{verdict(f['extra_first_over_seed'] <= 1.0)} |")
    lines += cost(r)
    steps = r.get("pipeline_median_ms", {})
    if steps:
        lines += ["", "Where a deploy's time goes (median gap between consecutive events of one "
                  "VM in the store; the gap before `VmCreated`/`VmStarted` is the vCenter work):",
                  "", "| step | median ms |", "|---|---|"]
        lines += [f"| {step} | {ms:.1f} |" for step, ms in steps.items()]
    slowest = r.get("slowest_ms", [])
    if slowest:
        lines += ["", f"The {len(slowest)} slowest deploys of the {o['service_s']['n']} above "
                  "(the p99 is made of them), step by step as above, in ms; *outside* is the "
                  "rest of each: from the request to the gateway's transaction, and from the "
                  "last transaction's start to its `JobCompleted` on NATS (that commit, the "
                  "relay, NATS):", "",
                  "| step | median | " + " | ".join(s["name"] for s in slowest) + " |",
                  "|---|---|" + "---|" * len(slowest)]
        named = list(steps) + [step for s in slowest for step in s["steps"] if step not in steps]
        lines += [f"| {step} | {_cell(steps.get(step))} | "
                  + " | ".join(f"{s['steps'].get(step, 0.0):.1f}" for s in slowest) + " |"
                  for step in dict.fromkeys(named)]
        lines.append("| *outside* | | " + " | ".join(f"{s['outside']:.1f}" for s in slowest)
                     + " |")
        lines.append("| **all** | | " + " | ".join(f"**{s['ms']:.1f}**" for s in slowest)
                     + " |")
    return lines


def _cell(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def cost(r: dict[str, Any]) -> list[str]:
    """CPU and SQL statements per deploy, per process (results since they were measured)."""
    cpu, sql = r.get("cpu_ms_per_deploy"), r.get("sql_statements_per_deploy")
    if not cpu or not sql:
        return []
    service = cpu["service"]
    lines = [
        "", f"What a deploy costs, {cpu['in_flight']} in flight. **CPU**: the time (user + "
        "system, from `/proc/<pid>/stat`) each process of the stack spent over the throughput "
        f"runs at that level ({service['deploys']} deploys in all; each run read again 1 s "
        "after its last `JobCompleted`, so that trailing projections count), divided by the "
        "deploys: "
        "each service with all its threads, PostgreSQL's postmaster with every backend "
        "(those that exited through the time the postmaster reaped), nats-server, vcsim, and "
        "the launcher; for each bare client, this benchmark's own process (the pyVmomi calls) "
        "plus vcsim over its run at the same level. **SQL statements**: a further "
        f"{sql['deploys']} deploys at that level with PostgreSQL's `log_statement = 'all'` and "
        "the application name (each service connects under its own) in the log line prefix, "
        "counted from the server's log: each `statement:` entry counts one (so asyncpg's "
        "pool reset, `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` "
        "sent as one string whenever a connection goes back to its pool, counts one) and "
        "each `execute` entry (one per Execute message of the extended protocol) counts one. "
        "A deploy is the benchmark's `deployVirtualMachine` and, once its `JobCompleted` is "
        "seen, one `queryAsyncJobResult`; both figures include what the processes do "
        "meanwhile unprompted (polling, probes), shown on their own as rates with no deploy "
        "in flight.", "",
        "| process | CPU ms per deploy | SQL statements per deploy | of which pool resets "
        "| of which BEGIN/COMMIT | no deploy in flight: CPU ms/s | statements/s |",
        "|---|---|---|---|---|---|---|",
    ]
    statements = sql["processes"]
    idle = cpu.get("idle_ms_per_s", {})
    for name in dict.fromkeys([*service["processes"], *statements]):
        row = statements.get(name, {})
        kinds = row.get("kinds_per_deploy", {})
        lines.append(
            f"| {name} | {_cell(service['processes'].get(name))} | "
            f"{_cell(row.get('per_deploy'))} | {_cell(kinds.get('pool_reset', 0.0)) if row else ''}"
            f" | {_cell(kinds.get('transaction', 0.0)) if row else ''} | "
            f"{_cell(idle.get(name))} | {_cell(row.get('idle_per_s'))} |")
    lines.append(f"| **all of the stack** | **{service['total']:.1f}** | "
                 f"**{sql['per_deploy']:.1f}** | | | {_cell(sum(idle.values()) if idle else None)}"
                 f" | {_cell(sql.get('idle_per_s'))} |")
    lines.append(f"| the API client (this benchmark), beside | {service['api_client']:.1f} | | | | "
                 "| |")
    for how in BARE_LABELS:
        if how in cpu:
            bare = cpu[how]
            lines.append(f"| {BARE_LABELS[how]}: the client + vcsim | {bare['total']:.1f} "
                         f"({bare['client']:.1f} + {bare['vcsim']:.1f}) | | | | | |")
    load = r.get("load_average")
    if load:
        lines += ["", f"Load average (1 min) on the machine: {load['before']:.1f} before the "
                  f"run, {load['after']:.1f} after."]
    return lines


def eventstore(r: dict[str, Any]) -> list[str]:
    lines = ["## Event store (`python -m bench.eventstore`)", "",
             "Appends through `EventStore.append` beside plain asyncpg inserts of the same rows "
             "under the same locks (the advisory locks appends take); rebuild of every "
             "projection beside a plain ordered fetch of the same events (asyncpg with its own "
             "codecs, pages of 10,000 rows by position: reading them alone, the ceiling any "
             "rebuild is under), every column of them, and only the columns the rebuild "
             "reads (a stricter ceiling, shown beside the goal's), in turns, each the median "
             "of its rounds. The rebuild folds the VM rows in a second process. PostgreSQL "
             "with `fsync=on`. Every side runs on uvloop's event loop, the loop the services "
             "and `snapdeploy projections rebuild` use.", "",
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
    met = rb["rebuild_events_per_s"] >= GOALS["rebuild"] and rb["fraction_of_fetch"] >= 0.5
    rounds = f", median of {rb['rounds']}" if "rounds" in rb else ""
    lines.append(f"| rebuild, {rb['events']:,} events{rounds} | "
                 f"{rb['rebuild_events_per_s']:,.0f}/s | "
                 f"{rb['raw_fetch_events_per_s']:,.0f}/s | {rb['fraction_of_fetch']:.2f} | "
                 f"≥ 100,000/s and ≥ 0.5 of raw | {verdict(met)} |")
    if "raw_fetch_rebuild_columns_events_per_s" in rb:
        narrow = rb["fraction_of_fetch_rebuild_columns"]
        lines.append(f"| rebuild, beside a fetch of only the columns it reads"
                     f" ({rb['rebuild_columns']}) | {rb['rebuild_events_per_s']:,.0f}/s | "
                     f"{rb['raw_fetch_rebuild_columns_events_per_s']:,.0f}/s | {narrow:.2f} | "
                     f"(≥ 0.5 of raw) | {verdict(narrow >= 0.5)} |")
    gc = r.get("group_commit")
    if gc:
        lines += ["", f"Group commit: {gc['callers']} concurrent requests in one process, each "
                  "committing one small append to its own stream (as the gateway's API calls "
                  "do), on a pool of the gateway's size; median of "
                  f"{gc['rounds']} alternating rounds of {gc['commits']:,} commits. This "
                  "compares two ways snapdeploy's own store can commit (a statement per "
                  "request, as before, and grouped); it is not a user's baseline, which the "
                  "raw locked inserts above are.", "",
                  "| commits | per second | commits per statement |", "|---|---|---|",
                  f"| one statement each | {gc['one_per_request_per_s']:,.0f}/s | 1 |",
                  f"| grouped (`EventStore(group_commit=True)`, the gateway) | "
                  f"{gc['grouped_per_s']:,.0f}/s | {gc['commits_per_statement']:.1f} |",
                  f"| grouped / one each | {gc['grouped_over_one']:.2f} | |"]
    return lines


# What each failover of bench.scale is timed until.
FAILOVER_UNTIL = {"relay": "the relay publishes an event appended right after (its "
                           "committer, the gateway, published it at once: events flow "
                           "meanwhile)",
                  "projector": "an event appended right after is projected",
                  "planner": "deploys requested one after the other from then on are "
                             "placed again (the first `VmPlaced` published; a message the "
                             "dead copy had taken waits for NATS's ack wait, 15 s)"}


def scale(r: dict[str, Any]) -> list[str]:
    lines = ["## Copies of every service (`python -m bench.scale`)", "",
             f"vcsim's methods slowed to a real vCenter's pace (`{r['delays']}` ms). Each row "
             "is a stack of its own with that many copies of each service; its deploys go "
             "round robin over the gateway copies, and the fast bare pyVmomi client of "
             "`bench.deploys` (clone, reconfigure, power-on, each task's state read at once "
             "and then polled: the fastest correct client we know to write) deploys as many "
             "at the same concurrency in the same run.", "",
             "Each figure is the median of the rounds measured; in a round, each deploy that "
             "ends is replaced by the next until all are sent."
             + (" Every stack is up for the whole run, and they are measured in turns, their "
                "order rotating from round to round (this machine's speed drifts within "
                "minutes: stacks measured one after the other would be compared at "
                "different speeds); the stacks not being measured sit idle meanwhile."
                if r.get("interleaved") else "")
             + (" Before the rounds, each stack and the bare client deploy one wave at full "
                "concurrency that is not counted: it opens the connections a full load uses, "
                "as in a system that has been running."
                if r.get("warmed") else ""), "",
             "| copies | deploys, in flight | service | bare | service / bare | goal | |",
             "|---|---|---|---|---|---|---|"]
    for row in r["levels"]:
        lines.append(f"| {row['replicas']} | {row['deploys']}, {row['in_flight']} | "
                     f"{row['service_per_s']:.2f}/s | {row['bare_per_s']:.2f}/s | "
                     f"{row['fraction_of_bare']:.2f} | ≥ 0.8 | "
                     f"{verdict(row['fraction_of_bare'] >= 0.8)} |")
    rounds = "; ".join(
        f"{row['replicas']} {'copy' if row['replicas'] == 1 else 'copies'} "
        + ", ".join(f"{x:.2f}" for x in row.get("rounds_service_per_s", []))
        for row in r["levels"])
    rates = [row["service_per_s"] for row in r["levels"]]
    never_lower = within_spread(r["levels"])
    spread = max((max(x) / min(x) - 1 for row in r["levels"]
                  if (x := row.get("rounds_service_per_s"))), default=0.0)
    strictly = all(b >= a for a, b in itertools.pairwise(rates))
    split = [row for row in r["levels"] if row.get("split_ms")]
    if split:
        lines += ["", "Where a counted deploy's time went, per stack (ms, mean / median): the "
                  "client's whole slot (request sent to its job's result read; a round's "
                  "rate is about the deploys in flight over the mean slot), *to vCenter* "
                  "(`VmDeployRequested` to `VmSourceReady` in the store: the gateway's "
                  "commit, the planner's pickup and placement), the *vCenter step* "
                  "(`VmSourceReady` to `VmCreated`: the cloner's pickup and its vSphere "
                  "calls) and the *rest* (the request before its commit, `JobCompleted` to "
                  "the client, the job's query):", "",
                  "| copies | slot | to vCenter | vCenter step | rest |", "|---|---|---|---|---|"]
        lines += [f"| {row['replicas']} | " + " | ".join(
            f"{row['split_ms'][part]['mean']:.0f} / {row['split_ms'][part]['median']:.0f}"
            for part in ("slot", "to_vcenter", "vcenter", "rest")) + " |" for row in split]
    lines += ["", f"More copies never lower throughput: each median above at least the one "
              f"before it: {verdict(strictly)}; at least the slowest round of the one before "
              f"it (the rounds of one stack differ by up to {spread:.0%}: {rounds} "
              f"deploys/s): {verdict(never_lower)}; slowest / fastest median "
              f"{min(rates) / max(rates):.3f}."]
    for row in r["levels"]:
        for service, until in FAILOVER_UNTIL.items():
            took = row.get(f"{service}_failover")
            if took:
                s = took["seconds"]
                lines.append("")
                lines.append(f"Failover of the {service} ({row['replicas']} copies): from "
                             f"SIGKILL of the active copy until {until}: "
                             f"median {s['median'] * 1000:.0f} ms, max "
                             f"{s['max'] * 1000:.0f} ms over {s['n']} kills.")
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


def _size(label: str) -> str:
    return label.replace("GiB", " GiB").replace("MiB", " MiB")


def _bytes(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


def dataplane(r: dict[str, Any]) -> list[str]:
    n = r["vms"]
    med = "median"
    dropped = "dropped" if r["caches_dropped"] else "**not** dropped (not allowed)"
    lines = [
        "## Data plane on KVM (`python -m bench.dataplane`)", "",
        "A VM's qcow2 disk filled with pseudo-random data (every cluster allocated), an "
        "internal snapshot of it taken through the driver, then side by side in one run "
        f"({r['reps']} repetitions, medians, the order of the paths changing): the **old "
        "path** a CloudStack user takes (export the disk as of the snapshot to secondary "
        "storage with `qemu-img convert -l snapshot.name=`, copy it back to the primary pool, "
        "a linked clone per VM backed by that copy: CloudStack copies a template to a pool "
        f"once, so VM {n} is only its overlay) and **snapdeploy**'s libvirt driver "
        "(`seed_template`: one convert on the same pool, then `clone`, linked). Each time "
        "runs to the end of an `fsync` of what the step wrote, after `sync`, with the page "
        f"cache {dropped} before each step that copies the data; the source disk is read "
        "once, untimed, before each repetition, so a cache below this machine (its disk is "
        "virtual) holds it for every step alike. Bytes written: the growth of the blocks "
        "allocated to the files of the primary pool and the secondary folder over each step "
        "(`st_blocks`). Here secondary storage is a folder on the same disk; across a "
        "network the old path's export and copy back would take longer.", "",
        "| disk | measure | old path | snapdeploy | old / snapdeploy |",
        "|---|---|---|---|---|",
    ]
    for label, row in r["sizes"].items():
        old, new, size = row["old"], row["new"], _size(label)
        used = old["copy_back_used"]
        of, nf = old["first_vm"], new["first_vm"]
        ratio = row["first_vm_old_over_new"]
        lines += [
            f"| {size} | first VM, time (disk work) | {of['s'][med]:.2f} s (export "
            f"{old['export']['s'][med]:.2f} + copy back by `{used}` "
            f"{old['copy_back'][used]['s'][med]:.2f} + overlay "
            f"{old['overlay_first']['s'][med]:.3f}) | {nf['s'][med]:.2f} s (seed "
            f"{new['seed']['s'][med]:.2f} + clone's disk part "
            f"{new['clone_first']['disk_s'][med]:.3f}) | {ratio['s']:.2f} |",
            f"| {size} | first VM, bytes written | {_bytes(of['bytes'][med])} | "
            f"{_bytes(nf['bytes'][med])} | {ratio['bytes']:.2f} |",
            f"| {size} | first VM, with the clone's power-on | | "
            f"{nf['with_power_on_s'][med]:.2f} s | |",
            f"| {size} | VM {n}, time (disk work) | {old['nth_vm']['s'][med]:.3f} s (overlay) | "
            f"{new['nth_vm']['disk_s'][med]:.3f} s (clone's disk part) | |",
            f"| {size} | VM {n}, whole `clone` call (define, overlay, reconfigure, power-on) | | "
            f"{new['nth_vm']['s'][med]:.3f} s (power-on {new['nth_vm']['power_on_s'][med]:.3f}) "
            "| |",
            f"| {size} | VM {n}, bytes written | {_bytes(old['nth_vm']['bytes'][med])} | "
            f"{_bytes(new['nth_vm']['bytes'][med])} | |",
        ]
    lines += ["", "| measure | value | goal | |", "|---|---|---|---|"]
    for label, row in r["sizes"].items():
        lines.append(
            f"| `seed_template` / plain `cp` of the disk file on the same pool, "
            f"{_size(label)} ({row['new']['seed']['s'][med]:.2f} s / "
            f"{row['raw_cp']['s'][med]:.2f} s; median of the pairs) | "
            f"{row['seed_over_cp']:.2f} | ≤ 1.3 | "
            f"{verdict(row['seed_over_cp'] <= GOALS['seed_over_cp'])} |")
        if "seed_over_cp_of_minimums" in row:
            lines.append(f"| the same, fastest seed / fastest `cp`, {_size(label)} | "
                         f"{row['seed_over_cp_of_minimums']:.2f} | | |")
    for label, row in r["sizes"].items():
        copies = row["old"]["copy_back"]
        fastest = min(copies, key=lambda m: float(copies[m]["s"][med]))
        lines.append(
            f"| `seed_template` / the fastest copy measured, `{fastest}` of the exported file "
            f"back to the pool, {_size(label)} (medians) | "
            f"{row['new']['seed']['s'][med] / copies[fastest]['s'][med]:.2f} | | |")
    growth = r["nth_growth"]
    small, large = (_size(s) for s in growth["sizes"])
    lines += [
        f"| VM {n}'s deploy, {large} / {small}: whole `clone` call | {growth['call']:.2f} | "
        f"≤ 1.2 | {verdict(growth['call'] <= GOALS['nth_deploy_growth'])} |",
        f"| VM {n}'s deploy, {large} / {small}: its disk part | {growth['disk']:.2f} | | |",
        "",
        "Copying the template back to the primary pool, each way timed (median; the old path "
        "is credited with the fastest):",
        "",
        "| disk | " + " | ".join(f"`{m}`" for m in next(iter(r["sizes"].values()))["old"]
                                  ["copy_back"]) + " |",
        "|---|" + "---|" * len(next(iter(r["sizes"].values()))["old"]["copy_back"]),
    ]
    for label, row in r["sizes"].items():
        lines.append(f"| {_size(label)} | " + " | ".join(
            f"{c['s'][med]:.2f} s" for c in row["old"]["copy_back"].values()) + " |")
    load = r.get("load_average", {})
    if load:
        lines += ["", f"Load average (1 min) on the machine: {load['before']:.1f} before the "
                  f"run, {load['after']:.1f} after; {r['filesystem']}, {r['tools']['qemu_img']}."]
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
        for how, style in (("fast", "s--"), ("collector", "^:")):
            if all(how in rows[k] for k in levels):
                axes[0].plot(levels, [rows[k][how]["bare_per_s"] for k in levels], style,
                             label=f"bare vSphere calls, {how} waits")
        if not all("fast" in rows[k] for k in levels):
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
    sections = ("deploys", "eventstore", "placement", "scale", "dataplane")  # chaos: README
    results = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))
               if p.stem in sections}
    any_result: dict[str, Any] = next((results[s] for s in sections if s in results), {})
    m = any_result.get("machine", {})
    lines = ["# Benchmarks", "",
             "Ratios measured side by side in one run; absolute times are this machine's. "
             "Regenerate with `make bench` (deploys, event store, placement and copies, then this "
             "page); the data-plane benchmark writes several GiB and runs on its own: "
             "`make bench-dataplane`.", "",
             f"Machine: {m.get('cpus')} cores ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, "
             f"Python {m.get('python')}, Linux {m.get('kernel')}.", ""]
    for name, render_part in (("deploys", deploys), ("eventstore", eventstore),
                              ("placement", placement), ("scale", scale),
                              ("dataplane", dataplane)):
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
