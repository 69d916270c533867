"""An in-memory hypervisor that keeps every promise of ``shared.drivers.base.Hypervisor``.

For tests that run handlers in-process: ``FakeHypervisor.standard()`` holds one datacenter
with two hosts, one pool both reach, a standard and a distributed network and one running
VM; ``fail()`` makes the next call of a method (or a clone step) fail, transiently or not.
Several fakes stand for several hypervisors at once (zones of different kinds): each gets
its own datacenter and a prefix for its refs, and may be of ``OTHER_KIND``.
The same contract suite checks it and the vSphere driver (tests/contract/test_driver_contract.py).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.config import Settings
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
    HypervisorError,
    Inventory,
    NetworkInfo,
    NicInfo,
    PoolInfo,
    Seeded,
    SnapshotInfo,
    VmInfo,
)

BASE_SNAPSHOT = "snapdeploy-base"


def volume_location(pool_name: str, volume_id: str) -> str:
    return f"[{pool_name}] volumes/{volume_id}.disk"


def _next_number(keys: Iterable[str]) -> int:
    """One more than the highest number ending the keys (``disk0``, ``nic3``), from 0."""
    return max((int(k.lstrip("abcdefghijklmnopqrstuvwxyz")) + 1 for k in keys), default=0)


def network_uri(network: NetworkInfo) -> str:
    return f"fake://{network.binding or network.ref}"


def connections(settings: Settings) -> list[Connection]:
    """None: no setting names the fake; tests make their sessions themselves."""
    del settings
    return []


KIND = DriverKind(
    name="fake", hypervisor="Fake", manager="the fake hypervisor", template_format="RAW",
    pool_type="Filesystem", full_clone_setting="fake.create.full.clone",
    volume_location=volume_location, network_uri=network_uri, connections=connections)


def _other_volume_location(pool_name: str, volume_id: str) -> str:
    return f"[{pool_name}] other/{volume_id}.qcow2"


def _other_network_uri(network: NetworkInfo) -> str:
    return f"fake2://{network.name}"


# A second kind of fake hypervisor, with facts of its own, for a deployment with zones of
# two kinds.
OTHER_KIND = DriverKind(
    name="fake2", hypervisor="Fake2", manager="the second fake hypervisor",
    template_format="QCOW2", pool_type="NetworkFilesystem",
    full_clone_setting="fake2.create.full.clone", volume_location=_other_volume_location,
    network_uri=_other_network_uri, connections=connections)


@dataclass
class _Snapshot:
    ref: str
    name: str
    description: str
    created: datetime
    memory: bool
    parent_ref: str | None
    cpu_number: int
    memory_mb: int
    disks: list[DiskInfo]
    nics: list[NicInfo]


@dataclass
class _Vm:
    ref: str
    name: str
    host_ref: str | None
    cpu_number: int
    memory_mb: int
    powered_on: bool = False
    template: bool = False
    disks: list[DiskInfo] = field(default_factory=list)
    nics: list[NicInfo] = field(default_factory=list)
    snapshots: dict[str, _Snapshot] = field(default_factory=dict)
    current_snapshot_ref: str | None = None


class FakeHypervisor:
    """One datacenter in memory. Every object, disk file and operation is in plain dicts
    (``vms``, ``files``: location -> size), open for tests to look at."""

    def __init__(self, datacenter: str = "DC0", *, datacenter_ref: str = "datacenter-1",
                 ref_prefix: str = "", kind: DriverKind = KIND) -> None:
        self.kind = kind
        self.datacenter = datacenter
        self.datacenter_ref = datacenter_ref
        self.ref_prefix = ref_prefix
        self.hosts: dict[str, HostInfo] = {}
        self.pools: dict[str, PoolInfo] = {}
        self.networks: dict[str, NetworkInfo] = {}
        self.vms: dict[str, _Vm] = {}
        self.files: dict[str, int] = {}
        self.operations: list[tuple[str, str]] = []  # (operation id, what it did)
        self.closed = False
        self._faults: dict[str, list[bool]] = {}  # method or clone step -> transient, queued
        self._ids = itertools.count(1)

    @classmethod
    def standard(cls, datacenter: str = "DC0", *, datacenter_ref: str = "datacenter-1",
                 ref_prefix: str = "", kind: DriverKind = KIND) -> FakeHypervisor:
        """The standard world; another datacenter with another ``ref_prefix`` (its refs
        all start with it) is a second hypervisor beside the first."""
        fake = cls(datacenter, datacenter_ref=datacenter_ref, ref_prefix=ref_prefix,
                   kind=kind)
        p = ref_prefix
        fake.add_pool(f"{p}pool-1", f"{p}pool0", 2**40)
        fake.add_host(f"{p}host-1", f"{p}host0", [f"{p}pool-1"])
        fake.add_host(f"{p}host-2", f"{p}host1", [f"{p}pool-1"])
        fake.add_network(f"{p}network-1", "VM Network")
        fake.add_network(f"{p}dvportgroup-1", "DVPG0",
                         binding=f"{p}switch-1/{p}dvportgroup-1")
        fake.add_vm(f"{p}vm0", f"{p}host-1", f"{p}pool-1", [f"{p}network-1"], powered_on=True)
        return fake

    # ---- setting up and failing ---------------------------------------------------------

    def add_pool(self, ref: str, name: str, capacity_bytes: int) -> None:
        self.pools[ref] = PoolInfo(ref, name, f"fake://{name}/", capacity_bytes, capacity_bytes,
                                   [])

    def add_host(self, ref: str, name: str, pool_refs: list[str], *, cpu_cores: int = 8,
                 cpu_mhz: int = 2400, memory_bytes: int = 64 * 2**30) -> None:
        self.hosts[ref] = HostInfo(ref, name, "cluster0", cpu_cores, cpu_mhz, memory_bytes,
                                   sorted(pool_refs))
        for pool_ref in pool_refs:
            pool = self.pools[pool_ref]
            self.pools[pool_ref] = PoolInfo(pool.ref, pool.name, pool.url, pool.capacity_bytes,
                                            pool.free_bytes, sorted([*pool.host_refs, ref]))

    def add_network(self, ref: str, name: str, *, binding: str | None = None) -> None:
        self.networks[ref] = NetworkInfo(ref, name, binding)

    def add_vm(self, name: str, host_ref: str, pool_ref: str, network_refs: list[str], *,
               disk_bytes: int = 2**30, powered_on: bool = False) -> str:
        """A VM with a root disk on ``pool_ref`` and a NIC on each network."""
        ref = self._new_ref("vm")
        vm = _Vm(ref, name, host_ref, 1, 256, powered_on=powered_on)
        vm.disks = [self._new_disk(vm, f"[{self.pools[pool_ref].name}] {name}/{name}.disk",
                                   pool_ref, disk_bytes)]
        vm.nics = [self._new_nic(vm, n) for n in network_refs]
        self.vms[ref] = vm
        return ref

    def fail(self, what: str, *, transient: bool = False, times: int = 1) -> None:
        """The next ``times`` calls of method ``what`` (or clone step ``clone``,
        ``reconfigure``, ``power-on``) fail; transient ones as if unanswered."""
        self._faults.setdefault(what, []).extend([transient] * times)

    def _maybe_fail(self, what: str) -> None:
        if self.closed:
            raise HypervisorError("the fake hypervisor's session is closed")
        queued = self._faults.get(what)
        if queued:
            transient = queued.pop(0)
            raise HypervisorError(f"{what}: injected {'no answer' if transient else 'refusal'}",
                                  transient=transient, fault="Injected")

    # ---- helpers ------------------------------------------------------------------------

    def _new_ref(self, kind: str) -> str:
        return f"{self.ref_prefix}{kind}-{next(self._ids)}"

    def _operation(self, what: str) -> str:
        operation = self._new_ref("op")
        self.operations.append((operation, what))
        return operation

    def _new_disk(self, vm: _Vm, location: str, pool_ref: str, size: int) -> DiskInfo:
        # Keys that are not numbers, as a driver other than vSphere's may make them.
        key = f"disk{_next_number(d.key for d in vm.disks)}"
        self.files[location] = size
        return DiskInfo(key, location, pool_ref, size)

    def _new_nic(self, vm: _Vm, network_ref: str) -> NicInfo:
        if network_ref not in self.networks:
            raise HypervisorError(f"network {network_ref} does not exist")
        number = _next_number(n.key for n in vm.nics)
        return NicInfo(f"nic{number}", network_ref,
                       f"00:50:56:00:{next(self._ids) % 256:02x}:{number % 256:02x}")

    def _vm(self, ref: str) -> _Vm:
        vm = self.vms.get(ref)
        if vm is None:
            raise HypervisorError(f"VM {ref} does not exist", fault="ManagedObjectNotFound")
        return vm

    def _snapshot(self, ref: str) -> tuple[_Vm, _Snapshot]:
        for vm in self.vms.values():
            if ref in vm.snapshots:
                return vm, vm.snapshots[ref]
        raise HypervisorError(f"snapshot {ref} does not exist", fault="ManagedObjectNotFound")

    def _pool_of(self, location: str) -> str:
        name = location[1:].split("]", 1)[0] if location.startswith("[") else ""
        for pool in self.pools.values():
            if pool.name == name:
                return pool.ref
        raise HypervisorError(f"no pool holds {location}", fault="FileNotFound")

    def _find(self, name: str) -> str | None:
        return next((ref for ref, vm in self.vms.items() if vm.name == name), None)

    def _destroy(self, ref: str) -> str | None:
        vm = self.vms.pop(ref, None)
        if vm is None:
            return None
        for disk in vm.disks:
            self.files.pop(disk.path, None)
        return self._operation(f"destroy {ref}")

    @staticmethod
    def _info(snapshot: _Snapshot) -> SnapshotInfo:
        return SnapshotInfo(snapshot.ref, snapshot.name, snapshot.description, snapshot.created,
                            snapshot.memory, snapshot.parent_ref, snapshot.cpu_number,
                            snapshot.memory_mb, list(snapshot.disks), list(snapshot.nics))

    # ---- the session ----------------------------------------------------------------------

    async def check_session(self) -> None:
        self._maybe_fail("check_session")

    async def close(self) -> None:
        self.closed = True

    async def datacenters(self) -> list[str]:
        self._maybe_fail("datacenters")
        return [self.datacenter]

    async def inventory(self) -> list[Inventory]:
        self._maybe_fail("inventory")
        vms = [VmInfo(vm.ref, vm.name, f"uuid-{vm.ref}", vm.template, vm.host_ref,
                      vm.cpu_number, vm.memory_mb, vm.powered_on, list(vm.disks),
                      list(vm.nics), [self._info(s) for s in vm.snapshots.values()],
                      vm.current_snapshot_ref) for vm in self.vms.values()]
        return [Inventory(self.datacenter_ref, self.datacenter, list(self.hosts.values()),
                          list(self.pools.values()), list(self.networks.values()), vms)]

    # ---- templates and clones -------------------------------------------------------------

    async def seed_template(self, vm_ref: str, snapshot_ref: str, pool_ref: str,
                            name: str) -> Seeded:
        self._maybe_fail("seed_template")
        existing = self._find(name)
        if existing is not None:
            found = self.vms[existing]
            if found.template and found.snapshots:
                base = next(iter(found.snapshots))
                return Seeded(existing, base, found.disks[0].path, [])
            self._destroy(existing)  # a seed interrupted half-way: start again
        source, snapshot = self._snapshot(snapshot_ref)
        if source.ref != vm_ref:
            raise HypervisorError(f"snapshot {snapshot_ref} is not one of VM {vm_ref}")
        if pool_ref not in self.pools:
            raise HypervisorError(f"pool {pool_ref} does not exist")
        template = _Vm(self._new_ref("vm"), name, None, snapshot.cpu_number, snapshot.memory_mb)
        root = snapshot.disks[0]
        template.disks = [self._new_disk(template, f"[{self.pools[pool_ref].name}] {name}/"
                                         f"{name}.disk", pool_ref, root.size_bytes)]
        self.vms[template.ref] = template
        cloned = self._operation(f"full clone of {snapshot_ref} to {name}")
        base, snapped = await self.create_snapshot(template.ref, BASE_SNAPSHOT,
                                                   "base of linked clones", False, False)
        template.template = True
        return Seeded(template.ref, base, template.disks[0].path, [cloned, snapped])

    async def clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        self._maybe_fail("clone")
        template = self._vm(request.template_ref)
        if request.host_ref not in self.hosts or request.pool_ref not in self.pools:
            raise HypervisorError(f"host {request.host_ref} or pool {request.pool_ref} "
                                  "does not exist")
        leftover = self._find(request.name)
        if leftover is not None:
            self._destroy(leftover)  # an earlier attempt died half-way: start again
        self._maybe_fail(CLONE)
        vm = _Vm(self._new_ref("vm"), request.name, request.host_ref, template.cpu_number,
                 template.memory_mb)
        pool = self.pools[request.pool_ref].name
        vm.disks = [self._new_disk(vm, f"[{pool}] {request.name}/{request.name}.disk",
                                   request.pool_ref, d.size_bytes) for d in template.disks]
        self.vms[vm.ref] = vm
        progress.vm_ref = vm.ref
        progress.operations[CLONE] = self._operation(f"clone of {request.name}")
        self._maybe_fail(RECONFIGURE)
        vm.cpu_number, vm.memory_mb = request.cpu_number, request.memory_mb
        vm.nics = []
        for binding in request.networks:
            vm.nics.append(self._new_nic(vm, binding.ref))
        progress.operations[RECONFIGURE] = self._operation(f"reconfigure of {request.name}")
        progress.nics = list(vm.nics)
        progress.root_disk = vm.disks[0] if vm.disks else None
        self._maybe_fail(POWER_ON)
        vm.powered_on = True
        progress.operations[POWER_ON] = self._operation(f"power-on of {request.name}")

    async def find_vm(self, name: str) -> str | None:
        self._maybe_fail("find_vm")
        return self._find(name)

    async def destroy_vm(self, ref: str) -> str | None:
        self._maybe_fail("destroy_vm")
        return self._destroy(ref)

    # ---- power ------------------------------------------------------------------------------

    async def power_off(self, ref: str) -> str | None:
        self._maybe_fail("power_off")
        vm = self._vm(ref)
        if not vm.powered_on:
            return None
        vm.powered_on = False
        return self._operation(f"power-off of {ref}")

    async def reconfigure(self, vm_ref: str, cpu_number: int, memory_mb: int) -> str | None:
        self._maybe_fail("reconfigure")
        vm = self._vm(vm_ref)
        if vm.powered_on:
            raise HypervisorError(f"VM {vm_ref} is powered on; its CPUs and memory change "
                                  "while it is off")
        if (vm.cpu_number, vm.memory_mb) == (cpu_number, memory_mb):
            return None
        vm.cpu_number, vm.memory_mb = cpu_number, memory_mb
        return self._operation(f"reconfigure of {vm_ref}: {cpu_number} CPUs, {memory_mb} MiB")

    async def power_on(self, ref: str) -> str | None:
        self._maybe_fail("power_on")
        vm = self._vm(ref)
        if vm.powered_on:
            return None
        vm.powered_on = True
        return self._operation(f"power-on of {ref}")

    async def reboot(self, ref: str) -> str:
        self._maybe_fail("reboot")
        self._vm(ref).powered_on = True
        return self._operation(f"reset of {ref}")

    async def vm_powered_on(self, vm_ref: str) -> bool:
        self._maybe_fail("vm_powered_on")
        return self._vm(vm_ref).powered_on

    # ---- snapshots --------------------------------------------------------------------------

    async def create_snapshot(self, vm_ref: str, name: str, description: str, memory: bool,
                              quiesce: bool) -> tuple[str, str]:
        self._maybe_fail("create_snapshot")
        vm = self._vm(vm_ref)
        snapshot = _Snapshot(self._new_ref("snapshot"), name, description, datetime.now(UTC),
                             memory and vm.powered_on, vm.current_snapshot_ref, vm.cpu_number,
                             vm.memory_mb, copy.copy(vm.disks), copy.copy(vm.nics))
        vm.snapshots[snapshot.ref] = snapshot
        vm.current_snapshot_ref = snapshot.ref
        return snapshot.ref, self._operation(f"snapshot {name!r} of {vm_ref}")

    async def snapshot_info(self, vm_ref: str, snapshot_ref: str) -> SnapshotInfo:
        self._maybe_fail("snapshot_info")
        snapshot = self._vm(vm_ref).snapshots.get(snapshot_ref)
        if snapshot is None:
            raise HypervisorError(f"snapshot {snapshot_ref} not found on {vm_ref}")
        return self._info(snapshot)

    async def remove_snapshot(self, snapshot_ref: str) -> str:
        self._maybe_fail("remove_snapshot")
        vm, snapshot = self._snapshot(snapshot_ref)
        del vm.snapshots[snapshot_ref]
        for child in vm.snapshots.values():
            if child.parent_ref == snapshot_ref:
                child.parent_ref = snapshot.parent_ref
        if vm.current_snapshot_ref == snapshot_ref:
            vm.current_snapshot_ref = snapshot.parent_ref
        return self._operation(f"removal of snapshot {snapshot_ref}")

    async def revert_snapshot(self, snapshot_ref: str) -> str:
        self._maybe_fail("revert_snapshot")
        vm, snapshot = self._snapshot(snapshot_ref)
        vm.cpu_number, vm.memory_mb = snapshot.cpu_number, snapshot.memory_mb
        vm.powered_on = snapshot.memory
        vm.current_snapshot_ref = snapshot_ref
        return self._operation(f"revert to snapshot {snapshot_ref}")

    # ---- volumes ------------------------------------------------------------------------------

    def _attached(self, vm: _Vm, location: str) -> DiskInfo | None:
        return next((d for d in vm.disks if d.path == location), None)

    async def copy_volume(self, source: str, pool_ref: str, dest: str) -> str:
        self._maybe_fail("copy_volume")
        if pool_ref not in self.pools:
            raise HypervisorError(f"pool {pool_ref} does not exist")
        if source not in self.files:
            raise HypervisorError(f"copy of {source}: no such disk", fault="FileNotFound")
        if dest in self.files:
            raise HypervisorError(f"copy to {dest}: it exists", fault="FileAlreadyExists")
        self.files[dest] = self.files[source]
        return self._operation(f"copy of {source} to {dest}")

    async def attach_volume(self, vm_ref: str, location: str, *,
                            create_bytes: int | None = None) -> tuple[str, str | None]:
        self._maybe_fail("attach_volume")
        vm = self._vm(vm_ref)
        there = self._attached(vm, location)
        if there is not None:
            return there.key, None
        if create_bytes:
            if location in self.files:
                raise HypervisorError(f"creating {location}: it exists",
                                      fault="FileAlreadyExists")
            disk = self._new_disk(vm, location, self._pool_of(location), create_bytes)
        elif location in self.files:
            disk = self._new_disk(vm, location, self._pool_of(location), self.files[location])
        else:
            raise HypervisorError(f"attaching {location} to {vm_ref}: no such disk",
                                  fault="FileNotFound")
        vm.disks.append(disk)
        return disk.key, self._operation(f"attaching {location} to {vm_ref}")

    async def detach_volume(self, vm_ref: str, location: str, *,
                            missing_ok: bool = False) -> str | None:
        self._maybe_fail("detach_volume")
        vm = self._vm(vm_ref)
        disk = self._attached(vm, location)
        if disk is None:
            if missing_ok:
                return None
            raise HypervisorError(f"VM {vm_ref} has no disk {location}")
        vm.disks.remove(disk)
        return self._operation(f"detach of {location} from {vm_ref}")

    async def resize_volume(self, vm_ref: str | None, location: str, size_bytes: int,
                            pool_ref: str) -> str:
        self._maybe_fail("resize_volume")
        size = self.files.get(location)
        if size is None:
            raise HypervisorError(f"resize of {location}: no such disk", fault="FileNotFound")
        if size_bytes < size:
            raise HypervisorError(f"resize of {location}: disks only grow",
                                  fault="InvalidArgument")
        if vm_ref is not None:
            vm = self._vm(vm_ref)
            disk = self._attached(vm, location)
            if disk is None:
                raise HypervisorError(f"VM {vm_ref} has no disk {location}")
            vm.disks[vm.disks.index(disk)] = DiskInfo(disk.key, disk.path,
                                                      disk.pool_ref, size_bytes)
        self.files[location] = size_bytes
        return self._operation(f"resize of {location}")

    async def delete_volume(self, location: str, pool_ref: str) -> str | None:
        self._maybe_fail("delete_volume")
        if location not in self.files:
            return None
        if any(self._attached(vm, location) for vm in self.vms.values()):
            raise HypervisorError(f"deleting {location}: it is attached to a VM",
                                  fault="FileLocked")
        del self.files[location]
        return self._operation(f"deleting {location}")
