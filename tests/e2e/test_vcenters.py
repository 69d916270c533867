"""Two vCenters in one stack: two vcsim servers with identical inventories (the same
datacenter DC0, the same names and managed object ids), the first given as
SNAPDEPLOY_VCENTER_URL, the second in SNAPDEPLOY_VCENTERS. syncInventory imports both, each
a zone of its own, and a deploy from a VM snapshot of either lands in that one's vCenter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cs import CloudStack, CloudStackApiException
from pyVmomi import vim

from proto.streams import stable_id
from shared.stack._servers import Server, free_port, start_vcsim
from shared.stack.launcher import alive, read_stack
from tests.e2e.conftest import SNAPDEPLOY, VCENTER_TIMEOUT_S, pids_of, processes_of
from tests.e2e.helpers import offering, snapshot, wait_for
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack

SECOND = "second"  # the further vCenter's name in SNAPDEPLOY_VCENTERS
SOURCE = "DC0_H0_VM0"  # a VM both vCenters have


@pytest.fixture(scope="module")
def vcenters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two vcsim servers started by the test, not by `up`."""
    started: list[Server] = []
    try:
        for i in range(2):
            started.append(start_vcsim(tmp_path_factory.mktemp(f"vcsim{i}"), free_port(),
                                       f"admin{i}", f"pass;{i}@"))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          vcenters: list[Server]) -> Iterator[dict[str, Any]]:
    first, second = vcenters
    host = second.url.split("://", 1)[1]
    state = tmp_path_factory.mktemp("stack")
    env = {**os.environ, "SNAPDEPLOY_KVM_ZONES": "",
           "SNAPDEPLOY_VCENTER_TIMEOUT": str(VCENTER_TIMEOUT_S),
           "SNAPDEPLOY_VCENTER_URL": first.url, "SNAPDEPLOY_VCENTER_USER": first.user,
           "SNAPDEPLOY_VCENTER_PASSWORD": first.password,
           "SNAPDEPLOY_VCENTER_VERIFY_TLS": "false",
           "SNAPDEPLOY_VCENTERS": f"{SECOND}=https://{quote(second.user, safe='')}:"
                                  f"{quote(second.password, safe='')}@{host}"
                                  "?verify_tls=false"}
    subprocess.run([*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state)], check=True,
                   timeout=240, env=env)
    info = read_stack(state)
    yield info
    current = json.loads((state / "stack.json").read_text())
    subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(state)], check=True, timeout=120)
    left = [pid for pid in pids_of(current) if alive(pid)]
    assert left == [], f"processes left running after `snapdeploy down`: {left}"
    assert processes_of(Path(state)) == []


@pytest.fixture(scope="module")
def harnesses(vcenters: list[Server]) -> list[Vcsim]:
    return [Vcsim(s.url, s.user, s.password) for s in vcenters]


def _listed(answer: dict[str, Any], key: str, count: int) -> list[dict[str, Any]] | None:
    """The items of a list answer once there are ``count`` of them."""
    items: list[dict[str, Any]] = answer.get(key, [])
    return items if len(items) == count else None


def test_each_service_holds_a_session_with_each_vcenter(stack: dict[str, Any]) -> None:
    planner = next(s for s in stack["services"].values() if s["service"] == "planner")
    with urllib.request.urlopen(planner["health_url"], timeout=5) as answer:
        checks = json.load(answer)["checks"]
    assert checks["vcenter"] == "ok" and checks[f"vcenter {SECOND}"] == "ok"


def test_each_vcenter_is_synced_and_deploys_from_its_snapshots_land_in_it(
    cloud: CloudStack, stack: dict[str, Any], harnesses: list[Vcsim],
) -> None:
    assert cloud.syncInventory()["success"] is True
    in_vcsim = sorted(p["name"] for _, p in harnesses[0].props(vim.HostSystem, ["name"]))
    # The API reads what the sync recorded once the read models have it.
    hosts = wait_for(lambda: _listed(cloud.listHosts(), "host", 2 * len(in_vcsim)),
                     "both vCenters' hosts listed")
    zones = cloud.listZones()["zone"]
    assert sorted(z["name"] for z in zones) == ["DC0", "DC0"]  # one per vCenter
    zone_ids = [z["id"] for z in zones]
    for zone in zone_ids:  # each zone has its vCenter's hosts, under ids of its own
        assert sorted(h["name"] for h in hosts if h["zoneid"] == zone) == in_vcsim
    assert len({h["id"] for h in hosts}) == 2 * len(in_vcsim)

    sources = wait_for(lambda: _listed(cloud.listVirtualMachines(name=SOURCE),
                                       "virtualmachine", 2), f"{SOURCE} of each vCenter listed")
    assert sorted(v["zoneid"] for v in sources) == sorted(zone_ids)
    small = offering(cloud, "Small Instance")
    clones = {}
    for source in sources:
        snap = snapshot(cloud, source["id"], f"of-{source['zoneid'][:8]}")
        vm = cloud.deployVirtualMachine(vmsnapshotid=snap, name=f"from-{source['zoneid'][:8]}",
                                        serviceofferingid=small)["virtualmachine"]
        assert vm["state"] == "Running" and vm["zoneid"] == source["zoneid"]
        clones[source["zoneid"]] = vm["instancename"]

    # Which zone is which vCenter's: the stack's first vCenter keeps the ids it always had.
    names = [h.vm_names() for h in harnesses]
    made_in = {zone: [i for i, known in enumerate(names) if name in known]
               for zone, name in clones.items()}
    assert sorted(made_in.values()) == [[0], [1]], made_in
    for zone, name in clones.items():
        [here] = made_in[zone]
        assert harnesses[here].count_named(name) == 1
        assert name not in names[1 - here]
    [(datacenter, _)] = harnesses[0].props(vim.Datacenter, ["name"])
    first_zone = next(zone for zone, at in made_in.items() if at == [0])
    assert first_zone == stable_id("zone", datacenter._moId)


