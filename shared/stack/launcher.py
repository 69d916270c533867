"""``snapdeploy up`` / ``down``: the whole system on one machine, supervised.

``up`` starts the embedded servers that are not configured externally (nats-server with
JetStream, PostgreSQL, vcsim, and a private libvirt daemon as the KVM zone's one host, with
its pool, networks and a demo VM), then every service, waits until all report healthy,
writes ``STATE_DIR/stack.json`` and supervises: a process that exits is restarted with
backoff. SIGINT or SIGTERM stops the services, then the servers (the KVM guests before
their daemon). Children are also bound to the launcher with a parent-death signal, so
killing the launcher leaves no service or server running; KVM guests, which QEMU keeps
apart from libvirtd, are taken up by the next ``up`` on the folder or stopped by ``down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from msgspec.structs import replace

from shared import config, db, natsauth
from shared.drivers.base import HypervisorError
from shared.drivers.libvirt import CONSOLE_LOG, default_guest_folder
from shared.stack import _kvm as kvm
from shared.stack._libvirt import socket_path_fits, stop_guests
from shared.stack._servers import (
    NatsCluster,
    Server,
    StartError,
    free_port,
    postgres_socket_url,
    private_dir,
    spawn,
    start_nats,
    start_postgres,
    start_vcsim,
    still_free,
    terminate,
    write_private,
)

SERVICES = ("relay", "projector", "planner", "seeder", "cloner", "volume", "gateway")
# The services that run one active copy among their copies, the others standing by
# (``Runtime.lead``): their /healthz says which a copy is (``role``).
ONE_ACTIVE = ("relay", "projector", "planner")
STACK_FILE = "stack.json"
SECRETS_FILE = "secrets.json"
LOCK_FILE = "launcher.lock"
READY_TIMEOUT_S = 120.0
# nats-server's configuration takes its users from the file the gateway keeps current.
NATS_AUTHORIZATION = 'include "auth.conf"'
# JetStream keeps a stream on at most five servers.
MAX_STREAM_REPLICAS = 5


def _secrets(state_dir: Path) -> dict[str, str]:
    """Credentials generated on the first start and reused after (PostgreSQL keeps its own)."""
    path = state_dir / "secrets.json"
    fresh = {
        "nats_user": "snapdeploy",
        "nats_password": secrets.token_urlsafe(18),
        "postgres_password": secrets.token_urlsafe(18),
        "postgres_service_password": secrets.token_urlsafe(18),
        "vcenter_user": "administrator@vsphere.local",
        "vcenter_password": secrets.token_urlsafe(12),
        "admin_api_key": secrets.token_urlsafe(32),
        "admin_secret_key": secrets.token_urlsafe(32),
        "admin_password": secrets.token_urlsafe(12),
        "key_encryption_key": secrets.token_urlsafe(32),
    }
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if saved.keys() >= fresh.keys():
        return saved
    # First start, or a state directory from an older snapdeploy: add what is missing
    # (e.g. the key encryption key), keep the rest.
    values = {**fresh, **saved}
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2))
    return values


def _lock(state_dir: Path) -> int | None:
    """Take the state folder's launcher lock (held until this process exits), or None if
    another launcher holds it. The file descriptor is not inherited by children."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _locked(state_dir: Path) -> bool:
    """True while a launcher holds ``state_dir``."""
    if not (state_dir / LOCK_FILE).exists():
        return False
    fd = _lock(state_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def process_identity(pid: int) -> dict[str, Any] | None:
    """What tells a process apart from a later one with the same pid: its start time (clock
    ticks after boot) and command line. None if ``pid`` is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return {"pid": pid, "start_time": int(fields[19]),
            "cmdline": [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]}


def is_recorded_process(record: dict[str, Any]) -> bool:
    """True if ``record`` (from stack.json) is a running process with that same identity."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 1 or "start_time" not in record:
        return False
    now = process_identity(pid)
    return now is not None and now["start_time"] == record["start_time"] and \
        now["cmdline"] == record.get("cmdline")


@dataclass
class Child:
    """A service process the launcher keeps running: copy ``copy`` (from 1) of ``service``,
    named ``service`` for the first copy and ``service-<copy>`` for the others."""

    name: str
    health_port: int
    service: str = ""
    copy: int = 1
    # The address a gateway copy's API listens on.
    listen: str = ""
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
    # The secret the NATS identities' passwords derive from, when `up` runs nats-server.
    _nats_secret: str = ""
    # The embedded KVM host and its demo VM, when `up` runs the KVM zone.
    _kvm: kvm.KvmHost | None = None
    _demo: kvm.DemoVm | None = None
    # nats-server nodes to run (clustered when more than one), and copies of each service.
    nats_nodes: int = 1
    replicas: int = 1
    _nats_cluster: NatsCluster | None = None
    # Every port this stack handed out: a port picked for one server is free until that
    # server binds it, and the system may offer it again for the next one meanwhile.
    _ports: set[int] = field(default_factory=set)

    def _free_port(self) -> int:
        """A port free now that this stack has not handed out yet."""
        while (port := free_port()) in self._ports:
            pass
        self._ports.add(port)
        return port

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    # ---- start ----------------------------------------------------------------------

    def start(self) -> None:
        private_dir(self.state_dir)
        private_dir(self.logs)
        creds = _secrets(self.state_dir)
        self._generated: dict[str, str] = {}
        given = config.given()
        settings = config.load()

        if self.nats_nodes < 1 or self.replicas < 1:
            raise StartError("--nats-nodes and --replicas are 1 or more")
        if "nats_url" not in given:
            # One NATS user per service and per API key, each with its own permissions
            # (shared.natsauth); stack.json names the read-only monitor identity.
            self._nats_secret = creds["nats_password"]
            natsauth.write_identities(self._nats_auth_file, self._nats_secret)
            settings = replace(settings, **self._start_nats(), nats_user=natsauth.MONITOR,
                               nats_password=natsauth.password_for(self._nats_secret,
                                                                   natsauth.MONITOR),
                               nats_auth_file=str(self._nats_auth_file))
            self._generated["nats_password"] = "nats_password"
        elif self.nats_nodes > 1:
            raise StartError("--nats-nodes starts nats-server nodes of its own, but "
                             "SNAPDEPLOY_NATS_URL names a NATS server already (list every "
                             "node of your cluster there, and set SNAPDEPLOY_NATS_REPLICAS)")
        if "database_url" not in given:
            self._progress("starting PostgreSQL")
            pg = self._server(start_postgres(self.state_dir, self._free_port(),
                                             creds["postgres_password"]))
            # The schema's owner migrates; the services connect as a role that may not
            # change the schema or rewrite events (shared/db/_roles.py).
            password = creds["postgres_service_password"]
            asyncio.run(_prepare_database(pg.url, SERVICE_ROLE, password))
            # The services reach it through its Unix-domain socket when it has one.
            settings = replace(settings, database_admin_url=pg.url, database_url=_with_user(
                postgres_socket_url(pg.url, self.state_dir), SERVICE_ROLE, password))
            self._generated["database_password"] = "postgres_service_password"
            self._generated["database_admin_password"] = "postgres_password"
        elif settings.database_admin_url:
            self._progress("migrating the database schema as its owner")
            asyncio.run(_prepare_database(settings.database_admin_url))
        if "vcenter_url" not in given:
            self._progress("starting vcsim (vCenter simulator)")
            vc = self._server(start_vcsim(self.state_dir, self._free_port(), creds["vcenter_user"],
                                          creds["vcenter_password"], _vcsim_args()))
            settings = replace(settings, vcenter_url=vc.url, vcenter_user=vc.user,
                               vcenter_password=vc.password, vcenter_verify_tls=False)
            self._generated["vcenter_password"] = "vcenter_password"
        if "kvm_zones" not in given:
            settings = replace(settings, kvm_zones=self._start_kvm())
        listen = self.gateway_listen or (
            settings.gateway_listen if "gateway_listen" in given
            else f"127.0.0.1:{self._free_port()}")
        if "admin_api_key" not in given:
            settings = replace(settings, admin_api_key=creds["admin_api_key"],
                               admin_secret_key=creds["admin_secret_key"])
            self._generated["admin_secret_key"] = "admin_secret_key"
        if "admin_password" not in given:
            settings = replace(settings, admin_password=creds["admin_password"])
            self._generated["admin_password"] = "admin_password"
        if "key_encryption_key" not in given:
            settings = replace(settings, key_encryption_key=creds["key_encryption_key"])
        self.settings = replace(settings, gateway_listen=listen)

        for service in SERVICES:
            for copy in range(1, self.replicas + 1):
                name = service if copy == 1 else f"{service}-{copy}"
                child = Child(name, self._free_port(), service, copy)
                if service == "gateway":
                    # The first gateway answers on the API's address; the others on free
                    # ports of the same host, for a load balancer in front of them all.
                    host = listen.rsplit(":", 1)[0]
                    child.listen = listen if copy == 1 else f"{host}:{self._free_port()}"
                self.children.append(child)
                self._progress(f"starting {name}")
                self._start_child(child)
        self._wait_healthy()
        self._write_stack_file()

    def _start_nats(self) -> dict[str, Any]:
        """nats-server with JetStream: one server, or a cluster of ``nats_nodes`` with the
        events stream on up to five of them. The settings that name it."""
        monitor = natsauth.password_for(self._nats_secret, natsauth.MONITOR)
        if self.nats_nodes == 1:
            self._progress("starting nats-server (JetStream)")
            nats = self._server(start_nats(self.state_dir, self._free_port(), natsauth.MONITOR,
                                           monitor, authorization=NATS_AUTHORIZATION))
            self._forget_nats_nodes_after(1)
            return {"nats_url": nats.url, "nats_replicas": 1}
        n = self.nats_nodes
        self._progress(f"starting a cluster of {n} nats-server nodes (JetStream)")
        cluster = NatsCluster(tuple(self._free_port() for _ in range(n)),
                              tuple(self._free_port() for _ in range(n)),
                              natsauth.password_for(self._nats_secret, "nats-route"))
        self._nats_cluster = cluster
        self._forget_nats_nodes_after(n)
        for node in range(1, n + 1):
            self._server(start_nats(self.state_dir, cluster.client_ports[node - 1],
                                    natsauth.MONITOR, monitor, authorization=NATS_AUTHORIZATION,
                                    node=node, cluster=cluster))
        asyncio.run(_jetstream_ready(cluster.urls, natsauth.MONITOR, monitor))
        return {"nats_url": cluster.urls, "nats_replicas": min(n, MAX_STREAM_REPLICAS)}

    def _forget_nats_nodes_after(self, n: int) -> None:
        """Remove the pid files of nodes beyond ``n`` a larger cluster left in the state
        folder, so key changes signal only this stack's nodes."""
        for pid_file in (self.state_dir / "nats").glob("nats-*.pid"):
            index = pid_file.stem.removeprefix("nats-")
            if index.isdigit() and int(index) > n:
                pid_file.unlink(missing_ok=True)

    def _progress(self, text: str) -> None:
        print(f"snapdeploy: {text}", file=sys.stderr, flush=True)

    # ---- the KVM zone ---------------------------------------------------------------

    def _start_kvm(self) -> str:
        """The KVM zone's host (a private libvirtd with pool0 and its networks) and the
        demo VM: the ``kvm_zones`` setting naming it, or "" (said why) when this machine
        cannot run it."""
        missing = _kvm_missing(self.state_dir)
        if missing:
            self._progress(f"no KVM zone: {missing}")
            return ""
        self._progress(f"starting libvirtd (KVM zone {kvm.ZONE}, host {kvm.HOST})")
        host = self._start_kvm_host()
        return kvm.kvm_zones_setting(host.uri)

    def _start_kvm_host(self) -> kvm.KvmHost:
        try:
            host = kvm.start_kvm_host(self.state_dir)
        except libvirt_error() as exc:
            raise StartError(f"the KVM host did not set up: {exc}; see "
                             f"{self.logs / 'libvirtd.log'}") from exc
        self._kvm = host
        self._server(host.daemon.server)
        if not host.daemon.booted:
            self._progress("libvirtd joined the KVM guests still running")
        try:
            self._demo = kvm.ensure_demo_vm(host)
        except (libvirt_error(), HypervisorError, OSError) as exc:  # e.g. the guest image gone
            raise StartError(f"the demo VM {kvm.DEMO_VM} could not be made: {exc}; see "
                             f"{self.logs / 'libvirtd.log'}") from exc
        if self._demo is None:
            self._progress(f"demo VM {kvm.DEMO_VM} was removed; not making it again")
        elif self._demo.created:
            self._progress(f"made the demo VM {kvm.DEMO_VM} with its VM snapshot "
                           f"{self._demo.snapshot!r}; booting it")
        else:
            self._progress(f"found the demo VM {kvm.DEMO_VM}")
        return host

    def _console_logs(self) -> str:
        assert self._kvm is not None
        return str(self._kvm.daemon.host_path(str(Path(CONSOLE_LOG).parent)))

    def _server(self, server: Server) -> Server:
        self.servers[server.name] = server
        return server

    @property
    def _nats_auth_file(self) -> Path:
        return self.state_dir / "nats" / "auth.conf"

    def _start_child(self, child: Child) -> None:
        if not still_free(child.health_port):
            child.health_port = self._free_port()  # stack.json is rewritten with the new one
        # Services get the database role that may not change the schema, never the owner's.
        service = child.service or child.name
        settings = replace(self.settings, health_listen=f"127.0.0.1:{child.health_port}",
                           database_admin_url="",
                           gateway_listen=child.listen or self.settings.gateway_listen)
        if self._nats_secret:
            # Each service connects as itself; only the first gateway rewrites the
            # identities (copies writing at once could leave an older key set last).
            user = service if service in natsauth.SERVICES else ""
            rewrites = service == "gateway" and child.copy == 1
            settings = replace(
                settings, nats_user=user,
                nats_password=natsauth.password_for(self._nats_secret, user) if user else "",
                nats_auth_file=settings.nats_auth_file if rewrites else "")
        env = {**os.environ, **config.as_env(settings)}
        env.pop("DATABASE_URL", None)  # the child's SNAPDEPLOY_DATABASE_URL is the one to use
        child.process = spawn(child.name, [sys.executable, "-m", f"services.{service}"],
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
        """What stack.json holds: no password and no secret key, only where the generated
        ones are kept (``generated``: field -> key in secrets.json; see ``read_stack``)."""
        s = self.settings
        gateways = [c.listen for c in self.children if c.service == "gateway"]
        return {
            "gateway_url": f"http://{s.gateway_listen}",
            # Every gateway copy (the first is gateway_url): a load balancer's backends.
            "gateway_urls": [f"http://{a}" for a in gateways or [s.gateway_listen]],
            "api_url": f"http://{s.gateway_listen}/client/api",
            "audit_stream_url": f"http://{s.gateway_listen}/client/events",
            "console_url": f"http://{s.gateway_listen}/client/",
            "nats_url": s.nats_url,
            "nats_nodes": self.nats_nodes if self._nats_secret else None,
            "nats_replicas": s.nats_replicas,
            "replicas": self.replicas,
            "nats_user": s.nats_user,
            "nats_identities": bool(self._nats_secret),
            "database_url": config.redact_url(s.database_url),
            "database_admin_url": config.redact_url(s.database_admin_url),
            "vcenter_url": s.vcenter_url,
            "vcenter_user": s.vcenter_user,
            "kvm_zones": s.kvm_zones,
            "kvm": None if self._kvm is None else {
                "zone": kvm.ZONE, "host": kvm.HOST, "uri": self._kvm.uri,
                "pool": kvm.POOL, "pool_folder": str(self._kvm.pool_dir),
                "networks": list(kvm.NETWORKS),
                "demo_vm": None if self._demo is None else self._demo.name,
                "demo_snapshot": None if self._demo is None else self._demo.snapshot,
                "console_logs": self._console_logs(),
            },
            "admin_api_key": s.admin_api_key,
            "generated": dict(getattr(self, "_generated", {})),
            "launcher_pid": os.getpid(),
            "launcher": process_identity(os.getpid()),
            "state_dir": str(self.state_dir.resolve()),
            "servers": {name: {**_identity_of(srv.pid), "url": config.redact_url(srv.url),
                               "log": str(srv.log_path)} for name, srv in self.servers.items()},
            "services": {c.name: {**_identity_of(c.process.pid if c.process else None),
                                  "service": c.service or c.name,
                                  "health_url": c.health_url,
                                  "log": str(self.logs / f"{c.name}.log")}
                         for c in self.children},
        }

    def _write_stack_file(self) -> None:
        write_private(self.state_dir / STACK_FILE, json.dumps(self.describe(), indent=2))

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
        if server.name == "libvirtd":
            # On the same socket, so the services' kvm_zones still names it.
            restarted: Server = self._start_kvm_host().daemon.server
            return restarted
        port = int(server.url.rsplit(":", 1)[1].split("/", 1)[0])
        if server.name.startswith("nats-server"):
            # A cluster's node on its own ports again: the others' routes name them.
            cluster = self._nats_cluster
            node = cluster.client_ports.index(port) + 1 if cluster else 1
            return start_nats(self.state_dir, port, server.user, server.password,
                              authorization=NATS_AUTHORIZATION if self._nats_secret else None,
                              node=node, cluster=cluster)
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
            if self._kvm is not None and server is self._kvm.daemon.server:
                self._kvm.stop()  # its guests, then the daemon
            else:
                server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STACK_FILE).unlink()


def _identity_of(pid: int | None) -> dict[str, Any]:
    found = process_identity(pid) if pid else None
    return found or {"pid": pid}


def libvirt_error() -> type[Exception]:
    import libvirt

    error: type[Exception] = libvirt.libvirtError
    return error


# What the embedded KVM host needs on this machine (`make install` provides it as root).
_KVM_TOOLS = ("libvirtd", "unshare", "nsenter", "qemu-system-x86_64", "qemu-img")


def _kvm_missing(state_dir: Path) -> str:
    """Why this machine cannot run the embedded KVM host, or "" if it can."""
    if os.geteuid() != 0:
        return "its private libvirt daemon runs QEMU as root; run `snapdeploy up` as root"
    absent = [tool for tool in _KVM_TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not installed: run `make install`"
    guest = default_guest_folder()
    if not all((guest / f).exists() for f in ("vmlinuz", "initrd.img", "root.qcow2")):
        return f"the demo guest is not built in {guest}: run `make install`"
    if not socket_path_fits(state_dir):
        return f"the state folder's path is too long for libvirtd's socket under " \
               f"{state_dir / 'libvirt'}: use a shorter one"
    return ""


def read_stack(state_dir: Path) -> dict[str, Any]:
    """stack.json with the generated credentials filled in from secrets.json (mode 0600):
    ``nats_password`` (the monitor identity's, when ``up`` runs nats-server),
    ``vcenter_password``, ``admin_secret_key`` and the password in ``database_url``, for the
    ones ``up`` generated."""
    info: dict[str, Any] = json.loads((state_dir / STACK_FILE).read_text())
    creds: dict[str, str] = json.loads((state_dir / SECRETS_FILE).read_text())
    for name, key in info.get("generated", {}).items():
        if name in ("database_password", "database_admin_password"):
            url = name.replace("password", "url")
            info[url] = _with_user(info[url], urlsplit(info[url]).username or "", creds[key])
        elif name == "nats_password" and info.get("nats_identities"):
            info[name] = natsauth.password_for(creds[key], info["nats_user"])
        else:
            info[name] = creds[key]
    return info


SERVICE_ROLE = "snapdeploy_service"


def _with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@"
                                            f"{parts.netloc.rsplit('@', 1)[-1]}"))


