"""KVM through libvirt and qemu-img: the second hypervisor driver.

A KVM zone is a set of libvirt connections, one per host. Its primary storage pools are
libvirt directory pools (``dir``, or ``netfs`` for NFS) known by their UUID, so a pool
defined with one UUID on several hosts is one shared pool; its networks are libvirt
networks, also by UUID; its VMs are libvirt domains (``<domain type='qemu'>``) with qcow2
disks, by UUID. A template is a domain that is never started, marked as a template in its
metadata, with one disk and a base snapshot.

VM snapshots are made as CloudStack's KVM agent makes them: internal qcow2 snapshots, with
the memory state when the VM runs and memory is asked for. A snapshot of a running VM
without memory is taken by QEMU on every disk at once (a QMP transaction, crash-consistent)
and registered with libvirt as a disk-only snapshot, so reverting to it leaves the VM off,
as on vSphere. A snapshot's ref is ``<domain uuid>/<snapshot name>``.

Image work is qemu-img's: a template is seeded with ``qemu-img convert -l snapshot.name=``
(the disk as of the snapshot, memory left out) on the same pool, a linked clone is a qcow2
overlay backed by the template (``-F qcow2``), a full clone and a volume copy are converts.
qemu-img runs where this driver runs, so the pools' folders must be there at the paths their
hosts use (true for the embedded daemon, and for NFS pools mounted alike).

Volume locations are ``<pool name>/<file name>``; a disk as of a snapshot is
``<pool name>/<file name>@<snapshot name>`` (what ``SnapshotInfo.disks`` report, and what
``copy_volume`` reads). A disk's key is its target name (``vda``, ``vdb``, ``sda``); a NIC's
is the ``ua-nic<position>`` alias snapdeploy gives each NIC it makes, without its ``ua-``
(``nic0``; a NIC without such an alias: ``nic`` and its position among the VM's NICs).
libvirt has no tasks: an operation id is made for each change and logged with what it did,
so an audit event's ids lead to the log lines.

libvirt's calls and qemu-img block, so every call runs on a thread of the session's own
executor and the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from shared.config import Settings, kvm_zones
from shared.drivers.base import (
    CLONE,
    POWER_ON,
    RECONFIGURE,
    CloneProgress,
    CloneRequest,
    Connection,
    DiskInfo,
    DriverKind,
    HostInfo,
    Hypervisor,
    HypervisorError,
    Inventory,
    NetworkInfo,
    NicInfo,
    PoolInfo,
    Seeded,
    SessionLost,
    SnapshotInfo,
    VmInfo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

BASE_SNAPSHOT = "snapdeploy-base"
METADATA_URI = "urn:snapdeploy:kvm:1"
METADATA_KEY = "snapdeploy"
# How the demo guest (tools/guest) boots: its kernel and initrd beside its root disk.
GUEST_CMDLINE = "root=/dev/vda ro console=ttyS0 fsck.mode=skip"
CONSOLE_LOG = "/var/log/libvirt/qemu/{name}-console.log"

_USER_ALIAS = "ua-"
_NIC_ALIAS = f"{_USER_ALIAS}nic"
_QEMU_IMG_TIMEOUT_S = 3600
_UNPLUG_TIMEOUT_S = 20
# libvirt errors that mean the daemon did not answer: what was asked may have happened.
_UNANSWERED = frozenset({libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                         libvirt.VIR_ERR_OPERATION_TIMEOUT})
_GONE = frozenset({libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
                   libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL,
                   libvirt.VIR_ERR_NO_NETWORK})

ET.register_namespace(METADATA_KEY, METADATA_URI)

__all__ = ["KIND", "LibvirtHypervisor", "connect", "connections", "volume_location"]


def volume_location(pool_name: str, volume_id: str) -> str:
    """Where a volume snapdeploy makes lives: a qcow2 file in its pool's folder."""
    return f"{pool_name}/{volume_id}.qcow2"


def network_uri(network: NetworkInfo) -> str:
    """CloudStack's broadcast URI of a libvirt network: the network's name."""
    return f"kvm://{network.name}"


def connections(settings: Settings) -> list[Connection]:
    """One session per KVM zone that ``kvm_zones`` names (``shared.config.kvm_zones``),
    with every libvirt host of the zone; its health check is "libvirt <zone>"."""

    def opener(zone: str, hosts: dict[str, str]) -> Callable[[], Awaitable[Hypervisor]]:
        async def open_session() -> Hypervisor:
            return await LibvirtHypervisor.connect(hosts, zone=zone)
        return open_session

    return [Connection(f"libvirt {zone}", opener(zone, hosts), KIND, zone)
            for zone, hosts in kvm_zones(settings.kvm_zones).items()]


async def connect(settings: Settings) -> list[LibvirtHypervisor]:
    """Sessions with the KVM zones the settings name, one per zone (none when
    ``kvm_zones`` is empty); closed again if one of them cannot be opened."""
    sessions: list[LibvirtHypervisor] = []
    try:
        for zone, hosts in kvm_zones(settings.kvm_zones).items():
            sessions.append(await LibvirtHypervisor.connect(hosts, zone=zone))
    except BaseException:
        for session in sessions:
            await session.close()
        raise
    return sessions


KIND = DriverKind(
    name="kvm", hypervisor="KVM", manager="libvirt", template_format="QCOW2",
    pool_type="Filesystem",
    # CloudStack's KVM always deploys linked to the template; this per-pool setting is
    # named after vmware.create.full.clone, which a CloudStack admin knows.
    full_clone_setting="kvm.create.full.clone", volume_location=volume_location,
    network_uri=network_uri, connections=connections)


