"""A virtual machine's life, in CloudStack's state names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from proto.events import (
    AnyEvent,
    Event,
    JobCompleted,
    Nic,
    NicCreated,
    VmAssigned,
    VmCreated,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmDestroyRequested,
    VmExpunged,
    VmImported,
    VmPlaced,
    VmPowerRequested,
    VmRebooted,
    VmReconfigured,
    VmRecovered,
    VmReverted,
    VmServiceChanged,
    VmSnapshotRequested,
    VmSourceReady,
    VmStarted,
    VmStopped,
    VolumeCreated,
    legacy_key,
)
from proto.streams import stable_id
from shared.drivers.base import CLONE, RECONFIGURE, CloneProgress
from shared.errors import INTERNAL_ERROR, PARAM_ERROR, RESOURCE_IN_USE, ApiError

if TYPE_CHECKING:  # deploy's rules import this module's
    from shared.domain.deploy import HostView, OfferingView


class VmState(StrEnum):
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DESTROYED = "Destroyed"
    EXPUNGING = "Expunging"
    ERROR = "Error"


def state_after(event: AnyEvent) -> VmState | None:
    """The state a VM is in right after ``event`` (None: the event does not change it)."""
    if isinstance(event, VmReverted):
        return VmState.RUNNING if event.powered_on else VmState.STOPPED
    return _STATE_AFTER.get(type(event))


# Looked up by type: a rebuild asks this of every event of a VM's stream.
_STATE_AFTER: dict[type, VmState] = {
    VmDeployRequested: VmState.STARTING,
    VmPlaced: VmState.STARTING,
    VmStarted: VmState.RUNNING,
    VmDeployFailed: VmState.ERROR,
    VmStopped: VmState.STOPPED,
    VmRecovered: VmState.STOPPED,
    VmDestroyed: VmState.DESTROYED,
    VmExpunged: VmState.EXPUNGING,
}


_HOSTNAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


def valid_hostname(name: str) -> bool:
    """CloudStack's rule for VM names: a letter, then letters, digits or '-', 63 at most."""
    return bool(_HOSTNAME.match(name)) and not name.endswith("-")


def instance_name(vm_id: str, account_id: str) -> str:
    """The name the VM carries in vCenter, shown as ``instancename`` by the API."""
    return f"i-{account_id[:4]}-{vm_id[:8]}-VM"


def volume_id(vm_id: str, disk_key: str) -> str:
    """The id of a VM's disk (``DiskInfo.key``), the same whether the VM was imported or
    deployed. vSphere's keys are its device numbers as text, so the ids of volumes recorded
    when keys were numbers stay what they were."""
    return stable_id("volume", vm_id, disk_key)


def nic_id(vm_id: str, nic_key: str) -> str:
    """The id of a VM's NIC (``NicInfo.key``); like ``volume_id``."""
    return stable_id("nic", vm_id, nic_key)


def deploy_failure(request: VmDeployRequested, step: str, reason: str,
                   code: int = INTERNAL_ERROR) -> list[Event]:
    """The events that end a deploy in Error: the VM's and its job's."""
    text = f"deploy of VM {request.name} ({request.vm_id}) failed at {step}: {reason}"
    return [
        VmDeployFailed(vm_id=request.vm_id, step=step, reason=text, error_code=code),
        JobCompleted(job_id=request.job_id, succeeded=False, error_code=code, error_text=text),
    ]


def deploy_request(events: list[AnyEvent]) -> VmDeployRequested | None:
    """The request a VM stream starts with (None for an imported VM)."""
    return events[0] if events and isinstance(events[0], VmDeployRequested) else None


@dataclass(frozen=True)
class Vm:
    """A VM as its stream tells it: what the write side decides on."""

    id: str
    request: VmDeployRequested | None = None
    name: str = ""
    account_id: str | None = None
    zone_id: str | None = None
    ref: str | None = None
    host_id: str | None = None
    root_pool_id: str | None = None
    state: VmState | None = None
    expunged: bool = False
    template_id: str | None = None  # the template its root disk comes from, if known
    # Its compute offering and the CPUs and memory it gives (an imported VM: its own,
    # no offering); ``applied``: whether the hypervisor has them (a changed offering is
    # applied by the cloner, VmReconfigured).
    service_offering_id: str | None = None
    cpu_number: int = 0
    cpu_speed: int = 0
    memory_mb: int = 0
    applied: bool = True
    version: int = 0