async def _jetstream_ready(urls: str, user: str, password: str,
                           within: float = READY_TIMEOUT_S) -> None:
    """Wait until the cluster at ``urls`` answers JetStream requests (it has elected its
    meta leader)."""
    from shared.bus import nats_servers, open_nats

    nc = await open_nats(nats_servers(urls), user=user, password=password,
                         inbox_prefix=natsauth.inbox_prefix(user), connect_timeout=5,
                         max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + within
        while True:
            try:
                await js.account_info()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StartError(f"the NATS cluster at {urls} did not elect a JetStream "
                                     f"leader within {within:.0f}s ({exc})") from exc
                await asyncio.sleep(0.3)
    finally:
        await nc.close()


async def _prepare_database(owner_url: str, role: str = "", password: str = "") -> None:
    """Migrate as the schema's owner; with ``role``, also create it with the services'
    rights."""
    conn = await asyncpg.connect(owner_url)
    try:
        await (db.prepare(conn, role, password) if role else db.migrate(conn))
    finally:
        await conn.close()


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


def role(health_url: str) -> str | None:
    """What a healthy copy of a service that runs one active copy (``ONE_ACTIVE``) says it
    is in its ``/healthz``: "active" or "standby"; None for any other service, an
    unhealthy copy, or no answer."""
    try:
        with urllib.request.urlopen(health_url, timeout=3) as response:
            found = json.loads(response.read()).get("role")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return found if isinstance(found, str) else None


def _summary(info: dict[str, Any], *, keys: bool = True) -> str:
    lines = [
        "snapdeploy is up.",
        f"  API (CloudStack)   {info['api_url']}",
    ]
    more = info.get("gateway_urls", [])[1:]
    if more:
        lines.append(f"  more gateways      {', '.join(more)} (the same API: put a load "
                     "balancer in front of all)")
    lines += [
        f"  audit stream       {info['audit_stream_url']}",
        f"  admin API key      {info['admin_api_key']}",
    ]
    if keys and info.get("admin_secret_key"):
        lines.append(f"  admin secret key   {info['admin_secret_key']}")
    if info.get("console_url"):
        lines.append(f"  web console        {info['console_url']} (user admin"
                     + (f", password {info['admin_password']})" if keys and
                        info.get("admin_password") else ")"))
    nodes = info.get("nats_nodes") or 1
    lines += [
        f"  NATS               {info['nats_url']}"
        + (f" ({nodes} nodes, events stream on {info.get('nats_replicas')})"
           if nodes > 1 else ""),
        f"  vCenter            {info['vcenter_url']}",
    ]
    zone = info.get("kvm")
    if zone:
        lines.append(f"  KVM zone           {zone['zone']}: host {zone['host']} ({zone['uri']})")
        if zone.get("demo_vm"):
            lines.append(f"  KVM demo VM        {zone['demo_vm']} (VM snapshot "
                         f"{zone['demo_snapshot']!r}); its console: snapdeploy console "
                         f"{zone['demo_vm']}")
        lines.append(f"  KVM consoles       {zone['console_logs']}/<VM>-console.log")
    elif info.get("kvm_zones"):
        lines.append(f"  KVM zones          {info['kvm_zones']}")
    if (info.get("replicas") or 1) > 1:
        lines.append(f"  service copies     {info['replicas']} of each ({', '.join(ONE_ACTIVE)}: "
                     "one active, the others standing by)")
    lines.append(f"  state and logs     {info['state_dir']}")
    return "\n".join(lines)


def _refuse(state_dir: Path) -> int:
    print(f"snapdeploy: a stack is already running in {state_dir}; stop it with "
          f"`snapdeploy down --state-dir {state_dir}` first", file=sys.stderr)
    return 1


def up(state_dir: Path, *, detach: bool = False, gateway_listen: str | None = None,
       show_keys: bool = True, nats_nodes: int = 1, replicas: int = 1) -> int:
    """Start the stack and supervise it until SIGINT/SIGTERM (or, with ``detach``, start it
    in the background and return once it is up). ``show_keys=False`` (the background
    launcher, whose output goes to launcher.log) prints no secret key. ``nats_nodes``:
    nats-server nodes (a cluster when more than one); ``replicas``: copies of each
    service."""
    if detach:
        return _up_detached(state_dir, gateway_listen, nats_nodes, replicas)
    private_dir(state_dir)
    lock = _lock(state_dir)
    if lock is None:
        # Another launcher runs on this folder: a second one would start a second
        # nats-server on the same JetStream data and remove the first one's stack.json.
        return _refuse(state_dir)
    stack = Stack(state_dir, gateway_listen, nats_nodes=nats_nodes, replicas=replicas)
    should_stop = [False]
    received: list[str] = []

    def on_signal(signum: int, _: object) -> None:
        should_stop[0] = True
        received.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(_summary(read_stack(state_dir), keys=show_keys), flush=True)
        print("Ctrl-C stops everything.", flush=True)
        stack.supervise(should_stop)
    except StartError as exc:
        print(f"snapdeploy: could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        # Which signal asked for it, in the log: a stop nobody asked for is then traceable.
        stack._progress(f"stopping ({', '.join(received) or 'no signal'})")
        stack.stop()
        os.close(lock)
    stack._progress("stopped")
    return 0


def _up_detached(state_dir: Path, gateway_listen: str | None, nats_nodes: int,
                 replicas: int) -> int:
    private_dir(state_dir)
    stack_file = state_dir / STACK_FILE
    if _locked(state_dir):
        if not stack_file.exists():
            return _refuse(state_dir)
        print(f"snapdeploy: already running in {state_dir}", file=sys.stderr)
        print(_summary(read_stack(state_dir)))
        return 0
    with contextlib.suppress(FileNotFoundError):
        stack_file.unlink()
    argv = [sys.executable, "-m", "shared.cli", "up", "--state-dir", str(state_dir),
            "--hide-keys"]
    if gateway_listen:
        argv += ["--gateway-listen", gateway_listen]
    argv += ["--nats-nodes", str(nats_nodes), "--replicas", str(replicas)]
    log_path = private_dir(state_dir / "logs") / "launcher.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
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
    # The keys go to this terminal, once; the background launcher's log never has them.
    print(_summary(read_stack(state_dir)))
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
    """Stop the stack of ``state_dir``: SIGTERM to its launcher (which stops the rest), then
    SIGKILL to whatever it started that still runs. A process is signalled only if it is
    the one stack.json recorded: same pid, start time and command line."""
    stack_file = state_dir / STACK_FILE
    if not stack_file.exists():
        print(f"snapdeploy: nothing running in {state_dir}")
        return 0
    info = json.loads(stack_file.read_text())
    launcher = info.get("launcher") or {"pid": info.get("launcher_pid")}
    records = [(f"{group[:-1]} {name}", record) for group in ("services", "servers")
               for name, record in info.get(group, {}).items()]
    if is_recorded_process(launcher):
        os.kill(launcher["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_recorded_process(launcher) and time.monotonic() < deadline:
            time.sleep(0.1)
    elif alive_pid(launcher.get("pid")):
        print(f"snapdeploy: pid {launcher.get('pid')} is not the launcher stack.json recorded;"
              " leaving it alone", file=sys.stderr)
    for what, record in [("launcher", launcher), *records]:
        if is_recorded_process(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGKILL)
        elif what != "launcher" and alive_pid(record.get("pid")):
            print(f"snapdeploy: pid {record.get('pid')} is not the {what} stack.json "
                  "recorded; leaving it alone", file=sys.stderr)
    if "libvirtd" in info.get("servers", {}):
        # KVM guests outlive their daemon: a launcher that could not stop them leaves them.
        # Only QEMU processes named in the daemon's pid files as those very guests.
        stop_guests(state_dir.resolve() / "libvirt", timeout=10.0)
    with contextlib.suppress(FileNotFoundError):
        stack_file.unlink()
    print(f"snapdeploy: stopped the stack in {state_dir}")
    return 0


def alive_pid(pid: object) -> bool:
    return isinstance(pid, int) and pid > 0 and alive(pid)