def _target_name(bus_prefix: str, index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return bus_prefix + letters


def new_operation(what: str) -> str:
    """An id for one change, logged with what it did."""
    operation = f"op-{secrets.token_hex(6)}"
    log.info("operation %s: %s", operation, what)
    return operation


def _error(exc: libvirt.libvirtError, what: str) -> HypervisorError:
    code = exc.get_error_code()
    transient = code in _UNANSWERED or exc.get_error_domain() == libvirt.VIR_FROM_RPC
    return HypervisorError(f"{what}: {exc.get_error_message() or exc}", transient=transient,
                           fault="NotFound" if code in _GONE else f"libvirt-{code}")


def _gone(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in _GONE


# ---- domain XML ------------------------------------------------------------------------


def _disks_of(domain: ET.Element) -> list[ET.Element]:
    """The domain's disks (not CD-ROMs), root disk first: the one marked first to boot,
    else libvirt's order."""
    devices = domain.find("devices")
    disks = [d for d in ([] if devices is None else devices.findall("disk"))
             if d.get("device", "disk") == "disk"]

    def boot(disk: ET.Element) -> int:
        order = disk.find("boot")
        return int(order.get("order", "1")) if order is not None else 1_000_000

    return sorted(disks, key=boot)


def _source_file(disk: ET.Element) -> str:
    source = disk.find("source")
    path = None if source is None else (source.get("file") or source.get("dev"))
    if not path:
        raise HypervisorError("a disk without a file source is not supported")
    return path


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    if target is None or not target.get("dev"):
        raise HypervisorError("a disk without a target name")
    return str(target.get("dev"))


def _metadata(domain: ET.Element) -> ET.Element | None:
    metadata = domain.find("metadata")
    return None if metadata is None else metadata.find(f"{{{METADATA_URI}}}template")


def _int_text(domain: ET.Element, path: str, default: int) -> int:
    found = domain.find(path)
    return int(found.text) if found is not None and found.text else default


def _memory_mb(domain: ET.Element) -> int:
    memory = domain.find("memory")
    if memory is None or not memory.text:
        return 0
    scale = {"b": 1, "bytes": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20,
             "g": 2**30, "gib": 2**30}.get(memory.get("unit", "KiB").lower(), 2**10)
    return int(memory.text) * scale // 2**20


def _set_text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = parent.find(tag)
    if element is None:
        element = ET.SubElement(parent, tag)
    element.attrib.clear()
    element.attrib.update(attrs)
    element.text = text
    return element


def _devices(domain: ET.Element) -> ET.Element:
    devices = domain.find("devices")
    if devices is None:
        devices = ET.SubElement(domain, "devices")
    return devices


def _console_to_log(domain: ET.Element, name: str) -> None:
    """Every serial port a pty (for ``virsh console``) that also writes a log file."""
    devices = _devices(domain)
    for console in devices.findall("console"):
        devices.remove(console)
    for serial in devices.findall("serial"):
        serial.attrib.clear()
        serial.set("type", "pty")
        for child in list(serial):
            if child.tag != "target":
                serial.remove(child)
        ET.SubElement(serial, "log", file=CONSOLE_LOG.format(name=name), append="off")


def _fresh_copy(domain: ET.Element, name: str) -> ET.Element:
    """``domain``'s definition for a new domain called ``name``: no uuid, no live state."""
    copy = ET.fromstring(ET.tostring(domain))
    copy.attrib.pop("id", None)
    _set_text(copy, "name", name)
    for tag in ("uuid", "seclabel"):
        for element in copy.findall(tag):
            copy.remove(element)
    for element in copy.iter():
        for child in [c for c in element if c.tag == "alias"
                      and not c.get("name", "").startswith("ua-")]:
            element.remove(child)
    _console_to_log(copy, name)
    return copy


# ---- the driver ------------------------------------------------------------------------


class _Host:
    """One libvirt host: its name in the zone and a connection, opened again when lost."""

    def __init__(self, name: str, uri: str) -> None:
        self.name = name
        self.uri = uri
        self._conn: Any = None

    def conn(self) -> Any:
        if self._conn is None:
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(f"libvirt host {self.name} ({self.uri}) did not answer: "
                                      f"{exc.get_error_message()}", transient=True) from exc
        return self._conn

    def forget(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
        self._conn = None


class LibvirtHypervisor:
    """Sessions with the libvirt hosts of one KVM zone, implementing
    ``shared.drivers.base.Hypervisor``."""

    kind = KIND

    def __init__(self, zone: str, hosts: Mapping[str, str], executor: ThreadPoolExecutor,
                 ) -> None:
        self.zone = zone
        self._hosts = {name: _Host(name, uri) for name, uri in hosts.items()}
        self._executor = executor
        self._closed = False

    @classmethod
    async def connect(cls, hosts: Mapping[str, str], *, zone: str = "KVM0",
                      threads: int = 8) -> LibvirtHypervisor:
        """Connect to each host (name -> libvirt URI) of the zone ``zone``."""
        if not hosts:
            raise HypervisorError(f"KVM zone {zone} has no libvirt host")
        executor = ThreadPoolExecutor(threads, thread_name_prefix="libvirt")
        session = cls(zone, hosts, executor)
        try:
            await session.call(lambda: [h.conn() for h in session._hosts.values()])
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return session

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` on the session's threads; a libvirt error becomes a
        ``HypervisorError`` (transient when the daemon did not answer, and the host's
        connection is then opened again by the next call)."""
        if self._closed:
            raise HypervisorError("the libvirt session is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except libvirt.libvirtError as exc:
            error = _error(exc, "libvirt call failed")
            if error.transient:
                for host in self._hosts.values():
                    with contextlib.suppress(libvirt.libvirtError):
                        if host._conn is not None and not host._conn.isAlive():
                            host.forget()
            raise error from exc

    # ---- the session -----------------------------------------------------------------

    async def check_session(self) -> None:
        def check() -> None:
            for host in self._hosts.values():
                try:
                    host.conn().getLibVersion()
                except (libvirt.libvirtError, HypervisorError):
                    host.forget()
                    try:
                        host.conn().getLibVersion()
                    except libvirt.libvirtError as exc:
                        host.forget()
                        raise SessionLost(f"host {host.name}: {exc.get_error_message()}",
                                          hypervisor="libvirt") from exc
                    except HypervisorError as exc:
                        raise SessionLost(str(exc), hypervisor="libvirt") from exc

        await self.call(check)

    async def close(self) -> None:
        if self._closed:
            return
        def forget_all() -> None:
            for host in self._hosts.values():
                host.forget()

        await self.call(forget_all)
        self._closed = True
        self._executor.shutdown(wait=False)

    async def datacenters(self) -> list[str]:
        return [self.zone]

    # ---- finding things (blocking) ----------------------------------------------------

    def _host(self, ref: str) -> _Host:
        host = self._hosts.get(ref)
        if host is None:
            raise HypervisorError(f"host {ref} is not in KVM zone {self.zone}")
        return host

    def _domain(self, ref: str) -> tuple[_Host, Any]:
        """The domain of UUID ``ref`` and its host."""
        for host in self._hosts.values():
            try:
                return host, host.conn().lookupByUUIDString(ref)
            except libvirt.libvirtError as exc:
                if not _gone(exc) and exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
        raise HypervisorError(f"VM {ref} does not exist", fault="NotFound")

    def _domain_by_name(self, name: str) -> tuple[_Host, Any] | None:
        for host in self._hosts.values():
            try:
                return host, host.conn().lookupByName(name)
            except libvirt.libvirtError as exc:
                if not _gone(exc):
                    raise
        return None

    @staticmethod
    def _xml(domain: Any, inactive: bool = False) -> ET.Element:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return ET.fromstring(domain.XMLDesc(flags))

    def _pools(self, host: _Host) -> dict[str, tuple[Any, Path]]:
        """The host's active pools: uuid -> (pool, its folder)."""
        out = {}
        for pool in host.conn().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            if path:
                out[pool.UUIDString()] = (pool, Path(path))
        return out

    def _pool(self, pool_ref: str, host: _Host | None = None) -> tuple[_Host, Any, Path]:
        for candidate in [host] if host is not None else self._hosts.values():
            found = self._pools(candidate).get(pool_ref)
            if found is not None:
                return candidate, *found
        where = f"on host {host.name}" if host is not None else f"in KVM zone {self.zone}"
        raise HypervisorError(f"pool {pool_ref} is not active {where}", fault="NotFound")

    def _pool_by_name(self, name: str) -> tuple[_Host, Any, Path]:
        for host in self._hosts.values():
            for pool, path in self._pools(host).values():
                if pool.name() == name:
                    return host, pool, path
        raise HypervisorError(f"no pool called {name} in KVM zone {self.zone}",
                              fault="NotFound")

    def _resolve(self, location: str) -> tuple[Any, Path, str | None]:
        """(pool, file path, snapshot name or None) of a location."""
        pool_name, _, rest = location.partition("/")
        volume, _, snapshot = rest.partition("@")
        if not pool_name or not volume or "/" in volume:
            raise HypervisorError(f"{location!r} is not a volume location "
                                  "(<pool name>/<file>[@<snapshot>])")
        _, pool, folder = self._pool_by_name(pool_name)
        return pool, folder / volume, snapshot or None

    def _location(self, path: str, host: _Host,
                  pools: dict[str, tuple[Any, Path]] | None = None) -> tuple[str, str]:
        """(location, pool ref) of a disk file: ``<pool>/<file>`` when a pool's folder
        holds it, else its path and no pool."""
        file = Path(path)
        for ref, (pool, folder) in (pools if pools is not None else self._pools(host)).items():
            if file.parent == folder:
                return f"{pool.name()}/{file.name}", ref
        return path, ""

    # ---- qemu-img ---------------------------------------------------------------------

    @staticmethod
    def _qemu_img(*args: str, what: str) -> str:
        try:
            done = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                                  timeout=_QEMU_IMG_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise HypervisorError(f"{what}: qemu-img did not finish within "
                                  f"{_QEMU_IMG_TIMEOUT_S}s", transient=True) from exc
        except FileNotFoundError as exc:
            raise HypervisorError(f"{what}: qemu-img is not installed (make install)") from exc
        if done.returncode != 0:
            raise HypervisorError(f"{what}: {done.stderr.strip() or done.stdout.strip()}",
                                  fault="QemuImg")
        return done.stdout

    def _image_info(self, path: Path) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self._qemu_img(
            "info", "-U", "--output=json", str(path), what=f"reading {path}"))
        return info

    @staticmethod
    def _snapshot_option(snapshot: str) -> str:
        return "snapshot.name=" + snapshot.replace(",", ",,")

    def _convert(self, source: Path, snapshot: str | None, dest: Path, what: str) -> None:
        """``dest`` (qcow2) as ``source`` is, or was at its internal ``snapshot``: written
        beside ``dest`` first, so a ``dest`` that exists is whole."""
        fmt = str(self._image_info(source).get("format", "qcow2"))
        partial = dest.with_name(f".{dest.name}.part")
        args = ["convert", "-U", "-f", fmt, "-O", "qcow2"]
        if snapshot is not None:
            args += ["-l", self._snapshot_option(snapshot)]
        try:
            self._qemu_img(*args, str(source), str(partial), what=what)
            partial.rename(dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    @staticmethod
    def _refresh(pool: Any) -> None:
        with contextlib.suppress(libvirt.libvirtError):  # another refresh is running
            pool.refresh(0)

    def _backed_by(self, path: Path) -> list[str]:
        """Volumes of the pools that hold ``path``'s folder whose backing file it is."""
        users = []
        for host in self._hosts.values():
            for pool, folder in self._pools(host).values():
                if folder != path.parent:
                    continue
                self._refresh(pool)
                for volume in pool.listAllVolumes(0):
                    try:
                        xml = ET.fromstring(volume.XMLDesc(0))
                    except libvirt.libvirtError as exc:
                        if _gone(exc):
                            continue  # removed since it was listed (e.g. by another removal)
                        raise
                    backing = xml.findtext("backingStore/path")
                    if backing and Path(backing) == path:
                        users.append(xml.findtext("target/path") or volume.name())
        return users

    def _delete_file(self, path: Path) -> bool:
        """Remove a disk file no other disk is backed by. False: it was gone already."""
        if not path.exists():
            return False
        users = self._backed_by(path)
        if users:
            raise HypervisorError(f"{path} is the backing file of {', '.join(users)}: "
                                  "remove those first", fault="FileInUse")
        path.unlink()
        for host in self._hosts.values():
            for pool, folder in self._pools(host).values():
                if folder == path.parent:
                    self._refresh(pool)
        return True

    # ---- inventory ---------------------------------------------------------------------

    async def inventory(self) -> list[Inventory]:
        return [await self.call(self._inventory)]

    def _inventory(self) -> Inventory:
        hosts: list[HostInfo] = []
        pools: dict[str, PoolInfo] = {}
        networks: dict[str, NetworkInfo] = {}
        vms: list[VmInfo] = []
        for host in self._hosts.values():
            conn = host.conn()
            _, memory_mb, cpus, mhz, *_ = conn.getInfo()
            host_pools = self._pools(host)
            hosts.append(HostInfo(host.name, host.name, self.zone, int(cpus), int(mhz),
                                  int(memory_mb) * 2**20, sorted(host_pools)))
            for ref, (pool, folder) in host_pools.items():
                self._refresh(pool)
                _, capacity, _, available = pool.info()
                known = pools.get(ref)
                pools[ref] = PoolInfo(ref, pool.name(), self._pool_url(pool, folder),
                                      int(capacity), int(available),
                                      sorted([*(known.host_refs if known else []), host.name]))
            for network in conn.listAllNetworks(0):
                networks.setdefault(network.UUIDString(), NetworkInfo(
                    network.UUIDString(), network.name()))
            for domain in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):  # gone while listed
                    vms.append(self._vm_info(host, domain, host_pools))
        return Inventory(self.zone, self.zone, hosts, list(pools.values()),
                         list(networks.values()), vms)

    @staticmethod
    def _pool_url(pool: Any, folder: Path) -> str:
        source = ET.fromstring(pool.XMLDesc(0)).find("source")
        host = None if source is None else source.find("host")
        remote = None if source is None else source.find("dir")
        if host is not None and remote is not None:
            return f"nfs://{host.get('name')}{remote.get('path')}"
        return f"file://{folder}"

    def _vm_info(self, host: _Host, domain: Any,
                 pools: dict[str, tuple[Any, Path]]) -> VmInfo:
        xml = self._xml(domain)
        snapshots = [self._snapshot_info(host, domain, s, pools)
                     for s in domain.listAllSnapshots(0)]
        current = None
        if domain.hasCurrentSnapshot(0):
            current = f"{domain.UUIDString()}/{domain.snapshotCurrent(0).getName()}"
        return VmInfo(
            ref=domain.UUIDString(), name=domain.name(), uuid=domain.UUIDString(),
            template=_metadata(xml) is not None, host_ref=host.name,
            cpu_number=_int_text(xml, "vcpu", 1), memory_mb=_memory_mb(xml),
            powered_on=bool(domain.isActive()), disks=self._disk_infos(xml, host, pools),
            nics=self._nic_infos(host, xml), snapshots=snapshots,
            current_snapshot_ref=current)

    def _disk_infos(self, xml: ET.Element, host: _Host, pools: dict[str, tuple[Any, Path]],
                    snapshot: str | None = None) -> list[DiskInfo]:
        out = []
        for disk in _disks_of(xml):
            path = _source_file(disk)
            location, pool_ref = self._location(path, host, pools)
            try:
                size = int(self._image_info(Path(path)).get("virtual-size", 0))
            except HypervisorError:
                size = 0  # the file is gone: the disk is reported, without a size
            if snapshot is not None and pool_ref:
                location = f"{location}@{snapshot}"
            out.append(DiskInfo(_target(disk), location, pool_ref, size))
        return out

    def _nic_infos(self, host: _Host, xml: ET.Element) -> list[NicInfo]:
        by_name = {n.name(): n.UUIDString() for n in host.conn().listAllNetworks(0)}
        out = []
        devices = xml.find("devices")
        for position, nic in enumerate([] if devices is None else devices.findall("interface")):
            alias = nic.find("alias")
            name = "" if alias is None else alias.get("name", "")
            key = name[len(_USER_ALIAS):] if name.startswith(_NIC_ALIAS) \
                else f"nic{position}"
            source = nic.find("source")
            network = "" if source is None else str(source.get("network")
                                                     or source.get("bridge") or "")
            mac = nic.find("mac")
            out.append(NicInfo(key, by_name.get(network, network),
                               "" if mac is None else mac.get("address", "")))
        return out

    def _snapshot_info(self, host: _Host, domain: Any, snapshot: Any,
                       pools: dict[str, tuple[Any, Path]] | None = None) -> SnapshotInfo:
        xml = ET.fromstring(snapshot.getXMLDesc(0))
        frozen = xml.find("domain")
        if frozen is None:
            raise HypervisorError(f"snapshot {snapshot.getName()} of {domain.name()} holds "
                                  "no domain definition")
        name = snapshot.getName()
        memory = xml.find("memory")
        has_memory = (memory is not None and memory.get("snapshot") == "internal") \
            or xml.findtext("state") in ("running", "paused")
        parent = xml.findtext("parent/name")
        uuid = domain.UUIDString()
        pools = pools if pools is not None else self._pools(host)
        return SnapshotInfo(
            ref=f"{uuid}/{name}", name=name, description=xml.findtext("description") or "",
            created=datetime.fromtimestamp(int(xml.findtext("creationTime") or 0), UTC),
            memory=has_memory, parent_ref=f"{uuid}/{parent}" if parent else None,
            cpu_number=_int_text(frozen, "vcpu", 1), memory_mb=_memory_mb(frozen),
            disks=self._disk_infos(frozen, host, pools, snapshot=name),
            nics=self._nic_infos(host, frozen))

    async def find_vm(self, name: str) -> str | None:
        def find() -> str | None:
            found = self._domain_by_name(name)
            return None if found is None else str(found[1].UUIDString())

        return await self.call(find)

    # ---- snapshots -----------------------------------------------------------------------

    def _snapshot(self, snapshot_ref: str) -> tuple[_Host, Any, Any]:
        """(host, domain, snapshot) of a ref ``<domain uuid>/<name>``."""
        vm_ref, _, name = snapshot_ref.partition("/")
        if not name:
            raise HypervisorError(f"{snapshot_ref!r} is not a snapshot ref "
                                  "(<VM uuid>/<snapshot name>)")
        try:
            host, domain = self._domain(vm_ref)
        except HypervisorError as exc:
            raise HypervisorError(f"snapshot {snapshot_ref} does not exist: its VM is gone",
                                  fault="NotFound") from exc
        try:
            return host, domain, domain.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if _gone(exc):
                raise HypervisorError(f"snapshot {snapshot_ref} does not exist",
                                      fault="NotFound") from exc
            raise

    async def create_snapshot(self, vm_ref: str, name: str, description: str, memory: bool,
                              quiesce: bool) -> tuple[str, str]:
        # Internal snapshots are taken with QEMU's I/O stopped for the moment they take,
        # which is what quiescing asks of vSphere; there is no guest agent to ask more.
        del quiesce

        def take() -> tuple[str, str]:
            _, domain = self._domain(vm_ref)
            spec = ET.Element("domainsnapshot")
            ET.SubElement(spec, "name").text = name
            ET.SubElement(spec, "description").text = description
            if domain.isActive() and not memory:
                self._disk_only_snapshot(domain, spec)
            else:
                domain.snapshotCreateXML(ET.tostring(spec, encoding="unicode"), 0)
            kind = "with memory" if memory and domain.isActive() else "of the disks"
            return f"{domain.UUIDString()}/{name}", new_operation(
                f"snapshot {name!r} {kind} of {domain.name()} ({vm_ref})")

        return await self.call(take)

    def _disk_only_snapshot(self, domain: Any, spec: ET.Element) -> None:
        """An internal snapshot of every qcow2 disk of a running domain at one instant,
        without its memory, registered as a disk-only snapshot libvirt reverts to off."""
        import libvirt_qemu

        name = spec.findtext("name") or ""
        live = self._xml(domain)
        disks = _disks_of(live)
        actions = []
        for disk in disks:
            source = disk.find("source")
            index = None if source is None else source.get("index")
            if index is None:
                raise HypervisorError(f"disk {_target(disk)} of {domain.name()} has no "
                                      "block node to snapshot")
            actions.append({"type": "blockdev-snapshot-internal-sync",
                            "data": {"device": f"libvirt-{index}-format", "name": name}})
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(
            domain, json.dumps({"execute": "transaction", "arguments": {"actions": actions}}),
            0))
        if "error" in reply:
            raise HypervisorError(f"snapshot {name!r} of {domain.name()}: "
                                  f"{reply['error'].get('desc', reply['error'])}")
        ET.SubElement(spec, "state").text = "shutoff"
        ET.SubElement(spec, "creationTime").text = str(int(datetime.now(UTC).timestamp()))
        if domain.hasCurrentSnapshot(0):
            parent = ET.SubElement(spec, "parent")
            ET.SubElement(parent, "name").text = domain.snapshotCurrent(0).getName()
        ET.SubElement(spec, "memory", snapshot="no")
        spec_disks = ET.SubElement(spec, "disks")
        for disk in disks:
            ET.SubElement(spec_disks, "disk", name=_target(disk), snapshot="internal")
        spec.append(self._xml(domain, inactive=True))
        domain.snapshotCreateXML(ET.tostring(spec, encoding="unicode"),
                                 libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
                                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT)

    async def snapshot_info(self, vm_ref: str, snapshot_ref: str) -> SnapshotInfo:
        def find() -> SnapshotInfo:
            if not snapshot_ref.startswith(f"{vm_ref}/"):
                raise HypervisorError(f"snapshot {snapshot_ref} not found on {vm_ref}",
                                      fault="NotFound")
            host, domain, snapshot = self._snapshot(snapshot_ref)
            return self._snapshot_info(host, domain, snapshot)

        return await self.call(find)

    async def remove_snapshot(self, snapshot_ref: str) -> str:
        def remove() -> str:
            _, domain, snapshot = self._snapshot(snapshot_ref)
            snapshot.delete(0)
            return new_operation(f"removal of snapshot {snapshot_ref} of {domain.name()}")

        return await self.call(remove)

    async def revert_snapshot(self, snapshot_ref: str) -> str:
        def revert() -> str:
            _, domain, snapshot = self._snapshot(snapshot_ref)
            domain.revertToSnapshot(snapshot, 0)
            return new_operation(f"revert of {domain.name()} to snapshot {snapshot_ref}")

        return await self.call(revert)

    # ---- seeding a template from a snapshot ----------------------------------------------

    async def seed_template(self, vm_ref: str, snapshot_ref: str, pool_ref: str,
                            name: str) -> Seeded:
        return await self.call(self._seed, vm_ref, snapshot_ref, pool_ref, name)

    def _seed(self, vm_ref: str, snapshot_ref: str, pool_ref: str, name: str) -> Seeded:
        existing = self._domain_by_name(name)
        if existing is not None:
            host, template = existing
            xml = self._xml(template, inactive=True)
            if _metadata(xml) is not None and BASE_SNAPSHOT in template.snapshotListNames(0):
                location, _ = self._location(_source_file(_disks_of(xml)[0]), host)
                return Seeded(template.UUIDString(),
                              f"{template.UUIDString()}/{BASE_SNAPSHOT}", location, [])
            self._destroy(template.UUIDString())  # a seed interrupted half-way: again
        if not snapshot_ref.startswith(f"{vm_ref}/"):
            raise HypervisorError(f"snapshot {snapshot_ref} is not one of VM {vm_ref}")
        host, _, snapshot = self._snapshot(snapshot_ref)
        frozen = ET.fromstring(snapshot.getXMLDesc(0)).find("domain")
        if frozen is None or not _disks_of(frozen):
            raise HypervisorError(f"snapshot {snapshot_ref} holds no disk")
        root = _disks_of(frozen)[0]
        _, pool, folder = self._pool(pool_ref)
        dest = folder / f"{name}.qcow2"
        if dest.exists():
            self._delete_file(dest)  # left by a seed that died before its domain was made
        what = f"full copy of the root disk as of snapshot {snapshot_ref} to {dest}"
        self._convert(Path(_source_file(root)), snapshot.getName(), dest, what)
        copied = new_operation(what)
        self._refresh(pool)
        definition = _fresh_copy(frozen, name)
        devices = _devices(definition)
        for device in [d for d in devices if d.tag in ("disk", "interface")]:
            devices.remove(device)
        devices.insert(0, self._disk_element(dest, "vda"))
        metadata = definition.find("metadata")
        if metadata is None:
            metadata = ET.SubElement(definition, "metadata")
        ET.SubElement(metadata, f"{{{METADATA_URI}}}template", snapshot=snapshot_ref)
        try:
            template = host.conn().defineXML(ET.tostring(definition, encoding="unicode"))
        except BaseException:
            self._delete_file(dest)
            raise
        try:
            template.snapshotCreateXML(
                f"<domainsnapshot><name>{BASE_SNAPSHOT}</name>"
                "<description>base of linked clones</description></domainsnapshot>", 0)
        except BaseException:
            self._destroy(template.UUIDString())
            raise
        based = new_operation(f"base snapshot of template {name}")
        location, _ = self._location(str(dest), host)
        return Seeded(template.UUIDString(), f"{template.UUIDString()}/{BASE_SNAPSHOT}",
                      location, [copied, based])

    @staticmethod
    def _disk_element(path: Path, target: str) -> ET.Element:
        disk = ET.Element("disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=str(path))
        ET.SubElement(disk, "target", dev=target, bus="virtio")
        return disk

    # ---- deploying a clone -----------------------------------------------------------------

    async def clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        await self.call(self._clone, request, progress)

    def _clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        _, template = self._domain(request.template_ref)
        template_xml = self._xml(template, inactive=True)
        host = self._host(request.host_ref)
        _, pool, folder = self._pool(request.pool_ref, host)
        leftover = self._domain_by_name(request.name)
        if leftover is not None:
            self._destroy(leftover[1].UUIDString())  # an earlier attempt died half-way
        disk_path = folder / f"{request.name}.qcow2"
        if disk_path.exists():
            self._delete_file(disk_path)
        source = Path(_source_file(_disks_of(template_xml)[0]))

        definition = _fresh_copy(template_xml, request.name)
        metadata = definition.find("metadata")
        if metadata is not None:
            definition.remove(metadata)
        devices = _devices(definition)
        for device in [d for d in devices if d.tag in ("disk", "interface")]:
            devices.remove(device)
        devices.insert(0, self._disk_element(disk_path, "vda"))
        domain = host.conn().defineXML(ET.tostring(definition, encoding="unicode"))
        progress.vm_ref = domain.UUIDString()
        linked = request.linked and request.base_snapshot_ref is not None
        if linked:
            what = f"linked clone {disk_path} backed by {source}"
            self._qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(source),
                           str(disk_path), what=what)
        else:
            what = f"full clone of {source} to {disk_path}"
            self._convert(source, None, disk_path, what)
        self._refresh(pool)
        progress.operations[CLONE] = new_operation(what)

        definition = self._xml(domain, inactive=True)
        _set_text(definition, "vcpu", str(request.cpu_number), placement="static")
        _set_text(definition, "memory", str(request.memory_mb), unit="MiB")
        _set_text(definition, "currentMemory", str(request.memory_mb), unit="MiB")
        devices = _devices(definition)
        networks = {n.UUIDString(): n.name() for n in host.conn().listAllNetworks(0)}
        for position, binding in enumerate(request.networks):
            network = networks.get(binding.ref)
            if network is None:
                raise HypervisorError(f"network {binding.name} ({binding.ref}) does not exist "
                                      f"on host {host.name}", fault="NotFound")
            nic = ET.SubElement(devices, "interface", type="network")
            ET.SubElement(nic, "source", network=network)
            ET.SubElement(nic, "model", type="virtio")
            ET.SubElement(nic, "alias", name=f"{_NIC_ALIAS}{position}")
        domain = host.conn().defineXML(ET.tostring(definition, encoding="unicode"))
        progress.operations[RECONFIGURE] = new_operation(
            f"{request.cpu_number} CPUs, {request.memory_mb} MiB and "
            f"{len(request.networks)} NICs for {request.name}")
        definition = self._xml(domain, inactive=True)
        progress.nics = self._nic_infos(host, definition)
        disks = self._disk_infos(definition, host, self._pools(host))
        progress.root_disk = disks[0] if disks else None

        domain.create()
        progress.operations[POWER_ON] = new_operation(f"power-on of {request.name}")

    # ---- removing and powering -------------------------------------------------------------

    async def destroy_vm(self, ref: str) -> str | None:
        return await self.call(self._destroy, ref)

    def _destroy(self, ref: str) -> str | None:
        try:
            host, domain = self._domain(ref)
        except HypervisorError:
            return None  # already gone
        xml = self._xml(domain, inactive=True)
        files = [Path(_source_file(d)) for d in _disks_of(xml)]
        for file in files:
            users = [u for u in self._backed_by(file) if Path(u) not in files]
            if users:
                raise HypervisorError(f"VM {domain.name()} ({ref}) cannot be removed: its "
                                      f"disk {file} backs {', '.join(users)}",
                                      fault="FileInUse")
        name = domain.name()
        try:
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                 | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError as exc:
            if _gone(exc):
                return None
            raise
        for file in files:
            if self._location(str(file), host)[1]:  # only disks on pools are snapdeploy's
                self._delete_file(file)
        return new_operation(f"removal of {name} ({ref}) with its disks")

    async def power_off(self, ref: str) -> str | None:
        def off() -> str | None:
            _, domain = self._domain(ref)
            if not domain.isActive():
                return None
            domain.destroy()
            return new_operation(f"power-off of {domain.name()}")

        return await self.call(off)

    async def reconfigure(self, vm_ref: str, cpu_number: int, memory_mb: int) -> str | None:
        def redefine() -> str | None:
            host, domain = self._domain(vm_ref)
            if domain.isActive():
                raise HypervisorError(f"domain {domain.name()} is running; its CPUs and "
                                      "memory change while it is off")
            definition = self._xml(domain, inactive=True)
            if (_int_text(definition, "vcpu", 1), _memory_mb(definition)) == (
                    cpu_number, memory_mb):
                return None
            _set_text(definition, "vcpu", str(cpu_number), placement="static")
            _set_text(definition, "memory", str(memory_mb), unit="MiB")
            _set_text(definition, "currentMemory", str(memory_mb), unit="MiB")
            host.conn().defineXML(ET.tostring(definition, encoding="unicode"))
            return new_operation(f"{cpu_number} CPUs and {memory_mb} MiB for "
                                 f"{domain.name()}")

        return await self.call(redefine)

    async def power_on(self, ref: str) -> str | None:
        def on() -> str | None:
            _, domain = self._domain(ref)
            if domain.isActive():
                return None
            domain.create()
            return new_operation(f"power-on of {domain.name()}")

        return await self.call(on)

    async def reboot(self, ref: str) -> str:
        def reset() -> str:
            _, domain = self._domain(ref)
            if domain.isActive():
                domain.reset(0)
            else:
                domain.create()
            return new_operation(f"reset of {domain.name()}")

        return await self.call(reset)

    async def vm_powered_on(self, vm_ref: str) -> bool:
        def state() -> bool:
            return bool(self._domain(vm_ref)[1].isActive())

        return await self.call(state)

    # ---- volumes ---------------------------------------------------------------------------

    def _attached(self, xml: ET.Element, path: Path) -> ET.Element | None:
        return next((d for d in _disks_of(xml) if Path(_source_file(d)) == path), None)

    def _device_flags(self, domain: Any) -> int:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if domain.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        return int(flags)

    async def copy_volume(self, source: str, pool_ref: str, dest: str) -> str:
        def copy() -> str:
            _, source_path, snapshot = self._resolve(source)
            _, pool, _ = self._pool(pool_ref)
            dest_pool, dest_path, dest_snapshot = self._resolve(dest)
            if dest_snapshot is not None or dest_pool.UUIDString() != pool_ref:
                raise HypervisorError(f"copy to {dest}: not a file on pool {pool_ref}")
            if dest_path.exists():
                raise HypervisorError(f"copy to {dest}: it exists", fault="FileAlreadyExists")
            if not source_path.exists():
                raise HypervisorError(f"copy of {source}: no such disk", fault="FileNotFound")
            what = f"copy of {source} to {dest}"
            self._convert(source_path, snapshot, dest_path, what)
            self._refresh(pool)
            return new_operation(what)

        return await self.call(copy)

    async def attach_volume(self, vm_ref: str, location: str, *,
                            create_bytes: int | None = None) -> tuple[str, str | None]:
        def attach() -> tuple[str, str | None]:
            _, domain = self._domain(vm_ref)
            pool, path, snapshot = self._resolve(location)
            if snapshot is not None:
                raise HypervisorError(f"{location} is a disk as of a snapshot: copy it first")
            xml = self._xml(domain, inactive=True)
            there = self._attached(xml, path)
            if there is not None:
                return _target(there), None
            if create_bytes:
                if path.exists():
                    raise HypervisorError(f"creating {location}: it exists",
                                          fault="FileAlreadyExists")
                self._qemu_img("create", "-q", "-f", "qcow2", str(path), str(create_bytes),
                               what=f"creating {location}")
                self._refresh(pool)
            elif not path.exists():
                raise HypervisorError(f"attaching {location} to {vm_ref}: no such disk",
                                      fault="FileNotFound")
            used = {_target(d) for d in _disks_of(xml)}
            target = next(_target_name("vd", i) for i in range(26 * 27)
                          if _target_name("vd", i) not in used)
            try:
                domain.attachDeviceFlags(
                    ET.tostring(self._disk_element(path, target), encoding="unicode"),
                    self._device_flags(domain))
            except BaseException:
                if create_bytes:
                    self._delete_file(path)
                raise
            what = "creating and attaching" if create_bytes else "attaching"
            return target, new_operation(f"{what} {location} to {domain.name()} as {target}")

        return await self.call(attach)

    async def detach_volume(self, vm_ref: str, location: str, *,
                            missing_ok: bool = False) -> str | None:
        def detach() -> str | None:
            _, domain = self._domain(vm_ref)
            _, path, _ = self._resolve(location)
            disk = self._attached(self._xml(domain, inactive=True), path)
            if disk is None:
                if missing_ok:
                    return None
                raise HypervisorError(f"VM {vm_ref} has no disk {location}")
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            live = domain.isActive() and self._attached(self._xml(domain), path) is not None
            if live:
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            domain.detachDeviceFlags(ET.tostring(disk, encoding="unicode"), flags)
            if live:
                self._wait_released(domain, path, location)
            return new_operation(f"detach of {location} from {domain.name()}")

        return await self.call(detach)

    def _wait_released(self, domain: Any, path: Path, location: str) -> None:
        """Wait for a running guest to let go of a disk being unplugged: virtio disks leave
        a running VM only when its guest agrees (ACPI), as they do under CloudStack."""
        deadline = time.monotonic() + _UNPLUG_TIMEOUT_S
        while self._attached(self._xml(domain), path) is not None:
            if time.monotonic() > deadline:
                raise HypervisorError(
                    f"detach of {location} from {domain.name()}: the guest has not released "
                    f"the disk within {_UNPLUG_TIMEOUT_S}s (it leaves the VM when the guest "
                    "answers, or when the VM is powered off)", transient=True)
            time.sleep(0.1)

    async def resize_volume(self, vm_ref: str | None, location: str, size_bytes: int,
                            pool_ref: str) -> str:
        def resize() -> str:
            pool, path, _ = self._resolve(location)
            if pool.UUIDString() != pool_ref:
                raise HypervisorError(f"{location} is not on pool {pool_ref}")
            if not path.exists():
                raise HypervisorError(f"resize of {location}: no such disk",
                                      fault="FileNotFound")
            size = int(self._image_info(path).get("virtual-size", 0))
            if size_bytes < size:
                raise HypervisorError(f"resize of {location}: disks only grow ({size} bytes "
                                      f"now, {size_bytes} asked)", fault="InvalidArgument")
            what = f"resize of {location} to {size_bytes} bytes"
            if vm_ref is not None:
                _, domain = self._domain(vm_ref)
                disk = self._attached(self._xml(domain), path)
                if disk is None:
                    raise HypervisorError(f"VM {vm_ref} has no disk {location}")
                if domain.isActive():
                    domain.blockResize(_target(disk), size_bytes,
                                       libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                    self._refresh(pool)
                    return new_operation(what)
            self._qemu_img("resize", "-q", "-f", "qcow2", str(path), str(size_bytes),
                           what=what)
            self._refresh(pool)
            return new_operation(what)

        return await self.call(resize)

    async def delete_volume(self, location: str, pool_ref: str) -> str | None:
        def delete() -> str | None:
            pool, path, _ = self._resolve(location)
            if pool.UUIDString() != pool_ref:
                raise HypervisorError(f"{location} is not on pool {pool_ref}")
            if not path.exists():
                return None
            for host in self._hosts.values():
                for domain in host.conn().listAllDomains(0):
                    with contextlib.suppress(libvirt.libvirtError):
                        if self._attached(self._xml(domain, inactive=True), path) is not None:
                            raise HypervisorError(f"deleting {location}: it is attached to "
                                                  f"{domain.name()}", fault="FileLocked")
            if not self._delete_file(path):
                return None
            return new_operation(f"deleting {location}")

        return await self.call(delete)


def guest_files(folder: Path) -> dict[str, Path]:
    """The demo guest built by tools/guest/build.sh in ``folder``: kernel, initrd, root."""
    files = {"kernel": folder / "vmlinuz", "initrd": folder / "initrd.img",
             "root": folder / "root.qcow2"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise HypervisorError(f"the guest image is missing ({', '.join(missing)}): "
                              "run `make install`")
    return files


def default_guest_folder() -> Path:
    """Where `make install` builds the guest: beside this Python's environment."""
    import sys

    return Path(sys.prefix) / "share" / "snapdeploy-guest"


def guest_domain_xml(name: str, disk: Path, *, guest: Path | None = None,
                     memory_mb: int = 256, cpus: int = 1,
                     networks: list[str] | None = None) -> str:
    """A domain that boots the demo guest from ``disk`` (a copy of its root.qcow2), with a
    NIC on each named network and its serial console logged (``CONSOLE_LOG``)."""
    files = guest_files(guest or default_guest_folder())
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mb)
    ET.SubElement(domain, "vcpu").text = str(cpus)
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_element, "kernel").text = str(files["kernel"])
    ET.SubElement(os_element, "initrd").text = str(files["initrd"])
    ET.SubElement(os_element, "cmdline").text = GUEST_CMDLINE
    features = ET.SubElement(domain, "features")  # ACPI: disks are plugged in and out live
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    devices = ET.SubElement(domain, "devices")
    devices.append(LibvirtHypervisor._disk_element(disk, "vda"))
    for position, network in enumerate(networks or []):
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network=network)
        ET.SubElement(nic, "model", type="virtio")
        ET.SubElement(nic, "alias", name=f"{_NIC_ALIAS}{position}")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    _console_to_log(domain, name)
    return ET.tostring(domain, encoding="unicode")
