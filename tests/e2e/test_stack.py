"""`snapdeploy up` / `down` and the running stack, through its public doors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import libvirt
import nats
import pytest
from cs import CloudStack, CloudStackApiException
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from proto import decode_envelope
from services.gateway.auth import sign
from shared.drivers.vmware import VSphere
from shared.stack._libvirt import guest_pids
from shared.stack.launcher import alive, is_recorded_process, read_stack
from tests.e2e.conftest import SNAPDEPLOY, pids_of, processes_of
from tests.e2e.helpers import compose_config

pytestmark = pytest.mark.stack
KVM = True  # the stack runs its KVM zone too


def client(stack: dict[str, Any], secret: str | None = None) -> CloudStack:
    return CloudStack(endpoint=stack["api_url"], key=stack["admin_api_key"],
                      secret=secret or stack["admin_secret_key"])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_stack_file_names_everything_a_client_needs(stack: dict[str, Any]) -> None:
    for key in ("gateway_url", "nats_url", "database_url", "vcenter_url", "vcenter_user",
                "vcenter_password", "admin_api_key", "admin_secret_key"):
        assert stack[key], key
    assert set(stack["services"]) == {"relay", "projector", "planner", "seeder", "cloner",
                                      "volume", "gateway"}
    for name, service in stack["services"].items():
        assert healthy(service["health_url"]), name
    # The services reach the stack's own PostgreSQL through its Unix-domain socket.
    assert "host=" in urllib.parse.urlsplit(stack["database_url"]).query
    with urllib.request.urlopen(stack["gateway_url"] + "/metrics", timeout=5) as response:
        assert b"snapdeploy_http_requests_total" in response.read()


def test_gateway_answers_cs_and_refuses_bad_signatures(stack: dict[str, Any]) -> None:
    listed = client(stack).listVirtualMachines()
    assert listed["count"] == len(listed["virtualmachine"])
    vmware = [v for v in listed["virtualmachine"] if v["hypervisor"] == "VMware"]
    assert len(vmware) == 4  # vcsim's VMs, imported
    with pytest.raises(CloudStackApiException) as refused:
        client(stack, secret="not-the-secret").listVirtualMachines()
    assert refused.value.error["errorcode"] == 401
    with pytest.raises(CloudStackApiException) as unknown:
        client(stack).noSuchCommand()
    assert unknown.value.error["errorcode"] == 432
    assert "noSuchCommand" in unknown.value.error["errortext"]


def test_clients_can_discover_the_api(stack: dict[str, Any]) -> None:
    """What CloudMonkey's `sync` and other clients ask first."""
    apis = {a["name"]: a for a in client(stack).listApis()["api"]}
    assert apis["deployVirtualMachine"]["isasync"] is True
    assert apis["listVirtualMachines"]["isasync"] is False
    assert {"prepareTemplate", "createVolume", "listApis", "listCapabilities"} <= set(apis)
    assert [a["name"] for a in client(stack).listApis(name="listzones")["api"]] == ["listZones"]
    capability = client(stack).listCapabilities()["capability"]
    assert capability["cloudstackversion"].count(".") == 2


def test_expired_v3_request_is_refused(stack: dict[str, Any]) -> None:
    params = [("command", "listVirtualMachines"), ("response", "json"),
              ("apiKey", stack["admin_api_key"]), ("signatureVersion", "3"),
              ("expires", "2020-01-01T00:00:00+0000")]
    params.append(("signature", sign(params, stack["admin_secret_key"])))
    url = stack["api_url"] + "?" + "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in params)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    body = json.loads(refused.value.read())
    assert refused.value.code == 401
    assert "expired" in body["listvirtualmachinesresponse"]["errortext"]


