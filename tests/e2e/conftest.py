"""A whole stack started with the product's own launcher, as a user starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cs import CloudStack

from shared.stack.launcher import alive, read_stack
from tests.e2e.helpers import kvm_zone
from tests.harness.vsphere import Vcsim

SNAPDEPLOY = [sys.executable, "-m", "shared.cli"]
VCENTER_TIMEOUT_S = 5


def pids_of(info: dict[str, Any]) -> list[int]:
    return [info["launcher_pid"]] + [p["pid"] for group in ("services", "servers")
                                     for p in info[group].values()]


def processes_of(state: Path) -> list[str]:
    """Every running process whose command line names the state folder: its servers, the
    private libvirtd and its QEMU guests (whose disks lie in the folder's pool)."""
    listed = subprocess.run(["ps", "-ww", "-eo", "pid,stat,args"], capture_output=True,
                            text=True, check=True).stdout.splitlines()[1:]
    return [line for line in listed if f"{state.resolve()}/" in line
            and line.split(None, 2)[1][0] != "Z"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The module's stack; a module's VCSIM_ARGS (e.g. "-dc 2") shape its vCenter. Its
    KVM zone (a private libvirtd with the demo VM) runs only for a module that sets
    ``KVM = True``: the others test vCenter's zones alone, and start faster."""
    state = tmp_path_factory.mktemp("stack")
    trace = state / "vcsim-trace.xml"
    vcsim_args = f"-trace-file {trace} {getattr(request.module, 'VCSIM_ARGS', '')}"
    # vCenter calls time out after a few seconds, so tests can make one hang past it.
    env = {**os.environ, "SNAPDEPLOY_VCSIM_ARGS": vcsim_args,
           "SNAPDEPLOY_VCENTER_TIMEOUT": str(VCENTER_TIMEOUT_S)}
    if not getattr(request.module, "KVM", False):
        env["SNAPDEPLOY_KVM_ZONES"] = ""  # given, and empty: no KVM zone
    subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state)], check=True,
                   timeout=240, env=env)
    info = read_stack(state)  # stack.json, with the generated credentials from secrets.json
    info["vcsim_trace"] = str(trace)
    yield info
    current = json.loads((state / "stack.json").read_text())
    subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(state)], check=True, timeout=120)
    left = [pid for pid in pids_of(current) if alive(pid)]
    assert left == [], f"processes left running after `snapdeploy down`: {left}"
    assert processes_of(state) == []


@pytest.fixture(scope="module")
def vcsim(stack: dict[str, Any]) -> Vcsim:
    return Vcsim(stack["vcenter_url"], stack["vcenter_user"], stack["vcenter_password"])


@pytest.fixture(scope="module")
def cloud(stack: dict[str, Any]) -> CloudStack:
    """The admin's cs client, waiting for async jobs like the cs command line does."""
    return CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                      secret=stack["admin_secret_key"], fetch_result=True, poll_interval=0.2,
                      job_timeout=120)


# The KVM zone of a module that runs one (``KVM = True``): stack.json's description of it,
# its pool's folder, a libvirt connection to its host, and an offering small enough for
# ten demo guests on two cores.
@pytest.fixture(scope="module")
def kvm(stack: dict[str, Any]) -> dict[str, Any]:
    return kvm_zone(stack)


@pytest.fixture(scope="module")
def pool_dir(kvm: dict[str, Any]) -> Path:
    return Path(kvm["pool_folder"])


@pytest.fixture(scope="module")
def conn(kvm: dict[str, Any]) -> Iterator[Any]:
    connection = libvirt.open(kvm["uri"])
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def tiny(cloud: CloudStack) -> str:
    return str(cloud.createServiceOffering(name="kvm-tiny", displaytext="1 CPU x 100 MHz, 256 MB",
                                           cpunumber=1, cpuspeed=100,
                                           memory=256)["serviceoffering"]["id"])
