"""The data plane on KVM: what the first and the n-th VM from a VM snapshot cost in time and
bytes written, the way a CloudStack user does it today beside snapdeploy's libvirt driver.

    python -m bench.dataplane [--sizes 1G,4G] [--vms 10] [--reps 7] [--work-dir DIR]

Starts a private libvirt daemon with a directory pool ("primary") and a plain folder beside
it standing for secondary storage, on the same file system. For each size, a VM's qcow2 disk
is filled with pseudo-random data (every cluster allocated, nothing compressible or zero)
and an internal snapshot of it is taken through the driver (`create_snapshot`). Then, in
each repetition, side by side (the order changing from one repetition to the next):

- old path, as a CloudStack user does it: export the disk as of the snapshot to secondary
  storage (`qemu-img convert -l snapshot.name=`), copy it back to the primary pool (three
  correct copies are timed: `cp`, `cp --sparse=always` and `qemu-img convert`; the old path
  is credited with the fastest by median), then a linked clone (a qcow2 overlay backed by
  the copy) per VM. CloudStack copies a template to a primary pool once, so every VM after
  the first is only an overlay;
- new path, snapdeploy's driver: `seed_template` (a convert on the same pool, a template
  domain and its base snapshot), then `clone` (linked) for each VM, which also defines the
  VM and powers it on;
- the baseline: a plain `cp` of the source disk file to the same pool, just before or just
  after the seed.

Each timed step starts after `sync`; before every step that copies the disk's data the
page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`, recorded in the results), so
its reads go to the disk. Each repetition first reads the source disk once, untimed: on a
virtual machine the host may cache its disk, which dropping this system's cache cannot
undo, so every step then meets the source alike whichever runs first. A step's time runs
to the end of an `fsync` of the files it wrote, so data still in the page cache is not
counted as written; the call alone is recorded too (`call_s`).

Bytes written are the growth of the space allocated (`st_blocks`) to the files of the
primary pool and the secondary folder over the step. The bytes this process and the
children it waited for sent to storage (`/proc/self/io` `write_bytes`) are recorded beside
them as a check (libvirt's own work, such as the template's base snapshot, is not in it).

A clone's disk part (from the call to the driver's log of its clone operation: lookups,
defining the VM, the overlay, a pool refresh) is timed apart from the whole call, which
adds the reconfigure and the power-on; each clone is powered off once measured.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt

import shared.drivers.libvirt as kvm
from bench.common import goal_line, summary, write
from shared.drivers.base import CLONE, POWER_ON, RECONFIGURE, CloneProgress, CloneRequest
from shared.stack._libvirt import start_libvirtd

HOST = "kvm0"
POOL = "primary"
SNAPSHOT = "bench"
GIB = 2**30
MIB = 2**20
FILL_CHUNK = 4 * MIB
SEED_OVER_CP_GOAL = 1.3
NTH_GROWTH_GOAL = 1.2
# The copies a user could make of the exported template back to the primary pool. Each is
# correct (the result is the same image); the old path is credited with the fastest.
# --reflink=never: primary and secondary storage are different storage in CloudStack, so no
# copy between them can share blocks (on ext4 there are none to share anyway).
COPY_BACK = {
    "cp": ["cp", "--reflink=never"],
    "cp --sparse=always": ["cp", "--reflink=never", "--sparse=always"],
    "qemu-img convert": ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2"],
}

Sample = dict[str, float]


def say(text: str) -> None:
    print(f"dataplane: {text}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """``16M``, ``1G``, ``4GiB`` -> bytes."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"M": MIB, "G": GIB}
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def size_label(size: int) -> str:
    return f"{size // GIB}GiB" if size % GIB == 0 else f"{size // MIB}MiB"