async def test_api_changes_reach_nats_the_http_audit_stream_and_the_read_models(
    stack: dict[str, Any]
) -> None:
    name = f"Tiny-{uuid.uuid4().hex[:6]}"
    got_nats: list[tuple[str, bytes]] = []
    nc = await nats.connect(stack["nats_url"], user=stack["nats_user"],
                            password=stack["nats_password"])

    async def on_event(msg: Msg) -> None:
        got_nats.append((msg.subject, msg.data))

    sub = await nc.subscribe("snapdeploy.events.>", cb=on_event)
    params = [("apikey", stack["admin_api_key"]), ("after", "0")]
    params.append(("signature", sign(params, stack["admin_secret_key"])))
    sse: list[str] = []

    async def follow() -> None:
        async with aiohttp.ClientSession() as http, http.get(
            stack["audit_stream_url"], params=params
        ) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for line in response.content:
                sse.append(line.decode())
                if name in sse[-1]:
                    return

    following = asyncio.create_task(follow())
    try:
        created = await asyncio.to_thread(
            client(stack).createServiceOffering, name=name, displaytext="tiny", cpunumber=1,
            cpuspeed=100, memory=128)
        await asyncio.wait_for(following, 20)
        for _ in range(100):
            if any(name.encode() in data for _, data in got_nats):
                break
            await asyncio.sleep(0.1)
    finally:
        await sub.unsubscribe()
        await nc.close()

    offering_id = created["serviceoffering"]["id"]
    subjects = [subject for subject, data in got_nats if name.encode() in data]
    assert subjects == ["snapdeploy.events.offering.ServiceOfferingCreated"]
    envelope = decode_envelope(next(d for s, d in got_nats if name.encode() in d))
    assert envelope.metadata.actor == "admin/admin"
    events = [line for line in sse if line.startswith("event:")]
    assert "event: ServiceOfferingCreated\n" in events
    assert any(line.startswith("id: ") for line in sse)
    listed = await asyncio.to_thread(client(stack).listServiceOfferings, id=offering_id)
    assert listed["serviceoffering"][0]["name"] == name


async def _connect_when_allowed(stack: dict[str, Any], user: str, password: str,
                                errors: list[str]) -> NATS:
    """Connect as ``user`` once the gateway has written its identity and nats-server has
    reloaded (a few seconds after registerUserKeys at most)."""

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    deadline = time.monotonic() + 30
    while True:
        try:
            return await nats.connect(stack["nats_url"], user=user, password=password,
                                      inbox_prefix=f"_INBOX.{user}", error_cb=on_error,
                                      allow_reconnect=False, max_reconnect_attempts=0)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_each_api_key_is_a_nats_identity_of_its_own_account(
    stack: dict[str, Any]
) -> None:
    """A user's key pair registered through the API becomes a NATS user: it may not publish
    on the event stream nor read the admin account's audit subjects; the admin's own
    identity reads its account's audit events, which the relay announces."""
    admin = client(stack)
    name = f"nats-{uuid.uuid4().hex[:6]}"
    created = await asyncio.to_thread(
        admin.createAccount, username=name, password="x" * 12, email=f"{name}@example.com",
        firstname="N", lastname="A", accounttype="0")
    keys = (await asyncio.to_thread(admin.registerUserKeys,
                                    id=created["account"]["user"][0]["id"]))["userkeys"]
    user_errors: list[str] = []
    user = await _connect_when_allowed(stack, keys["apikey"], keys["secretkey"], user_errors)
    admin_errors: list[str] = []
    admin_nc = await _connect_when_allowed(stack, stack["admin_api_key"],
                                           stack["admin_secret_key"], admin_errors)
    got: list[str] = []
    user_got: list[str] = []

    async def on_audit(msg: Msg) -> None:
        got.append(msg.subject)

    async def on_user_audit(msg: Msg) -> None:
        user_got.append(msg.subject)

    try:
        await admin_nc.subscribe("snapdeploy.audit.>", cb=on_audit)
        await admin_nc.flush()
        await user.publish("snapdeploy.events.vm.VmPowerRequested", b"{}")
        await user.subscribe("snapdeploy.audit.>", cb=on_user_audit)
        await user.subscribe("snapdeploy.events.>", cb=on_user_audit)
        offering = f"Audit-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(admin.createServiceOffering, name=offering, displaytext="a",
                                cpunumber=1, cpuspeed=100, memory=128)
        for _ in range(100):
            if any(s.endswith(".ServiceOfferingCreated") for s in got):
                break
            with contextlib.suppress(Exception):
                await user.flush(timeout=1)
            await asyncio.sleep(0.1)
    finally:
        await user.close()
        await admin_nc.close()
    refusals = [e.lower() for e in user_errors if "permissions violation" in e.lower()]
    assert any('publish to "snapdeploy.events.vm.vmpowerrequested"' in e for e in refusals)
    assert any('subscription to "snapdeploy.audit.>"' in e for e in refusals)
    assert any('subscription to "snapdeploy.events.>"' in e for e in refusals)
    assert user_got == []
    assert any(s.startswith("snapdeploy.audit.") and s.endswith(".ServiceOfferingCreated")
               for s in got), got
    assert admin_errors == []


