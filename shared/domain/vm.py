"""A virtual machine's life, in CloudStack's state names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from proto.events import (
    AnyEvent,
    Event,
    JobCompleted,
    VmAssigned,
    VmCreated,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmExpunged,
    VmImported,
    VmPlaced,
    VmRecovered,
    VmStarted,
    VmStopped,
)
from proto.streams import stable_id


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
    match event:
        case VmDeployRequested() | VmPlaced():
            return VmState.STARTING
        case VmStarted():
            return VmState.RUNNING
        case VmDeployFailed():
            return VmState.ERROR
        case VmStopped() | VmRecovered():
            return VmState.STOPPED
        case VmDestroyed():
            return VmState.DESTROYED
        case VmExpunged():
            return VmState.EXPUNGING
    return None


_HOSTNAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


def valid_hostname(name: str) -> bool:
    """CloudStack's rule for VM names: a letter, then letters, digits or '-', 63 at most."""
    return bool(_HOSTNAME.match(name)) and not name.endswith("-")


def instance_name(vm_id: str, account_id: str) -> str:
    """The name the VM carries in vCenter, shown as ``instancename`` by the API."""
    return f"i-{account_id[:4]}-{vm_id[:8]}-VM"


def volume_id(vm_id: str, device_key: int) -> str:
    """The id of a VM's disk, the same whether the VM was imported or deployed."""
    return stable_id("volume", vm_id, str(device_key))


def deploy_failure(request: VmDeployRequested, step: str, reason: str,
                   code: int = 530) -> list[Event]:
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
    account_id: str | None = None
    zone_id: str | None = None
    ref: str | None = None
    host_id: str | None = None
    root_pool_id: str | None = None
    state: VmState | None = None
    expunged: bool = False
    version: int = 0


def evolve(vm: Vm, event: AnyEvent) -> Vm:
    """The VM after one more event of its stream."""
    vm = replace(vm, version=vm.version + 1)
    match event:
        case VmDeployRequested():
            vm = replace(vm, request=event, account_id=event.account_id,
                         zone_id=event.zone_id, root_pool_id=event.pool_id)
        case VmImported():
            vm = replace(vm, account_id=vm.account_id or event.account_id,
                         zone_id=event.zone_id, ref=event.ref, host_id=event.host_id,
                         root_pool_id=next((d.pool_id for d in event.disks if d.root), None),
                         expunged=False,
                         state=VmState.RUNNING if event.powered_on else VmState.STOPPED)
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
