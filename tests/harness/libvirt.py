"""Test-harness access to a private libvirt daemon: a KVM site to test against, and ways to
look at what the product did (guest consoles, disk bytes) independent of its driver.

A site is one daemon with a directory pool ``pool0`` and two isolated networks, ``guest0``
and ``guest1``; its source VMs boot the demo guest that `make install` builds
(tools/guest), which prints each disk's marker on its serial console.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt

from shared.drivers.libvirt import CONSOLE_LOG
from shared.stack._kvm import HOST, NETWORKS, POOL, KvmHost, create_guest, start_kvm_host
from shared.stack._libvirt import Libvirtd

__all__ = ["HOST", "NETWORKS", "POOL", "KvmSite", "domain_disks", "domain_names", "pool_file",
           "qemu_img", "read_marker", "write_marker"]

# The demo guest reads each disk's marker from the 512 bytes at 31 MiB (tools/guest/init).
MARKER_OFFSET = 31 * 2**20
MARKER_BYTES = 512


class KvmSite:
    """A private libvirt daemon set up as a KVM host: ``pool0`` and two networks, as
    ``snapdeploy up`` sets up its own (``shared.stack._kvm``)."""

    def __init__(self, state_dir: Path) -> None:
        self.host: KvmHost = start_kvm_host(state_dir)
        self.daemon: Libvirtd = self.host.daemon
        self.pool_dir = self.host.pool_dir
        self.conn: Any = self.host.open()

    @property
    def uri(self) -> str:
        return self.daemon.uri

    def stop(self) -> None:
        self.conn.close()
        self.host.stop()

    def create_vm(self, name: str, *, networks: tuple[str, ...] = NETWORKS[:1],
                  start: bool = True) -> str:
        """A VM booting a copy of the demo guest's root disk in ``pool0``: its uuid."""
        domain = create_guest(self.conn, self.pool_dir, name, networks=networks, start=start)
        return str(domain.UUIDString())

    def remove_all(self, prefix: str) -> None:
        """Every domain and pool file whose name starts with ``prefix``, clones before the
        templates they are backed by."""
        domains = [d for d in self.conn.listAllDomains(0) if d.name().startswith(prefix)]
        for domain in domains:
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        for file in self.pool_dir.iterdir():
            if file.name.startswith(prefix) or file.name.startswith(f".{prefix}"):
                file.unlink()
        self.conn.storagePoolLookupByName(POOL).refresh(0)

    def write_marker_live(self, name: str, text: str) -> None:
        """Write ``text`` as the root disk's marker while the VM runs, through its QEMU
        (the monitor's qemu-io on the guest's disk device)."""
        import libvirt_qemu

        data = text.encode().ljust(MARKER_BYTES, b"\0")
        pattern = self.daemon.root / "run" / f"{name}-marker"
        pattern.write_bytes(data)
        try:
            domain = self.conn.lookupByName(name)
            alias = ET.fromstring(domain.XMLDesc(0)).find("devices/disk/alias")
            assert alias is not None and alias.get("name"), "the disk has no device id"
            device = f"/machine/peripheral/{alias.get('name')}/virtio-backend"
            # Flushed, so the image file (read by qemu-img) holds the write, not only
            # QEMU's cache of the qcow2 tables.
            for command in (f"write -s {pattern} {MARKER_OFFSET} {MARKER_BYTES}", "flush"):
                reply = libvirt_qemu.qemuMonitorCommand(
                    domain, f'qemu-io -d {device} "{command}"',
                    libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
                assert "error" not in reply.lower(), reply
        finally:
            pattern.unlink()

    def console(self, name: str) -> str:
        """What the VM ``name`` printed on its serial console so far."""
        path = self.daemon.host_path(CONSOLE_LOG.format(name=name))
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_console(self, name: str, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            printed = self.console(name)
            if text in printed:
                return printed
            time.sleep(0.2)
        raise AssertionError(f"{name} did not print {text!r} within {timeout:.0f}s; "
                             f"its console:\n{self.console(name)[-2000:]}")


def write_marker(disk: Path, text: str) -> None:
    """Write ``text`` as the disk's marker through QEMU's block layer (the disk is not in
    use by a running guest)."""
    data = text.encode().ljust(MARKER_BYTES, b"\0")
    with tempfile.NamedTemporaryFile() as pattern:
        pattern.write(data)
        pattern.flush()
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -s {pattern.name} {MARKER_OFFSET} {MARKER_BYTES}", str(disk)],
                       check=True, capture_output=True)


def read_marker(disk: Path, snapshot: str | None = None) -> str:
    """The disk's marker now, or as of its internal ``snapshot``."""
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "disk.raw"
        args = ["qemu-img", "convert", "-U", "-O", "raw"]
        if snapshot is not None:
            args += ["-l", f"snapshot.name={snapshot}"]
        subprocess.run([*args, str(disk), str(raw)], check=True, capture_output=True)
        with raw.open("rb") as image:
            image.seek(MARKER_OFFSET)
            return image.read(MARKER_BYTES).rstrip(b"\0").decode()


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)