def test_vcenter_of_the_stack_answers_pyvmomi(stack: dict[str, Any]) -> None:
    async def look() -> list[str]:
        session = await VSphere.connect(stack["vcenter_url"], stack["vcenter_user"],
                                        stack["vcenter_password"], verify_tls=False)
        try:
            return await session.datacenters()
        finally:
            await session.close()

    assert asyncio.run(look()) == ["DC0"]


def test_a_killed_service_is_restarted_by_the_launcher(stack: dict[str, Any]) -> None:
    stack_file = Path(stack["state_dir"]) / "stack.json"
    before = stack["services"]["planner"]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = json.loads(stack_file.read_text())["services"]["planner"]
        if now["pid"] != before and healthy(now["health_url"]):
            return
        time.sleep(0.2)
    raise AssertionError("planner was not restarted within 30s")


def services_settings(info: dict[str, Any], name: str) -> dict[str, str]:
    """The SNAPDEPLOY_* environment a running service was started with."""
    environ = Path(f"/proc/{info['services'][name]['pid']}/environ").read_bytes()
    pairs = (entry.decode().partition("=") for entry in environ.split(b"\0") if entry)
    return {key: value for key, _, value in pairs if key.startswith("SNAPDEPLOY_")}


def demo_vm(info: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """The demo VM on the stack's private libvirtd: uuid, running, its snapshots."""
    conn = libvirt.open(info["kvm"]["uri"])
    try:
        domain = conn.lookupByName(info["kvm"]["demo_vm"])
        return (domain.UUIDString(), bool(domain.isActive()),
                [s.getName() for s in domain.listAllSnapshots(0)])
    finally:
        conn.close()


def wait_for_console(state: Path, vm: str, text: str, timeout: float = 120) -> str:
    """What `snapdeploy console` prints for ``vm`` once it holds ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run([*SNAPDEPLOY, "console", "--state-dir", str(state), vm],
                               capture_output=True, text=True, timeout=60)
        if text in shown.stdout or time.monotonic() > deadline:
            assert text in shown.stdout, (shown.stdout[-2000:], shown.stderr)
            return shown.stdout
        time.sleep(0.5)


def test_the_kvm_zone_runs_on_a_private_libvirtd_with_a_booting_demo_vm(
    stack: dict[str, Any]
) -> None:
    state = Path(stack["state_dir"])
    kvm = stack["kvm"]
    assert (kvm["zone"], kvm["host"], kvm["demo_vm"], kvm["demo_snapshot"]) == (
        "KVM0", "kvm0", "kvm-demo", "fresh")
    daemon = stack["servers"]["libvirtd"]
    assert is_recorded_process(daemon) and daemon["cmdline"][0] == "libvirtd"
    assert str(state / "libvirt") in " ".join(daemon["cmdline"])
    assert daemon["log"] == str(state / "logs" / "libvirtd.log")
    # The services learn the zone: its one host, on the daemon's own socket.
    assert kvm["uri"] == f"qemu:///system?socket={state}/libvirt/sock/libvirt-sock"
    assert stack["kvm_zones"] == f"KVM0: kvm0={kvm['uri']}"
    current = json.loads((state / "stack.json").read_text())  # pids of restarted services
    for name in current["services"]:
        assert services_settings(current, name)["SNAPDEPLOY_KVM_ZONES"] == stack["kvm_zones"]
    uuid_, running, snapshots = demo_vm(stack)
    assert running and snapshots == ["fresh"]
    assert (state / "libvirt" / "demo-vm").read_text().strip() == uuid_
    conn = libvirt.open(kvm["uri"])
    try:
        pool = conn.storagePoolLookupByName("pool0")
        assert pool.isActive() and pool.autostart()
        assert f"<path>{state}/pools/pool0</path>" in pool.XMLDesc(0)
        assert all(conn.networkLookupByName(n).isActive() for n in ("guest0", "guest1"))
    finally:
        conn.close()
    assert len(guest_pids(state / "libvirt")) == 1
    # The demo guest really boots: its serial console, as a user reads it.
    printed = wait_for_console(state, "kvm-demo", "snapdeploy-guest: ready")
    assert "snapdeploy-guest: up" in printed
    assert f"{kvm['console_logs']}/<VM>-console.log" in (
        state / "logs" / "launcher.log").read_text()
    unknown = subprocess.run([*SNAPDEPLOY, "console", "--state-dir", str(state), "no-such-vm"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "kvm-demo" in unknown.stderr


def test_a_killed_libvirtd_is_restarted_and_keeps_its_guests(stack: dict[str, Any]) -> None:
    state = Path(stack["state_dir"])
    stack_file = state / "stack.json"
    before = json.loads(stack_file.read_text())["servers"]["libvirtd"]
    [guest] = guest_pids(state / "libvirt")
    uuid_before = demo_vm(stack)[0]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = json.loads(stack_file.read_text())["servers"]["libvirtd"]
        if now["pid"] != before["pid"] and is_recorded_process(now):
            break
        assert time.monotonic() < deadline, "libvirtd was not restarted within 60s"
        time.sleep(0.2)
    # The new daemon joined the guest's namespaces and took it up, still running.
    assert demo_vm(stack) == (uuid_before, True, ["fresh"])
    assert guest_pids(state / "libvirt") == [guest]
    log = (state / "logs" / "launcher.log").read_text()
    assert "libvirtd exited with code -9; restarting it" in log
    assert "libvirtd joined the KVM guests still running" in log


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    # As `make run` does it: a relative state folder.
    launcher = subprocess.Popen([*SNAPDEPLOY, "up", "--state-dir", ".state"], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stack_file = tmp_path / ".state" / "stack.json"
    deadline = time.monotonic() + 180
    while not stack_file.exists():
        assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
        assert time.monotonic() < deadline, "the stack did not come up"
        time.sleep(0.2)
    info = json.loads(stack_file.read_text())
    assert healthy(info["gateway_url"] + "/healthz")
    launcher.send_signal(signal.SIGINT)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, output
    assert "snapdeploy is up." in output and info["admin_api_key"] in output
    assert "made the demo VM kvm-demo with its VM snapshot 'fresh'" in output
    left = [pid for pid in pids_of(info) if alive(pid)]
    assert left == [], f"left running after Ctrl-C: {left}"
    assert not stack_file.exists()
    assert processes_of(tmp_path / ".state") == []  # no libvirtd, no QEMU guest


def test_a_second_up_on_the_same_state_dir_reuses_the_demo_vm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = [*SNAPDEPLOY, "up", "--detach", "--state-dir", str(state)]
    down = [*SNAPDEPLOY, "down", "--state-dir", str(state)]
    seen = []
    try:
        for _ in range(2):
            started = subprocess.run(up, capture_output=True, text=True, timeout=240)
            assert started.returncode == 0, started.stderr
            info = read_stack(state)
            seen.append(demo_vm(info))
            assert healthy(info["gateway_url"] + "/healthz")
            stopped = subprocess.run(down, capture_output=True, text=True, timeout=120)
            assert stopped.returncode == 0, stopped.stderr
            assert processes_of(state) == []
    finally:
        subprocess.run(down, capture_output=True, timeout=120)
    # The same VM, booted again with its daemon, with the one snapshot made the first time.
    assert seen[0] == seen[1] and seen[0][1:] == (True, ["fresh"])
    log = (state / "logs" / "launcher.log").read_text()
    assert log.count("made the demo VM kvm-demo") == 1
    assert log.count("found the demo VM kvm-demo") == 1


def test_a_second_up_on_a_running_state_dir_is_refused(stack: dict[str, Any]) -> None:
    """A second launcher on the same folder would start a second nats-server on the same
    JetStream data and, stopping, delete the running stack's stack.json."""
    state = Path(stack["state_dir"])
    stack_file = state / "stack.json"
    before = stack_file.read_text()
    nats_dir = str(state / "nats")

    def nats_servers() -> list[str]:
        listed = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True,
                                check=True).stdout.splitlines()
        return [line for line in listed if "nats-server" in line and nats_dir in line]

    assert len(nats_servers()) == 1
    for detach in ([], ["--detach"]):
        second = subprocess.run([*SNAPDEPLOY, "up", *detach, "--state-dir", str(state)],
                                capture_output=True, text=True, timeout=60)
        if detach:  # as before: says so, and shows the running stack
            assert second.returncode == 0, second.stderr
            assert "already running" in second.stderr
        else:
            assert second.returncode == 1, (second.stdout, second.stderr)
            assert "already running" in second.stderr
            assert f"snapdeploy down --state-dir {state}" in second.stderr
        assert stack_file.read_text() == before
        assert len(nats_servers()) == 1
    for name, service in stack["services"].items():
        assert healthy(service["health_url"]), name
    assert client(stack).listZones()["count"] >= 1