def test_a_vcenter_that_does_not_answer_leaves_its_zone_and_the_other_is_synced(
    cloud: CloudStack, stack: dict[str, Any], vcenters: list[Server],
) -> None:
    # The second vcsim stays stopped for the next test.
    before = {h["id"] for h in cloud.listHosts()["host"]}
    vcenters[1].stop()
    with pytest.raises(CloudStackApiException) as failed:
        cloud.syncInventory()
    text = str(failed.value.error)
    assert "vCenter second did not answer" in text and "the other hypervisors were synced" \
        in text, text
    # Nothing of the silent vCenter was taken for gone: both zones and every host stay.
    assert sorted(z["name"] for z in cloud.listZones()["zone"]) == ["DC0", "DC0"]
    assert {h["id"] for h in cloud.listHosts()["host"]} == before


def _checks(stack_dir: Path, service: str) -> tuple[int, dict[str, str]] | None:
    """The pid of the service's process now, and its /healthz checks (None: not answering)."""
    info = json.loads((stack_dir / "stack.json").read_text())["services"][service]
    try:
        with urllib.request.urlopen(info["health_url"], timeout=5) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as degraded:  # 503: a check fails
        body = json.load(degraded)
    except OSError:
        return None
    return int(info["pid"]), body["checks"]


def test_services_started_without_a_vcenter_serve_the_other_and_take_it_when_it_answers(
    cloud: CloudStack, stack: dict[str, Any], vcenters: list[Server], harnesses: list[Vcsim],
    tmp_path: Path,
) -> None:
    # After the test above: the second vcsim is stopped. The services that act on vCenter
    # are killed, and the launcher starts them again, without it.
    state = Path(stack["state_dir"])
    for service in ("planner", "cloner", "seeder"):
        before = json.loads((state / "stack.json").read_text())["services"][service]["pid"]
        os.kill(before, signal.SIGKILL)

        def restarted(service: str = service, before: int = before) -> dict[str, str] | None:
            now = _checks(state, service)
            return now[1] if now and now[0] != before and "vcenter" in now[1] \
                and now[1].get("started") == "ok" else None

        checks = wait_for(restarted, f"{service} started again", timeout=60)
        assert checks["vcenter"] == "ok", checks
        assert checks[f"vcenter {SECOND}"].startswith("unreachable"), checks

    # The first vCenter's zone is served meanwhile.
    small = offering(cloud, "Small Instance")
    sources = {v["zoneid"]: v for v in cloud.listVirtualMachines(name=SOURCE)["virtualmachine"]}
    [(datacenter, _)] = harnesses[0].props(vim.Datacenter, ["name"])
    first_zone = stable_id("zone", datacenter._moId)
    [second_zone] = [zone for zone in sources if zone != first_zone]
    snap = snapshot(cloud, sources[first_zone]["id"], "while-second-down")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                    name="while-second-down")["virtualmachine"]
    assert vm["state"] == "Running" and vm["zoneid"] == first_zone

    # The second vCenter answers again (a new vcsim at its address, same inventory): the
    # services open their sessions with it, and the planner syncs it by itself.
    old = vcenters[1]
    port = int(old.url.rsplit(":", 1)[1].split("/", 1)[0])
    vcenters[1] = start_vcsim(tmp_path, port, old.user, old.password)
    for service in ("planner", "cloner", "seeder"):
        wait_for(lambda service=service: (_checks(state, service) or (0, {}))[1].get(
            f"vcenter {SECOND}") == "ok", f"{service} connected to vCenter {SECOND}",
            timeout=60)
    planner_log = Path(json.loads((state / "stack.json").read_text())
                       ["services"]["planner"]["log"]).read_text()
    assert f"vcenter {SECOND} answers now" in planner_log
    again = cloud.listVirtualMachines(name=SOURCE, zoneid=second_zone)["virtualmachine"]
    snap = snapshot(cloud, again[0]["id"], "after-second-back")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                    name="after-second-back")["virtualmachine"]
    assert vm["state"] == "Running" and vm["zoneid"] == second_zone
    fresh = Vcsim(vcenters[1].url, vcenters[1].user, vcenters[1].password)
    assert fresh.count_named(vm["instancename"]) == 1