def disk_as_of(disk: Path, snapshot: str, out: Path) -> Path:
    """``out``: a standalone qcow2 copy of ``disk`` as it was at its internal ``snapshot``."""
    done = qemu_img("convert", "-U", "-l", f"snapshot.name={snapshot}", "-O", "qcow2",
                    str(disk), str(out))
    assert done.returncode == 0, done.stderr
    return out


def same_image(first: Path, second: Path) -> bool:
    """Whether two images (each read through its backing chain) hold the same bytes, as
    ``qemu-img compare`` finds (an error comparing them fails the caller)."""
    done = qemu_img("compare", "-U", str(first), str(second))
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode == 0


def backing_chain(disk: Path) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain`` of ``disk``: the disk first, then each backing file
    (an image of the chain that cannot be opened fails the caller)."""
    done = qemu_img("info", "-U", "--backing-chain", "--output=json", str(disk))
    assert done.returncode == 0, done.stderr
    chain: list[dict[str, Any]] = json.loads(done.stdout)
    return chain


class SmallFilesystem:
    """A small ext2 file system (a loop device over a sparse file) mounted at ``folder`` in
    this process's mount namespace and in the mount namespace of the process ``pid`` (a
    private libvirt daemon's), so the daemon, its guests and qemu-img run here see the same
    files and the same free space. Needs root, ``losetup``, ``mkfs.ext2`` and ``nsenter``."""

    def __init__(self, image: Path, folder: Path, size_bytes: int, pid: int) -> None:
        self.image, self.folder, self.size_bytes, self.pid = image, folder, size_bytes, pid
        self.device = ""
        self._mounted: list[list[str]] = []

    def __enter__(self) -> SmallFilesystem:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as image:
            image.truncate(self.size_bytes)
        try:
            self.device = _run("losetup", "--find", "--show", str(self.image)).strip()
            _run("mkfs.ext2", "-q", "-m", "0", self.device)
            for enter in ([], ["nsenter", f"--target={self.pid}", "--mount", "--"]):
                _run(*enter, "mount", self.device, str(self.folder))
                self._mounted.append(enter)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def free_bytes(self) -> int:
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    def __exit__(self, *exc: object) -> None:
        while self._mounted:
            enter = self._mounted.pop()
            subprocess.run([*enter, "umount", str(self.folder)], capture_output=True,
                           check=False)
        if self.device:
            subprocess.run(["losetup", "--detach", self.device], capture_output=True,
                           check=False)
            self.device = ""
        self.image.unlink(missing_ok=True)


def domain_names(conn: Any) -> set[str]:
    """The names of every domain the libvirt connection knows, running or not."""
    return {d.name() for d in conn.listAllDomains(0)}


def domain_disks(conn: Any, name: str) -> dict[str, Path]:
    """The disks (not CD-ROMs) of the domain ``name`` as libvirt has them now (live when it
    runs): target name -> file."""
    xml = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    out = {}
    for disk in xml.findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        target, source = disk.find("target"), disk.find("source")
        assert target is not None and source is not None, ET.tostring(disk)
        out[str(target.get("dev"))] = Path(str(source.get("file")))
    return out


def pool_file(pool_dir: Path, location: str) -> Path:
    """The file of a volume location ``<pool>/<file>`` on the pool whose folder is
    ``pool_dir`` (a location elsewhere fails the caller)."""
    pool, _, name = location.partition("/")
    assert pool == pool_dir.name and name and "/" not in name, location
    return pool_dir / name


def _run(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.strip()}"
    return done.stdout
