"""The data-plane benchmark, once at a tiny size on a real private libvirt daemon: every figure
the report needs is there, and seeding wrote fewer bytes for the first VM than the old
path's export and copy back. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.report import render

ROOT = Path(__file__).parent.parent.parent
MIB = 2**20
SIZES = {"16MiB": 16 * MIB, "32MiB": 32 * MIB}


def test_the_dataplane_benchmark_runs_small_and_its_report_renders(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "bench.dataplane", "--sizes", "16M,32M", "--vms", "2",
                    "--reps", "1", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, timeout=120, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((tmp_path / "dataplane.json").read_text())
    assert result["vms"] == 2 and result["reps"] == 1
    assert result["caches_dropped"] in (True, False)
    assert set(result["sizes"]) == set(SIZES)
    for label, row in result["sizes"].items():
        size = SIZES[label]
        assert row["size_bytes"] == size
        assert row["source_allocated_bytes"] >= size  # filled, not sparse
        old, new = row["old"], row["new"]
        assert set(old["copy_back"]) == {"cp", "cp --sparse=always", "qemu-img convert"}
        assert old["copy_back_used"] in old["copy_back"]
        for path in (old, new):
            for vm in ("first_vm", "nth_vm"):
                assert path[vm]["s"]["n"] == 1 and path[vm]["s"]["median"] > 0
                assert path[vm]["bytes"]["median"] > 0
        for step in ("clone_first", "clone_nth"):
            clone = new[step]
            assert 0 < clone["disk_s"]["median"] < clone["s"]["median"]
            assert clone["power_on_s"]["median"] > 0
        # Both paths write the disk's data for the first VM; the old path writes it twice.
        assert new["seed"]["bytes"]["median"] >= size
        assert new["first_vm"]["bytes"]["median"] < old["first_vm"]["bytes"]["median"]
        assert old["first_vm"]["bytes"]["median"] >= 2 * size
        # VM n is an overlay on either path: far less than the disk.
        assert old["nth_vm"]["bytes"]["median"] < size / 8
        assert new["nth_vm"]["bytes"]["median"] < size / 8
        assert row["raw_cp"]["bytes"]["median"] >= size
        assert row["seed_over_cp"] > 0 and row["first_vm_old_over_new"]["bytes"] > 1.5
    assert result["nth_growth"]["sizes"] == ["16MiB", "32MiB"]
    assert result["nth_growth"]["call"] > 0 and result["nth_growth"]["disk"] > 0

    text = render(tmp_path, tmp_path / "BENCHMARKS.md")
    assert "## Data plane on KVM" in text and "| 32 MiB | first VM, bytes written |" in text
