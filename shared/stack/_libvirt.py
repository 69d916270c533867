"""A private libvirt daemon: the embedded KVM host, and the tests' one.

``start_libvirtd`` runs ``libvirtd`` as root in a mount and network namespace of its own:
libvirt's fixed folders (``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt``) are folders under the state folder there, its
socket lies in the state folder, and the bridges of its networks exist only in its namespace.
So it never meets a machine-wide daemon, nor another private one, and needs no port. QEMU's
processes are its children and share its namespaces; guests are TCG (``<domain
type='qemu'>``): nested KVM does not boot on the machines snapdeploy is tested on.

The daemon's own configuration: no authentication on its socket (mode 0700, root only),
QEMU as root without security driver, cgroups or per-VM namespaces, and QEMU's output in
files (no virtlogd).

QEMU's processes outlive a daemon that dies, and keep its namespaces alive. A daemon started
again on the same folder while guests of it still run joins their namespaces (``nsenter``),
where its folders are mounted and its networks' bridges exist, and takes the guests up again
as libvirtd does after a restart. Without a running guest it starts afresh, as a host boots:
its ``/run/libvirt`` is emptied first (``Libvirtd.booted``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from shared.stack._servers import SOCKET_PATH_MAX, Server, StartError, private_dir, spawn

# libvirt's own folders -> the folder under the private root that takes their place.
_FOLDERS = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}

# Mount the private folders over libvirt's, bring up loopback, then become libvirtd.
_ENTER = """set -e
root=$1; shift
for pair in "$@"; do
  target=${pair%%=*}; source=$root/${pair#*=}
  mkdir -p "$target"
  mount --bind "$source" "$target"
done
ip link set lo up
exec libvirtd --config "$root/etc/libvirtd.conf" --pid-file "$root/run/libvirtd.pid"
"""
# In the namespaces of a running guest the folders are mounted already.
_REENTER = """set -e
root=$1
exec libvirtd --config "$root/etc/libvirtd.conf" --pid-file "$root/run/libvirtd.pid"
"""

_QEMU_CONF = """# Written by snapdeploy for its private libvirt daemon.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


@dataclass
class Libvirtd:
    """A running private libvirt daemon. ``uri`` connects to it (``qemu:///system`` on its
    own socket); ``root`` holds its folders (``root/log`` is its ``/var/log/libvirt``)."""

    server: Server
    root: Path
    # Started in namespaces of its own (a host's boot), not in those of guests that
    # outlived the daemon before it.
    booted: bool = True

    @property
    def uri(self) -> str:
        return self.server.url

    def host_path(self, daemon_path: str) -> Path:
        """Where a path the daemon and its guests see (e.g. a console log under
        ``/var/log/libvirt``) lies outside its namespace."""
        for folder, name in _FOLDERS.items():
            if daemon_path == folder or daemon_path.startswith(folder + "/"):
                return self.root / name / daemon_path[len(folder):].lstrip("/")
        return Path(daemon_path)

    def qemu_pids(self) -> list[int]:
        """The QEMU processes of this daemon's running guests (from its pid files)."""
        return guest_pids(self.root)

    def stop(self, timeout: float = 15.0) -> None:
        """Power off its guests (they would outlive the daemon), then stop the daemon.
        The daemon is asked first, so it forgets them as stopped; whatever still runs
        is killed."""
        with contextlib.suppress(Exception):
            _destroy_guests(self.uri)
        stop_guests(self.root, timeout)
        self.server.stop(timeout)


def _destroy_guests(uri: str) -> None:
    import libvirt

    conn = libvirt.open(uri)
    try:
        for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                domain.destroy()
    finally:
        conn.close()


def _guest_pid(pid_file: Path) -> int | None:
    """The pid a guest's pid file names, if that process is QEMU running that guest (the
    file's name is the domain's, which QEMU's ``-name guest=`` repeats)."""
    try:
        pid = int(pid_file.read_text().strip())
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    name = pid_file.name[:-len(".pid")]
    named = any(a.decode(errors="replace").split(",")[0] == f"guest={name}" for a in args)
    return pid if named and any(b"qemu-system" in a for a in args) and _running(pid) else None


def guest_pids(root: Path) -> list[int]:
    """The QEMU processes running guests of the private daemon whose folders are under
    ``root`` (``STATE_DIR/libvirt``), from its pid files, whether the daemon runs or not."""
    found = (_guest_pid(f) for f in sorted((root / "run" / "qemu").glob("*.pid")))
    return [pid for pid in found if pid is not None]


def stop_guests(root: Path, timeout: float = 15.0) -> None:
    """SIGTERM to every guest of the daemon of ``root``, SIGKILL to what still runs after
    ``timeout`` seconds."""
    guests = guest_pids(root)
    for pid in guests:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(map(_running, guests)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in filter(_running, guests):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does: QEMU is not our child to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def socket_path(state_dir: Path) -> Path:
    """Where the private daemon of ``state_dir`` listens."""
    return (state_dir / "libvirt").resolve() / "sock" / "libvirt-sock"


def socket_path_fits(state_dir: Path) -> bool:
    return len(str(socket_path(state_dir))) <= SOCKET_PATH_MAX


def start_libvirtd(state_dir: Path, timeout: float = 30.0) -> Libvirtd:
    """A private libvirtd with its folders under ``state_dir/libvirt``; returns once it
    answers on its socket.

    Raises:
        StartError: the daemon did not come up (the message names its log), or the state
            folder's path is too long for a socket.
    """
    if os.geteuid() != 0:
        raise StartError("the private libvirt daemon runs QEMU as root: run as root")
    root = private_dir((state_dir / "libvirt").resolve())
    for name in _FOLDERS.values():
        private_dir(root / name)
    (root / "log" / "qemu").mkdir(exist_ok=True)
    sockets = private_dir(root / "sock")
    sock = socket_path(state_dir)
    if len(str(sock)) > SOCKET_PATH_MAX:
        raise StartError(f"{sock} is too long for a socket path: use a shorter state folder")
    _write(root / "etc" / "libvirtd.conf", "\n".join([
        "# Written by snapdeploy for its private libvirt daemon.",
        f'unix_sock_dir = "{sockets}"',
        'unix_sock_rw_perms = "0700"',
        'unix_sock_ro_perms = "0700"',
        'unix_sock_admin_perms = "0700"',
        'auth_unix_rw = "none"',
        'auth_unix_ro = "none"',
        'log_outputs = "3:stderr"',
        "",
    ]))
    _write(root / "etc" / "qemu.conf", _QEMU_CONF)
    log = state_dir / "logs" / "libvirtd.log"
    guests = guest_pids(root)
    if guests:
        argv = ["nsenter", f"--target={guests[0]}", "--mount", "--net", "--",
                "sh", "-c", _REENTER, "sh", str(root)]
    else:
        # A boot: what /run/libvirt held describes guests and networks that are gone.
        for stale in (root / "run").iterdir():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        mounts = [f"{folder}={name}" for folder, name in _FOLDERS.items()]
        argv = ["unshare", "--mount", "--net", "--propagation", "private", "--",
                "sh", "-c", _ENTER, "sh", str(root), *mounts]
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a socket file left by the last daemon
    process = spawn("libvirtd", argv, log)
    uri = f"qemu:///system?socket={sock}"
    server = Server("libvirtd", process, uri, log)
    try:
        _wait_answers(server, sock, timeout)
    except BaseException:
        server.stop()
        raise
    return Libvirtd(server, root, booted=not guests)


def _wait_answers(server: Server, sock: Path, timeout: float) -> None:
    import libvirt

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise StartError(f"libvirtd exited with code {server.process.returncode}; "
                             f"see {server.log_path}")
        if sock.exists():
            with contextlib.suppress(OSError), \
                    socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
                try:
                    conn = libvirt.open(server.url)
                except libvirt.libvirtError:
                    pass
                else:
                    conn.close()
                    return
        time.sleep(0.1)
    raise StartError(f"libvirtd did not answer on {sock} within {timeout:.0f}s; "
                     f"see {server.log_path}")


__all__ = ["Libvirtd", "guest_pids", "socket_path", "socket_path_fits", "start_libvirtd",
           "stop_guests"]
