"""A virtual machine's life, in CloudStack's state names."""

from __future__ import annotations

from enum import StrEnum

from proto.events import (
    AnyEvent,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmExpunged,
    VmPlaced,
    VmStarted,
    VmStopped,
)


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
        case VmStopped():
            return VmState.STOPPED
        case VmDestroyed():
            return VmState.DESTROYED
        case VmExpunged():
            return VmState.EXPUNGING
    return None