def evolve(vm: Vm, event: AnyEvent) -> Vm:
    """The VM after one more event of its stream."""
    vm = replace(vm, version=vm.version + 1)
    match event:
        case VmDeployRequested():
            vm = replace(vm, request=event, name=event.name, account_id=event.account_id,
                         zone_id=event.zone_id, root_pool_id=event.pool_id,
                         template_id=event.root_template_id or event.template_id,
                         service_offering_id=event.service_offering_id,
                         cpu_number=event.cpu_number, cpu_speed=event.cpu_speed,
                         memory_mb=event.memory_mb)
        case VmServiceChanged():
            vm = replace(vm, service_offering_id=event.service_offering_id,
                         cpu_number=event.cpu_number, cpu_speed=event.cpu_speed,
                         memory_mb=event.memory_mb, applied=False)
        case VmReconfigured():
            vm = replace(vm, applied=True)
        case VmImported():
            vm = replace(vm, name=event.name, account_id=vm.account_id or event.account_id,
                         zone_id=event.zone_id, ref=event.ref, host_id=event.host_id,
                         root_pool_id=next((d.pool_id for d in event.disks if d.root), None),
                         template_id=event.template_id, expunged=False,
                         state=VmState.RUNNING if event.powered_on else VmState.STOPPED,
                         cpu_number=event.cpu_number, memory_mb=event.memory_mb)
        case VmPlaced():
            vm = replace(vm, host_id=event.host_id, root_pool_id=event.pool_id)
        case VmCreated():
            vm = replace(vm, ref=event.ref, host_id=event.host_id, root_pool_id=event.pool_id)
        case VmStarted():
            vm = replace(vm, ref=event.hypervisor_ref, host_id=event.host_id)
        case VmExpunged():
            vm = replace(vm, expunged=True)
        case VmAssigned():
            vm = replace(vm, account_id=event.account_id)
    state = state_after(event)
    return vm if state is None else replace(vm, state=state)


def fold(vm_id: str, events: Iterable[AnyEvent]) -> Vm:
    vm = Vm(vm_id)
    for event in events:
        vm = evolve(vm, event)
    return vm


def settled(history: Iterable[AnyEvent]) -> tuple[bool, bool]:
    """Whether a deploy is over (started, or failed), and whether it failed."""
    events = list(history)
    failed = any(isinstance(e, VmDeployFailed) for e in events)
    return failed or any(isinstance(e, VmStarted) for e in events), failed


@dataclass(frozen=True)
class Deployed:
    """A deploy done: the VM's events (created, its NICs, started, its job done) and its
    root volume's creation (None if the clone reported no root disk)."""

    vm_events: list[Event]
    root_volume: VolumeCreated | None


def deployed(request: VmDeployRequested, placed: VmPlaced, ready: VmSourceReady, linked: bool,
             progress: CloneProgress, stopped: bool = False) -> Deployed:
    """What a finished clone records, from what the clone reported in ``progress``;
    ``stopped``: powered off again after the clone, as ``startvm=false`` asks."""
    assert progress.vm_ref is not None
    cloned, reconfigured = progress.operations[CLONE], progress.operations[RECONFIGURE]
    events: list[Event] = [VmCreated(
        vm_id=request.vm_id, ref=progress.vm_ref, host_id=placed.host_id,
        pool_id=placed.pool_id, linked=linked, task_id=cloned)]
    for nic, network_id in zip(progress.nics, request.network_ids, strict=False):
        events.append(NicCreated(vm_id=request.vm_id, task_id=reconfigured, nic=Nic(
            nic_id=nic_id(request.vm_id, nic.key), network_id=network_id, mac=nic.mac,
            device_key=legacy_key(nic.key), key=nic.key)))
    events.append(VmStarted(vm_id=request.vm_id, host_id=placed.host_id,
                            hypervisor_ref=progress.vm_ref, task_ids=progress.operation_ids()))
    if stopped:
        events.append(VmStopped(vm_id=request.vm_id))
    events.append(JobCompleted(job_id=request.job_id, succeeded=True))
    root = progress.root_disk
    if root is None:
        return Deployed(events, None)
    root_id = volume_id(request.vm_id, root.key)
    return Deployed(events, VolumeCreated(
        volume_id=root_id, account_id=request.account_id, name=f"ROOT-{request.name}",
        volume_type="ROOT", pool_id=ready.pool_id, size_bytes=root.size_bytes, path=root.path,
        vm_id=request.vm_id, template_id=request.root_template_id,
        disk_offering_id=request.disk_offering_id or request.service_offering_id,
        device_key=legacy_key(root.key), key=root.key, task_id=cloned))


def powered(request: VmPowerRequested, vm: Vm, task: str | None) -> list[Event]:
    """What a stop, start or reboot done records (the job's success included)."""
    done: Event
    if request.action == "stop":
        done = VmStopped(vm_id=request.vm_id)
    elif request.action == "start":
        assert vm.ref is not None and vm.host_id is not None
        done = VmStarted(vm_id=request.vm_id, host_id=vm.host_id, hypervisor_ref=vm.ref,
                         task_ids=[task] if task else [])
    else:
        assert task is not None
        done = VmRebooted(vm_id=request.vm_id, task_id=task)
    return [done, JobCompleted(job_id=request.job_id, succeeded=True)]


def destroyed(request: VmDestroyRequested, volume_ids: Iterable[str],
              detached: Iterable[str]) -> list[Event]:
    """What a destroy done records: on expunge, the volumes that went with the VM (all of
    ``volume_ids`` but those ``detached`` first, which are kept)."""
    events: list[Event] = [VmDestroyed(vm_id=request.vm_id)]
    if request.expunge:
        kept = set(detached)
        events.append(VmExpunged(vm_id=request.vm_id,
                                 volume_ids=sorted(set(volume_ids) - kept)))
    events.append(JobCompleted(job_id=request.job_id, succeeded=True))
    return events


