"""The README's quick start, run as a newcomer runs it: its shell block, word for word but
for the endpoint, the keys and the state folder of this test's stack, with `cs` and `jq`,
deploys a VM from the KVM demo VM's snapshot, and `snapdeploy console` shows it booted."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.stack
KVM = True  # the quick start deploys in the KVM zone

ROOT = Path(__file__).resolve().parents[2]
READY = "snapdeploy-guest: ready"


def quick_start_block() -> list[str]:
    """The lines of the README's shell block that deploys from the demo snapshot."""
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(),
                                   re.S)
    block = next(b for b in blocks if "deployVirtualMachine" in b and "kvm-demo" in b)
    return block.strip().splitlines()


def test_the_readme_quick_start_deploys_a_vm_that_boots(stack: dict[str, Any]) -> None:
    lines = quick_start_block()
    # The stack's own endpoint and keys stand in for the placeholders the README shows.
    assert lines[0] == "export CLOUDSTACK_ENDPOINT=http://127.0.0.1:8080/client/api"
    assert lines[1] == "export CLOUDSTACK_KEY=<admin API key> CLOUDSTACK_SECRET=<admin secret key>"
    *deploy, console = lines[2:]
    assert console.startswith(".venv/bin/snapdeploy console $NEW")
    script = "\n".join([
        "set -euo pipefail", *deploy,
        'echo "deployed=$NEW"',
    ])
    env = {**os.environ, "CLOUDSTACK_ENDPOINT": stack["api_url"],
           "CLOUDSTACK_KEY": stack["admin_api_key"],
           "CLOUDSTACK_SECRET": stack["admin_secret_key"]}
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "DC0 VMware" in done.stdout and "KVM0 KVM" in done.stdout, done.stdout
    name = done.stdout.strip().splitlines()[-1].removeprefix("deployed=")
    assert re.fullmatch(r"i-[0-9a-f]{4}-[0-9a-f]{8}-VM", name), done.stdout

    # The README's last line, as a user runs it a moment later (with this stack's folder).
    command = console.split("#")[0].replace("$NEW", name).split()
    command[2:2] = ["--state-dir", stack["state_dir"]]
    deadline = time.monotonic() + 120
    printed = ""
    while READY not in printed and time.monotonic() < deadline:
        printed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                 timeout=30).stdout
        time.sleep(1)
    assert READY in printed, printed[-2000:]