def human_bytes(count: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


# ---- measuring ------------------------------------------------------------------------


def allocated(folders: list[Path]) -> int:
    """Bytes allocated to the regular files directly in ``folders``."""
    total = 0
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    try:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        pass  # a partial file renamed while listed
    return total


def process_written() -> int:
    """Bytes this process (its threads, and the children it has waited for) caused to be
    sent to storage."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def read_through(path: Path) -> None:
    """Read a file once, untimed: storage below this system's page cache (a virtual
    disk's host cache) then holds it for every step alike, whichever comes first."""
    with path.open("rb", buffering=0) as file:
        while file.read(16 * MIB):
            pass


def same_image(a: Path, b: Path) -> bool:
    """Whether two images hold the same guest-visible bytes (``qemu-img compare``)."""
    return subprocess.run(["qemu-img", "compare", "-U", "-q", str(a), str(b)],
                          capture_output=True, check=False).returncode == 0


class OperationClock(logging.Handler):
    """When the driver logged each operation it made (``new_operation``): splits a clone
    into its disk part and the rest."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and args and str(args[0]).startswith("op-"):
            self.at[str(args[0])] = time.perf_counter()


class Bench:
    """The site (a private libvirt daemon with a primary pool and a secondary folder), the
    driver's session on it, and how each step is measured."""

    def __init__(self, work: Path, drop: bool) -> None:
        self.work = work
        self.primary = work / "primary"
        self.secondary = work / "secondary"
        self.drop = drop
        self.caches_dropped = drop
        self.clock = OperationClock()

    async def __aenter__(self) -> Bench:
        for folder in (self.primary, self.secondary):
            folder.mkdir(parents=True)
        say("starting a private libvirt daemon")
        self.daemon = await asyncio.to_thread(start_libvirtd, self.work / "state")
        self.conn: Any = libvirt.open(self.daemon.uri)
        pool = self.conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{POOL}</name>"
            f"<target><path>{self.primary}</path></target></pool>", 0)
        pool.create(0)
        self.pool_ref = str(pool.UUIDString())
        self.driver = await kvm.LibvirtHypervisor.connect({HOST: self.daemon.uri}, threads=2)
        driver_log = logging.getLogger(kvm.__name__)
        driver_log.setLevel(logging.INFO)
        driver_log.addHandler(self.clock)
        return self

    async def __aexit__(self, *_: object) -> None:
        logging.getLogger(kvm.__name__).removeHandler(self.clock)
        await self.driver.close()
        self.conn.close()
        await asyncio.to_thread(self.daemon.stop)

    @property
    def folders(self) -> list[Path]:
        return [self.primary, self.secondary]

    async def measure(self, action: Callable[[], Awaitable[object]], wrote: list[Path],
                      cold: bool) -> Sample:
        """Time ``action`` to the end of an fsync of the files it ``wrote``; the bytes it
        added to the pool and secondary folders."""
        if cold and self.drop:
            self.caches_dropped = await asyncio.to_thread(drop_caches) and self.caches_dropped
        else:
            await asyncio.to_thread(os.sync)
        before, written = allocated(self.folders), process_written()
        started = time.perf_counter()
        await action()
        called = time.perf_counter()
        for path in wrote:
            fsync(path)
        done = time.perf_counter()
        return {"s": done - started, "call_s": called - started, "flush_s": done - called,
                "bytes": allocated(self.folders) - before,
                "process_write_bytes": process_written() - written, "started": started}

    async def command(self, argv: list[str], wrote: Path, cold: bool) -> Sample:
        return await self.measure(lambda: asyncio.to_thread(run, *argv), [wrote], cold)


# ---- the source VM ------------------------------------------------------------------------


def fill(disk: Path, size: int, seed: int) -> None:
    """A qcow2 disk of ``size`` bytes whose every MiB holds different pseudo-random bytes,
    every cluster allocated."""
    raw = disk.with_suffix(".raw")
    rng = random.Random(seed)
    with raw.open("wb") as out:
        for _ in range(0, size, FILL_CHUNK):
            out.write(rng.randbytes(FILL_CHUNK))
        out.truncate(size)
    try:
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk))
    finally:
        raw.unlink()
    fsync(disk)
    if disk.stat().st_blocks * 512 < size:
        raise RuntimeError(f"{disk.name} is not fully allocated")


async def source_vm(bench: Bench, size: int) -> tuple[str, str, Path]:
    """A VM (never started) with a filled disk of ``size`` bytes in the primary pool and an
    internal snapshot of it taken through the driver: (vm ref, snapshot ref, disk)."""
    name = f"source-{size_label(size)}"
    disk = bench.primary / f"{name}.qcow2"
    say(f"{size_label(size)}: filling the source disk with pseudo-random data")
    await asyncio.to_thread(fill, disk, size, size)
    bench.conn.storagePoolLookupByName(POOL).refresh(0)
    domain = bench.conn.defineXML(kvm.guest_domain_xml(name, disk))
    vm_ref = str(domain.UUIDString())
    snapshot_ref, _ = await bench.driver.create_snapshot(vm_ref, SNAPSHOT, "data plane", False,
                                                         False)
    return vm_ref, snapshot_ref, disk