# What a VM must be in for a user's command on it (CloudStack's rules).
POWER_FROM: dict[str, tuple[VmState, ...]] = {
    "stop": (VmState.RUNNING,), "start": (VmState.STOPPED,), "reboot": (VmState.RUNNING,)}
SNAPSHOT_FROM = (VmState.RUNNING, VmState.STOPPED)
_DONE = {"stop": "stopped", "start": "started", "reboot": "rebooted"}


def check_power(vm: Vm, action: str) -> None:
    """Whether ``action`` (stop, start, reboot) may be asked of the VM now.

    Raises:
        ApiError: 536 naming the VM's state and the states that allow it.
    """
    allowed = POWER_FROM[action]
    if vm.state not in allowed:
        raise ApiError(RESOURCE_IN_USE, f"virtual machine {vm.id} is {vm.state}; it can be "
                       f"{_DONE[action]} when {' or '.join(allowed)}")


def check_destroy(vm: Vm, expunge: bool) -> None:
    """Whether the VM may be destroyed (and, with ``expunge``, removed) now.

    Raises:
        ApiError: 536 while it is still being deployed; 431 naming ``id`` if it is
            destroyed already and ``expunge`` is not asked for.
    """
    if vm.state == VmState.STARTING:
        raise ApiError(RESOURCE_IN_USE, f"virtual machine {vm.id} is still being deployed; "
                       "destroy it once it is Running or Error")
    if vm.state == VmState.DESTROYED and not expunge:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: virtual machine {vm.id} is "
                       "already destroyed; pass expunge=true to remove it")


def check_recover(vm: Vm) -> None:
    """Whether the VM may be recovered: only a destroyed one.

    Raises:
        ApiError: 431 naming ``id`` and the VM's state.
    """
    if vm.state != VmState.DESTROYED:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: virtual machine {vm.id} is "
                       f"{vm.state}, not Destroyed; only a destroyed VM can be recovered")


def check_snapshot(vm: Vm) -> None:
    """Whether a VM snapshot may be taken of the VM now.

    Raises:
        ApiError: 536 naming the VM's state.
    """
    if vm.state not in SNAPSHOT_FROM:
        raise ApiError(RESOURCE_IN_USE, f"virtual machine {vm.id} is {vm.state}; snapshots "
                       "are taken of Running or Stopped VMs")


def check_change_service(vm: Vm, offering_id: str, offering: OfferingView | None,
                         host: HostView | None) -> VmServiceChanged:
    """changeServiceForVirtualMachine's rule, as CloudStack's for a VM that cannot be scaled
    while it runs: only a Stopped VM, to an offering that exists and is not its own; the
    host it is placed on must have room for what the new offering adds (its reservation
    there is replaced). Reverting to a VM snapshot later brings back the offering the VM
    had when the snapshot was taken.

    Raises:
        ApiError: 536 unless the VM is Stopped; 431 naming ``serviceofferingid``.
    """
    if vm.state != VmState.STOPPED:
        raise ApiError(RESOURCE_IN_USE, f"virtual machine {vm.id} is {vm.state}; its "
                       "compute offering is changed while it is Stopped")
    if offering is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter serviceofferingid: no service "
                       f"offering {offering_id} exists")
    if offering.id == vm.service_offering_id:
        raise ApiError(PARAM_ERROR, f"invalid parameter serviceofferingid: virtual machine "
                       f"{vm.id} has compute offering {offering.name} already")
    if host is not None:
        held = host_reservation(vm)
        cpu_mhz = offering.cpu_number * offering.cpu_speed
        free_cpu, free_memory = host.cpu_mhz_free + held[0], host.memory_mb_free + held[1]
        if cpu_mhz > free_cpu or offering.memory_mb > free_memory:
            raise ApiError(PARAM_ERROR, f"invalid parameter serviceofferingid: host "
                           f"{host.name} has {free_cpu} MHz and {free_memory} MB for virtual "
                           f"machine {vm.id}; offering {offering.name} needs {cpu_mhz} MHz and "
                           f"{offering.memory_mb} MB")
    return VmServiceChanged(vm_id=vm.id, service_offering_id=offering.id,
                            cpu_number=offering.cpu_number, cpu_speed=offering.cpu_speed,
                            memory_mb=offering.memory_mb)


def host_reservation(vm: Vm) -> tuple[int, int]:
    """What the VM holds on its host: (CPU MHz, memory MB) of its offering."""
    return vm.cpu_number * vm.cpu_speed, vm.memory_mb


def as_of_snapshot(vm_id: str, events: Iterable[AnyEvent], snapshot_id: str) -> Vm | None:
    """The VM as its stream stood when the VM snapshot was asked for (None: not taken
    through the API, e.g. found by an inventory sync)."""
    vm = Vm(vm_id)
    for event in events:
        if isinstance(event, VmSnapshotRequested) and event.snapshot_id == snapshot_id:
            return vm
        vm = evolve(vm, event)
    return None
