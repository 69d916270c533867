"""The embedded KVM host: a private libvirt daemon set up as one host of a KVM zone.

``start_kvm_host`` starts the daemon (``shared.stack._libvirt``) and makes sure it holds a
directory storage pool ``pool0`` (its folder ``STATE_DIR/pools/pool0``, outside the daemon's
namespace, so qemu-img in the services reads the same files) and the isolated networks
``guest0`` and ``guest1``, all started with the daemon from then on. ``ensure_demo_vm``
adds the demo VM once: a copy of the demo guest's root disk (tools/guest) on ``pool0``, a VM
snapshot of it taken before its first boot, then started. ``snapdeploy up`` runs both;
the test harness's KVM site (tests/harness/libvirt.py) runs the first.

Each step finds what is there before making anything, so a daemon started again on the
same state folder keeps its pool, networks and demo VM (and the VMs deployed beside it).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from shared.drivers.libvirt import default_guest_folder, guest_domain_xml, guest_files
from shared.stack._libvirt import Libvirtd, start_libvirtd

ZONE = "KVM0"
HOST = "kvm0"
POOL = "pool0"
NETWORKS = ("guest0", "guest1")
DEMO_VM = "kvm-demo"
DEMO_SNAPSHOT = "fresh"
DEMO_SNAPSHOT_DESCRIPTION = "the demo guest before its first boot"


def kvm_zones_setting(uri: str, zone: str = ZONE, host: str = HOST) -> str:
    """The ``kvm_zones`` setting naming one zone of one libvirt host."""
    return f"{zone}: {host}={uri}"


def pool_folder(state_dir: Path, name: str = POOL) -> Path:
    return state_dir.resolve() / "pools" / name


# Found by listing, not looked up by name: a failed lookup is an error libvirt prints.
def _named(objects: list[Any], name: str) -> Any:
    return next((o for o in objects if o.name() == name), None)


def ensure_pool(conn: Any, name: str, folder: Path) -> Any:
    """The directory pool ``name`` on ``folder``: defined if missing, started with the
    daemon, active."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = _named(conn.listAllStoragePools(0), name)
    if pool is None:
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{name}</name>"
            f"<target><path>{folder}</path></target></pool>", 0)
    pool.setAutostart(1)
    if not pool.isActive():
        pool.create(0)
    return pool


def ensure_network(conn: Any, name: str, bridge: str) -> Any:
    """The isolated network ``name`` on bridge ``bridge`` (in the daemon's own network
    namespace): defined if missing, started with the daemon, active."""
    network = _named(conn.listAllNetworks(0), name)
    if network is None:
        network = conn.networkDefineXML(
            f"<network><name>{name}</name><bridge name='{bridge}' stp='off'/></network>")
    network.setAutostart(1)
    if not network.isActive():
        network.create()
    return network


def create_guest(conn: Any, pool_dir: Path, name: str, *,
                 networks: tuple[str, ...] = NETWORKS[:1], start: bool = True,
                 guest: Path | None = None) -> Any:
    """A new VM ``name`` booting a copy of the demo guest's root disk (``<name>.qcow2`` in
    ``pool_dir``), with a NIC on each of ``networks``: its libvirt domain."""
    disk = pool_dir / f"{name}.qcow2"
    shutil.copyfile(guest_files(guest or default_guest_folder())["root"], disk)
    with contextlib.suppress(libvirt.libvirtError):
        conn.storagePoolLookupByTargetPath(str(pool_dir)).refresh(0)
    domain = conn.defineXML(guest_domain_xml(name, disk, guest=guest, networks=list(networks)))
    if start:
        domain.create()
    return domain


@dataclass
class KvmHost:
    """A private libvirt daemon with ``pool0`` and the networks: one KVM host."""

    daemon: Libvirtd
    pool_dir: Path

    @property
    def uri(self) -> str:
        return self.daemon.uri

    def open(self) -> Any:
        """A new connection to the daemon (the caller closes it)."""
        return libvirt.open(self.uri)

    def stop(self, timeout: float = 15.0) -> None:
        """Power off its guests, then stop the daemon."""
        self.daemon.stop(timeout)


def _prepare(daemon: Libvirtd, pool_dir: Path, networks: tuple[str, ...]) -> None:
    conn = libvirt.open(daemon.uri)
    try:
        ensure_pool(conn, POOL, pool_dir)
        for index, name in enumerate(networks):
            ensure_network(conn, name, f"sdbr{index}")
    finally:
        conn.close()


def start_kvm_host(state_dir: Path, *, networks: tuple[str, ...] = NETWORKS) -> KvmHost:
    """The private daemon of ``state_dir`` with ``pool0`` and ``networks`` active.

    Raises:
        StartError: the daemon did not come up.
    """
    daemon = start_libvirtd(state_dir)
    pool_dir = pool_folder(state_dir)
    try:
        _prepare(daemon, pool_dir, networks)
    except BaseException:
        daemon.stop()
        raise
    return KvmHost(daemon, pool_dir)


@dataclass(frozen=True)
class DemoVm:
    name: str
    uuid: str
    snapshot: str
    created: bool  # made by this call (else found from an earlier start)


def ensure_demo_vm(host: KvmHost, *, guest: Path | None = None) -> DemoVm | None:
    """The demo VM: made once (disk, definition, snapshot ``DEMO_SNAPSHOT`` before its
    first boot, then started); later found and left as it is, except that it is started
    when its daemon has just booted (as a host's autostarted VM would be). None if it was
    made once and has since been removed: it is not made again."""
    made_once = host.daemon.root / "demo-vm"
    conn = host.open()
    try:
        domain = _named(conn.listAllDomains(0), DEMO_VM)
        if domain is None:
            if made_once.exists():
                return None
            domain = create_guest(conn, host.pool_dir, DEMO_VM, start=False, guest=guest)
            try:
                domain.snapshotCreateXML(
                    f"<domainsnapshot><name>{DEMO_SNAPSHOT}</name>"
                    f"<description>{DEMO_SNAPSHOT_DESCRIPTION}</description>"
                    "</domainsnapshot>", 0)
                domain.create()
            except BaseException:
                # Made again, whole, next time.
                with contextlib.suppress(libvirt.libvirtError):
                    domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                raise
            made_once.write_text(f"{domain.UUIDString()}\n")
            created = True
        else:
            created = False
            if host.daemon.booted and not domain.isActive():
                domain.create()
        return DemoVm(DEMO_VM, str(domain.UUIDString()), DEMO_SNAPSHOT, created)
    finally:
        conn.close()


__all__ = ["DEMO_SNAPSHOT", "DEMO_VM", "HOST", "NETWORKS", "POOL", "ZONE", "DemoVm", "KvmHost",
           "create_guest", "ensure_demo_vm", "ensure_network", "ensure_pool",
           "kvm_zones_setting", "pool_folder", "start_kvm_host"]