# ---- one repetition of each path ----------------------------------------------------------


async def raw_cp(bench: Bench, source: Path, rep: int) -> Sample:
    dest = bench.primary / f"cp-{rep}.qcow2"
    sample = await bench.command(["cp", "--reflink=never", str(source), str(dest)], dest,
                                 cold=True)
    dest.unlink()
    return sample


async def old_path(bench: Bench, source: Path, vms: int, rep: int,
                   check: bool) -> dict[str, Any]:
    """Export to secondary, copy back (each way), an overlay per VM: the samples."""
    exported = bench.secondary / f"template-{rep}.qcow2"
    export = await bench.command(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2",
         "-l", f"snapshot.name={SNAPSHOT}", str(source), str(exported)], exported, cold=True)
    methods = list(COPY_BACK)
    methods = methods[rep % len(methods):] + methods[:rep % len(methods)]
    copies: dict[str, Sample] = {}
    template: Path | None = None
    for index, method in enumerate(methods):
        dest = bench.primary / f"template-{rep}-{index}.qcow2"
        copies[method] = await bench.command([*COPY_BACK[method], str(exported), str(dest)],
                                             dest, cold=True)
        if check and not same_image(dest, source):
            raise RuntimeError(f"the copy back by {method} is not the disk as of the snapshot")
        if template is None:
            template = dest  # kept: the template registered on the primary pool
        else:
            dest.unlink()
    assert template is not None
    overlays = []
    for vm in range(vms):
        overlay = bench.primary / f"old-{rep}-{vm}.qcow2"
        overlays.append(await bench.command(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(template),
             str(overlay)], overlay, cold=False))
    for file in [*bench.primary.glob(f"old-{rep}-*.qcow2"), template, exported]:
        file.unlink()
    return {"export": export, "copy_back": copies, "overlays": overlays}


async def new_path(bench: Bench, vm_ref: str, snapshot_ref: str, source: Path, size: int,
                   vms: int, rep: int, check: bool,
                   baseline: Callable[[], Awaitable[None]], baseline_first: bool,
                   ) -> dict[str, Any]:
    """``seed_template`` then a linked ``clone`` per VM, through the driver: the samples.
    ``baseline`` runs just before or just after the seed, so the two meet the same load."""
    name = f"template-{size_label(size)}-{rep}"
    template_file = bench.primary / f"{name}.qcow2"
    seeded: list[Any] = []

    async def seed() -> None:
        seeded.append(await bench.driver.seed_template(vm_ref, snapshot_ref, bench.pool_ref,
                                                       name))

    if baseline_first:
        await baseline()
    seed_sample = await bench.measure(seed, [template_file], cold=True)
    if not baseline_first:
        await baseline()
    if check and not same_image(template_file, source):
        raise RuntimeError("the seeded template is not the disk as of the snapshot")
    template = seeded[0]
    clones: list[Sample] = []
    refs: list[str] = []
    for vm in range(vms):
        clone_name = f"new-{size_label(size)}-{rep}-{vm}"
        progress = CloneProgress()
        request = CloneRequest(
            name=clone_name, template_ref=template.template_ref,
            base_snapshot_ref=template.base_snapshot_ref, host_ref=HOST,
            pool_ref=bench.pool_ref, linked=True, cpu_number=1, cpu_mhz=1000, memory_mb=128,
            networks=[])

        async def clone(request: CloneRequest = request,
                        progress: CloneProgress = progress) -> None:
            await bench.driver.clone(request, progress)

        sample = await bench.measure(clone, [bench.primary / f"{clone_name}.qcow2"],
                                     cold=False)
        if progress.vm_ref:
            refs.append(progress.vm_ref)
        steps = {step: bench.clock.at.get(progress.operations.get(step, ""))
                 for step in (CLONE, RECONFIGURE, POWER_ON)}
        disk_at, reconfigured_at = steps[CLONE], steps[RECONFIGURE]
        if disk_at is None or reconfigured_at is None:
            raise RuntimeError("the driver did not log the clone's operations")
        started = sample["started"]
        # The disk part, with the overlay's fsync; the power-on: from the reconfigure's log
        # to the end of the call.
        sample["disk_s"] = disk_at - started + sample["flush_s"]
        sample["power_on_s"] = sample["call_s"] - (reconfigured_at - started)
        clones.append(sample)
        if progress.vm_ref:
            await bench.driver.power_off(progress.vm_ref)
    for ref in refs:
        await bench.driver.destroy_vm(ref)
    await bench.driver.destroy_vm(template.template_ref)
    return {"seed": seed_sample, "clones": clones}


