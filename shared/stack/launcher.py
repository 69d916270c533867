"""``snapdeploy up`` / ``down``: the whole system on one machine, supervised.

``up`` starts the embedded servers that are not configured externally (nats-server with
JetStream, PostgreSQL, vcsim), then every service, waits until all report healthy, writes
``STATE_DIR/stack.json`` and supervises: a process that exits is restarted with backoff.
SIGINT or SIGTERM stops the services, then the servers. Children are also bound to the
launcher with a parent-death signal, so killing the launcher leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from shared import config
from shared.stack._servers import (
    Server,
    StartError,
    free_port,
    spawn,
    start_nats,
    start_postgres,
    start_vcsim,
    terminate,
)

SERVICES = ("relay", "projector", "planner", "seeder", "cloner", "volume", "gateway")
STACK_FILE = "stack.json"
READY_TIMEOUT_S = 120.0


def _secrets(state_dir: Path) -> dict[str, str]:
    """Credentials generated on the first start and reused after (PostgreSQL keeps its own)."""
    path = state_dir / "secrets.json"
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
        return saved
    values = {
        "nats_user": "snapdeploy",
        "nats_password": secrets.token_urlsafe(18),
        "postgres_password": secrets.token_urlsafe(18),
        "vcenter_user": "administrator@vsphere.local",
        "vcenter_password": secrets.token_urlsafe(12),
        "admin_api_key": secrets.token_urlsafe(32),
        "admin_secret_key": secrets.token_urlsafe(32),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2))
    return values


@dataclass
class Child:
    """A service process the launcher keeps running."""

    name: str
    health_port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.5

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"


@dataclass
class Stack:
    state_dir: Path
    gateway_listen: str | None = None
    servers: dict[str, Server] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    settings: config.Settings = field(default_factory=config.Settings)
    _server_retry: dict[str, float] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    # ---- start ----------------------------------------------------------------------

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        creds = _secrets(self.state_dir)
        given = config.given()
        settings = config.load()

        if "nats_url" not in given:
            self._progress("starting nats-server (JetStream)")
            nats = self._server(start_nats(self.state_dir, free_port(), creds["nats_user"],
                                           creds["nats_password"]))
            settings = replace(settings, nats_url=nats.url, nats_user=nats.user,
                               nats_password=nats.password)
        if "database_url" not in given:
            self._progress("starting PostgreSQL")
            pg = self._server(start_postgres(self.state_dir, free_port(),
                                             creds["postgres_password"]))
            settings = replace(settings, database_url=pg.url)
        if "vcenter_url" not in given:
            self._progress("starting vcsim (vCenter simulator)")
            vc = self._server(start_vcsim(self.state_dir, free_port(), creds["vcenter_user"],
                                          creds["vcenter_password"], _vcsim_args()))
            settings = replace(settings, vcenter_url=vc.url, vcenter_user=vc.user,
                               vcenter_password=vc.password, vcenter_verify_tls=False)
        listen = self.gateway_listen or (
            settings.gateway_listen if "gateway_listen" in given else f"127.0.0.1:{free_port()}"
        )
        if "admin_api_key" not in given:
            settings = replace(settings, admin_api_key=creds["admin_api_key"],
                               admin_secret_key=creds["admin_secret_key"])
        self.settings = replace(settings, gateway_listen=listen)

        for name in SERVICES:
            child = Child(name, free_port())
            self.children.append(child)
            self._progress(f"starting {name}")
            self._start_child(child)
        self._wait_healthy()
        self._write_stack_file()

    def _progress(self, text: str) -> None:
        print(f"snapdeploy: {text}", file=sys.stderr, flush=True)

    def _server(self, server: Server) -> Server:
        self.servers[server.name] = server
        return server

    def _start_child(self, child: Child) -> None:
        settings = replace(self.settings, health_listen=f"127.0.0.1:{child.health_port}")
        env = {**os.environ, **config.as_env(settings)}
        env.pop("DATABASE_URL", None)  # the child's SNAPDEPLOY_DATABASE_URL is the one to use
        child.process = spawn(child.name, [sys.executable, "-m", f"services.{child.name}"],
                              self.logs / f"{child.name}.log", env=env)
        child.started_at = time.monotonic()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = {c.name for c in self.children}
        while waiting:
            for child in self.children:
                if child.name not in waiting:
                    continue
                if child.process is not None and child.process.poll() is not None:
                    raise StartError(f"{child.name} exited with code {child.process.returncode} "
                                     f"while starting; see {self.logs / (child.name + '.log')}")
                if healthy(child.health_url):
                    waiting.discard(child.name)
            if time.monotonic() > deadline:
                raise StartError(f"not healthy after {READY_TIMEOUT_S:.0f}s: "
                                 f"{', '.join(sorted(waiting))}; see {self.logs}")
            time.sleep(0.2)

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "gateway_url": f"http://{s.gateway_listen}",
            "api_url": f"http://{s.gateway_listen}/client/api",
            "audit_stream_url": f"http://{s.gateway_listen}/client/events",
            "nats_url": s.nats_url,
            "nats_user": s.nats_user,
            "nats_password": s.nats_password,
            "database_url": s.database_url,
            "vcenter_url": s.vcenter_url,
            "vcenter_user": s.vcenter_user,
            "vcenter_password": s.vcenter_password,
            "admin_api_key": s.admin_api_key,
            "admin_secret_key": s.admin_secret_key,
            "launcher_pid": os.getpid(),
            "state_dir": str(self.state_dir.resolve()),
            "servers": {name: {"pid": srv.pid, "url": config.redact_url(srv.url),
                               "log": str(srv.log_path)} for name, srv in self.servers.items()},
            "services": {c.name: {"pid": c.process.pid if c.process else None,
                                  "health_url": c.health_url,
                                  "log": str(self.logs / f"{c.name}.log")}
                         for c in self.children},
        }

    def _write_stack_file(self) -> None:
        path = self.state_dir / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(self.describe(), indent=2))
        tmp.replace(path)

    # ---- supervise ------------------------------------------------------------------

    def supervise(self, should_stop: list[bool]) -> None:
        """Restart whatever exits, until ``should_stop[0]`` becomes true."""
        while not should_stop[0]:
            now = time.monotonic()
            changed = False
            for child in self.children:
                process = child.process
                if process is not None and process.poll() is not None:
                    uptime = now - child.started_at
                    if uptime > 60:
                        child.backoff = 0.5
                    self._progress(f"{child.name} exited with code {process.returncode} after "
                                   f"{uptime:.1f}s; restarting in {child.backoff:.1f}s")
                    child.process = None
                    child.next_start = now + child.backoff
                    child.backoff = min(15.0, child.backoff * 2)
                elif process is None and now >= child.next_start:
                    self._start_child(child)
                    child.restarts += 1
                    changed = True
            for name, server in list(self.servers.items()):
                if not server.alive() and now >= self._server_retry.get(name, 0.0):
                    self._progress(f"{name} exited with code {server.process.returncode}; "
                                   "restarting it")
                    try:
                        self.servers[name] = self._restart_server(server)
                    except StartError as exc:
                        # e.g. PostgreSQL refusing while the killed server's backends exit
                        self._progress(f"{name} did not restart: {exc}; trying again in 1s")
                        self._server_retry[name] = time.monotonic() + 1.0
                        continue
                    changed = True
            if changed:
                self._write_stack_file()
            time.sleep(0.2)

    def _restart_server(self, server: Server) -> Server:
        port = int(server.url.rsplit(":", 1)[1].split("/", 1)[0])
        if server.name == "nats-server":
            return start_nats(self.state_dir, port, server.user, server.password)
        if server.name == "postgres":
            return start_postgres(self.state_dir, port, server.password)
        return start_vcsim(self.state_dir, port, server.user, server.password, _vcsim_args())

    # ---- stop -----------------------------------------------------------------------

    def stop(self) -> None:
        # SIGTERM to every service at once (each finishes the work in hand), then wait.
        running = [c.process for c in self.children if c.process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            terminate(process)
        for server in reversed(list(self.servers.values())):
            server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STACK_FILE).unlink()


def _vcsim_args() -> list[str]:
    """Extra vcsim flags for test harnesses (method delays, SOAP trace), from
    SNAPDEPLOY_VCSIM_ARGS."""
    return shlex.split(os.environ.get("SNAPDEPLOY_VCSIM_ARGS", ""))


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _summary(info: dict[str, Any]) -> str:
    return "\n".join([
        "snapdeploy is up.",
        f"  API (CloudStack)   {info['api_url']}",
        f"  audit stream       {info['audit_stream_url']}",
        f"  admin API key      {info['admin_api_key']}",
        f"  admin secret key   {info['admin_secret_key']}",
        f"  NATS               {info['nats_url']}",
        f"  vCenter            {info['vcenter_url']}",
        f"  state and logs     {info['state_dir']}",
    ])


def up(state_dir: Path, *, detach: bool = False, gateway_listen: str | None = None) -> int:
    if detach:
        return _up_detached(state_dir, gateway_listen)
    stack = Stack(state_dir, gateway_listen)
    should_stop = [False]

    def on_signal(signum: int, _: object) -> None:
        should_stop[0] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(_summary(stack.describe()), flush=True)
        print("Ctrl-C stops everything.", flush=True)
        stack.supervise(should_stop)
    except StartError as exc:
        print(f"snapdeploy: could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        stack._progress("stopping")
        stack.stop()
    stack._progress("stopped")
    return 0


def _up_detached(state_dir: Path, gateway_listen: str | None) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_file = state_dir / STACK_FILE
    if stack_file.exists():
        running = json.loads(stack_file.read_text())
        if alive(running["launcher_pid"]):
            print(f"snapdeploy: already running in {state_dir}", file=sys.stderr)
            print(_summary(running))
            return 0
        stack_file.unlink()
    argv = [sys.executable, "-m", "shared.cli", "up", "--state-dir", str(state_dir)]
    if gateway_listen:
        argv += ["--gateway-listen", gateway_listen]
    log_path = state_dir / "logs" / "launcher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT_S + 30
    while not stack_file.exists():
        if launcher.poll() is not None or time.monotonic() > deadline:
            print(f"snapdeploy: the stack did not come up; see {log_path}:", file=sys.stderr)
            print(log_path.read_text()[-3000:], file=sys.stderr)
            if launcher.poll() is None:
                launcher.terminate()
            return 1
        time.sleep(0.2)
    print(_summary(json.loads(stack_file.read_text())))
    print(f"Stop it with: snapdeploy down --state-dir {state_dir}")
    return 0


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie that no one has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def down(state_dir: Path, timeout: float = 60.0) -> int:
    stack_file = state_dir / STACK_FILE
    if not stack_file.exists():
        print(f"snapdeploy: nothing running in {state_dir}")
        return 0
    info = json.loads(stack_file.read_text())
    launcher = int(info["launcher_pid"])
    if alive(launcher):
        os.kill(launcher, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(launcher) and time.monotonic() < deadline:
            time.sleep(0.1)
    pids = [launcher] + [p["pid"] for group in ("services", "servers")
                         for p in info.get(group, {}).values() if p.get("pid")]
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        stack_file.unlink()
    print(f"snapdeploy: stopped the stack in {state_dir}")
    return 0