def test_down_signals_only_processes_it_started(stack: dict[str, Any], tmp_path: Path) -> None:
    """A stack.json whose pids point at unrelated processes (reused pids, or tampering):
    `down` leaves them alone. The recorded start time and command line must match too."""
    info = json.loads((Path(stack["state_dir"]) / "stack.json").read_text())
    bystanders = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    try:
        launcher, planner, nats_server = (p.pid for p in bystanders)
        # Every pid is replaced (so this copy cannot reach the real stack); the launcher's
        # and planner's records keep their start times and command lines, the server's has
        # the bystander's own command line but the server's start time.
        info["launcher_pid"] = launcher
        info["launcher"]["pid"] = launcher
        for group in ("services", "servers"):
            for record in info[group].values():
                record["pid"] = planner
        info["services"]["planner"]["pid"] = planner
        info["servers"]["nats-server"].update(pid=nats_server, cmdline=["sleep", "300"])
        (tmp_path / "stack.json").write_text(json.dumps(info))
        stopped = subprocess.run([*SNAPDEPLOY, "down", "--state-dir", str(tmp_path)],
                                 capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert "leaving it alone" in stopped.stderr
        assert [p.poll() for p in bystanders] == [None, None, None]
        assert all(alive(pid) for pid in (launcher, planner, nats_server))
    finally:
        for process in bystanders:
            process.kill()
            process.wait()
    # The real stack was not touched either.
    for name, service in stack["services"].items():
        assert healthy(service["health_url"]), name


@pytest.mark.parametrize("argv", [
    [*SNAPDEPLOY, "--help"],
    [*SNAPDEPLOY, "up", "--help"],
    [*SNAPDEPLOY, "down", "--help"],
    [*SNAPDEPLOY, "console", "--help"],
    [*SNAPDEPLOY, "projections", "--help"],
    [*SNAPDEPLOY, "projections", "rebuild", "--help"],
    [*SNAPDEPLOY, "db", "--help"],
    [*SNAPDEPLOY, "db", "migrate", "--help"],
    [*SNAPDEPLOY, "db", "grants", "--help"],
    [*SNAPDEPLOY, "nats-auth", "--help"],
    *([sys.executable, "-m", f"services.{name}", "--help"]
      for name in ("gateway", "planner", "seeder", "cloner", "volume", "relay", "projector")),
])
def test_every_command_explains_itself(argv: list[str]) -> None:
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage:")
    assert len(shown.stdout.splitlines()) > 3


def test_docker_compose_file_is_valid() -> None:
    shown = compose_config()
    for service in ("nats", "postgres", "migrate", "vcsim", "relay", "projector", "planner",
                    "seeder", "cloner", "volume", "gateway"):
        assert f"\n  {service}:\n" in shown