# ---- a size, then the whole run --------------------------------------------------------


def stats(samples: list[Sample]) -> dict[str, Any]:
    keys = [k for k in samples[0] if k != "started"]
    return {key: summary([s[key] for s in samples]) for key in keys}


def paired_median(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


async def one_size(bench: Bench, size: int, vms: int, reps: int) -> dict[str, Any]:
    label = size_label(size)
    vm_ref, snapshot_ref, source = await source_vm(bench, size)
    source_allocated = source.stat().st_blocks * 512
    cps: list[Sample] = []
    olds: list[dict[str, Any]] = []
    news: list[dict[str, Any]] = []
    for rep in range(reps):
        check = rep == 0

        async def cp(rep: int = rep) -> None:
            cps.append(await raw_cp(bench, source, rep))
            say(f"{label} rep {rep + 1}/{reps}: raw cp {cps[-1]['s']:.2f} s")

        async def old(rep: int = rep, check: bool = check) -> None:
            olds.append(await old_path(bench, source, vms, rep, check))
            copies = ", ".join(f"{m} {s['s']:.2f} s" for m, s in olds[-1]["copy_back"].items())
            say(f"{label} rep {rep + 1}/{reps}: old path export {olds[-1]['export']['s']:.2f} s, "
                f"copy back {copies}, overlay {olds[-1]['overlays'][-1]['s']:.3f} s")

        async def new(rep: int = rep, check: bool = check) -> None:
            news.append(await new_path(bench, vm_ref, snapshot_ref, source, size, vms, rep,
                                       check, cp, baseline_first=rep % 2 == 0))
            last = news[-1]["clones"][-1]
            say(f"{label} rep {rep + 1}/{reps}: new path seed {news[-1]['seed']['s']:.2f} s, "
                f"clone #{vms} {last['s']:.3f} s (disk part {last['disk_s']:.3f} s)")

        await asyncio.to_thread(read_through, source)
        # The raw cp runs next to the seed, before it in one repetition and after it in the
        # next; the old and the new path take turns to go first every two repetitions.
        parts = [new, old] if rep // 2 % 2 == 0 else [old, new]
        for part in parts:
            await part()
    await bench.driver.destroy_vm(vm_ref)

    copy_back = {m: stats([o["copy_back"][m] for o in olds]) for m in COPY_BACK}
    chosen = min(copy_back, key=lambda m: float(copy_back[m]["s"]["median"]))

    def old_first(o: dict[str, Any]) -> Sample:
        parts = [o["export"], o["copy_back"][chosen], o["overlays"][0]]
        return {"s": sum(p["s"] for p in parts), "bytes": sum(p["bytes"] for p in parts)}

    def new_first(n: dict[str, Any]) -> Sample:
        seed, clone = n["seed"], n["clones"][0]
        return {"s": seed["s"] + clone["disk_s"], "with_power_on_s": seed["s"] + clone["s"],
                "bytes": seed["bytes"] + clone["bytes"]}

    old_nth = [o["overlays"][-1] for o in olds]
    new_nth = [n["clones"][-1] for n in news]
    new_rest = [statistics.median(c["s"] for c in n["clones"][1:]) for n in news]
    return {
        "size_bytes": size,
        "source_allocated_bytes": source_allocated,
        "raw_cp": stats(cps),
        "old": {"export": stats([o["export"] for o in olds]), "copy_back": copy_back,
                "copy_back_used": chosen,
                "overlay_first": stats([o["overlays"][0] for o in olds]),
                "overlay_nth": stats(old_nth),
                "first_vm": stats([old_first(o) for o in olds]), "nth_vm": stats(old_nth)},
        "new": {"seed": stats([n["seed"] for n in news]),
                "clone_first": stats([n["clones"][0] for n in news]),
                "clone_nth": stats(new_nth),
                "clone_2_to_n_median_s": summary(new_rest),
                "first_vm": stats([new_first(n) for n in news]), "nth_vm": stats(new_nth)},
        "seed_over_cp": paired_median([n["seed"]["s"] for n in news], [c["s"] for c in cps]),
        # Other work on the machine only ever adds time: the ratio of the fastest of each.
        "seed_over_cp_of_minimums": min(n["seed"]["s"] for n in news)
        / min(c["s"] for c in cps),
        "seed_call_over_cp_call": paired_median([n["seed"]["call_s"] for n in news],
                                                [c["call_s"] for c in cps]),
        "first_vm_old_over_new": {
            "s": paired_median([old_first(o)["s"] for o in olds],
                               [new_first(n)["s"] for n in news]),
            "bytes": paired_median([old_first(o)["bytes"] for o in olds],
                                   [new_first(n)["bytes"] for n in news])},
        "checked_identical": True,
    }


def tool_versions() -> dict[str, str]:
    def first_line(*argv: str) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        return (done.stdout.splitlines() or [""])[0].strip()

    return {"qemu_img": first_line("qemu-img", "--version"), "cp": first_line("cp", "--version")}


@contextmanager
def work_dir(parent: Path | None) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dataplane-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    # The driver turns libvirt's errors into its own; libvirt's default handler would also
    # print the ones it expects (a name looked up before it is used).
    libvirt.registerErrorHandler(lambda _ctx, _error: None, None)
    load_before = os.getloadavg()
    with work_dir(args.work_dir) as work:
        need = 4 * max(args.sizes) + GIB
        free = shutil.disk_usage(work).free
        if free < need:
            raise SystemExit(f"{human_bytes(free)} free where the disks go; the largest size "
                             f"needs about {human_bytes(need)} (--work-dir elsewhere?)")
        filesystem = (await asyncio.to_thread(
            subprocess.run, ["findmnt", "-n", "-o", "FSTYPE", "-T", str(work)],
            capture_output=True, text=True, check=False)).stdout.strip()
        sizes: dict[str, Any] = {}
        async with Bench(work, drop=not args.no_drop_caches) as bench:
            for size in args.sizes:
                sizes[size_label(size)] = await one_size(bench, size, args.vms, args.reps)
            dropped = bench.caches_dropped and not args.no_drop_caches
    small, large = size_label(min(args.sizes)), size_label(max(args.sizes))
    growth = {
        "sizes": [small, large],
        "call": sizes[large]["new"]["clone_nth"]["s"]["median"]
        / sizes[small]["new"]["clone_nth"]["s"]["median"],
        "disk": sizes[large]["new"]["clone_nth"]["disk_s"]["median"]
        / sizes[small]["new"]["clone_nth"]["disk_s"]["median"],
    }
    return {"vms": args.vms, "reps": args.reps, "caches_dropped": dropped,
            # Other work on the machine shares its disk and cores: the load around the run.
            "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
            "filesystem": filesystem, "tools": tool_versions(),
            "bytes_method": "growth of st_blocks of the files in the primary pool and the "
                            "secondary folder over each step",
            "sizes": sizes, "nth_growth": growth}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1G,4G",
                        help="disk sizes, comma-separated (M or G suffix)")
    parser.add_argument("--vms", type=int, default=10, help="VMs deployed per path (>= 2)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each path")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the pools go (default: the temporary folder); it needs "
                             "about 4x the largest size free")
    parser.add_argument("--no-drop-caches", action="store_true",
                        help="only sync before each step, keep the page cache")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    if args.vms < 2 or args.reps < 1:
        parser.error("--vms must be >= 2 and --reps >= 1")
    result = asyncio.run(run_all(args))
    path = write("dataplane", result, args.out)
    for label, row in result["sizes"].items():
        print(goal_line(f"seed / raw cp, {label}", row["seed_over_cp"],
                        f"<= {SEED_OVER_CP_GOAL}", row["seed_over_cp"] <= SEED_OVER_CP_GOAL))
        old, new = row["old"], row["new"]
        print(f"{label}: first VM old {old['first_vm']['s']['median']:.2f} s "
              f"{human_bytes(old['first_vm']['bytes']['median'])}, new "
              f"{new['first_vm']['s']['median']:.2f} s "
              f"{human_bytes(new['first_vm']['bytes']['median'])}; VM #{result['vms']} old "
              f"{old['nth_vm']['s']['median']:.3f} s, new {new['nth_vm']['s']['median']:.3f} s "
              f"(disk part {new['nth_vm']['disk_s']['median']:.3f} s)")
    growth = result["nth_growth"]
    print(goal_line(f"VM #{result['vms']} deploy {growth['sizes'][1]} / {growth['sizes'][0]}",
                    growth["call"], f"<= {NTH_GROWTH_GOAL}", growth["call"] <= NTH_GROWTH_GOAL))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
