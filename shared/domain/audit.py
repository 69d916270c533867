"""The audit trail in CloudStack's terms: which stored events listEvents shows, under which
of CloudStack's event types (``EventTypes``) and at which level.

Every stored event type is either shown (``SHOWN``) or deliberately not (``NOT_SHOWN``: a
request or a step whose outcome is shown by the event that completes it, bookkeeping of
capacity and addresses, or something CloudStack records no event for);
tests/unit/test_audit_rules.py checks that no event type is in neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

INFO, ERROR = "INFO", "ERROR"
LEVELS = (INFO, ERROR)

# stored event type -> (CloudStack's event type, level)
SHOWN: dict[str, tuple[str, str]] = {
    "VmDeployRequested": ("VM.CREATE", INFO),
    "VmCreated": ("VM.CREATE", INFO),
    "VmDeployFailed": ("VM.CREATE", ERROR),
    "NicCreated": ("NIC.CREATE", INFO),
    "VmStarted": ("VM.START", INFO),
    "VmStopped": ("VM.STOP", INFO),
    "VmRebooted": ("VM.REBOOT", INFO),
    "VmRecovered": ("VM.RECOVER", INFO),
    "VmDestroyed": ("VM.DESTROY", INFO),
    "VmExpunged": ("VM.EXPUNGE", INFO),
    "VmAssigned": ("VM.MOVE", INFO),
    "VmImported": ("VM.IMPORT", INFO),
    "VmServiceChanged": ("VM.UPGRADE", INFO),
    "VolumeCreated": ("VOLUME.CREATE", INFO),
    "VolumeAllocated": ("VOLUME.CREATE", INFO),
    "VolumeFailed": ("VOLUME.CREATE", ERROR),
    "VolumeDeleted": ("VOLUME.DELETE", INFO),
    "VolumeAttached": ("VOLUME.ATTACH", INFO),
    "VolumeDetached": ("VOLUME.DETACH", INFO),
    "VolumeResized": ("VOLUME.RESIZE", INFO),
    "TemplateSeeded": ("TEMPLATE.CREATE", INFO),
    "TemplateSeedFailed": ("TEMPLATE.CREATE", ERROR),
    "TemplateRemoved": ("TEMPLATE.DELETE", INFO),
    "VmSnapshotTaken": ("VMSNAPSHOT.CREATE", INFO),
    "VmSnapshotFailed": ("VMSNAPSHOT.CREATE", ERROR),
    "VmSnapshotDeleted": ("VMSNAPSHOT.DELETE", INFO),
    "VmReverted": ("VMSNAPSHOT.REVERTTOVMSNAPSHOT", INFO),
    "AccountCreated": ("ACCOUNT.CREATE", INFO),
    "AccountDeleted": ("ACCOUNT.DELETE", INFO),
    "UserCreated": ("USER.CREATE", INFO),
    "UserKeysRegistered": ("REGISTER.USER.KEY", INFO),
    "ResourceLimitUpdated": ("RESOURCE.LIMIT.UPDATE", INFO),
    "ServiceOfferingCreated": ("SERVICE.OFFERING.CREATE", INFO),
    "ServiceOfferingDeleted": ("SERVICE.OFFERING.DELETE", INFO),
    "DiskOfferingCreated": ("DISK.OFFERING.CREATE", INFO),
    "DiskOfferingDeleted": ("DISK.OFFERING.DELETE", INFO),
    "PoolSettingChanged": ("CONFIGURATION.VALUE.EDIT", INFO),
    "ZoneImported": ("ZONE.CREATE", INFO),
    "NetworkImported": ("NETWORK.CREATE", INFO),
    "NetworkRangeSet": ("NETWORK.UPDATE", INFO),
}

NOT_SHOWN = frozenset({
    # Jobs: their command's outcome is the event shown.
    "JobSubmitted", "JobCompleted",
    # Requests and steps the completing event shows.
    "VmPlaced", "VmSourceReady", "VmDestroyRequested", "VmPowerRequested",
    "VmSnapshotRequested", "VmSnapshotDeleteRequested", "VmRevertRequested",
    "VolumeFromSnapshotRequested", "VolumeDeleteRequested", "VolumeAttachRequested",
    "VolumeResizeRequested", "TemplateSeedStarted", "VmAwaitingTemplate",
    "InventorySyncRequested", "VmReconfigured",
    # Bookkeeping CloudStack records no event for.
    "CapacityReserved", "CapacityReleased", "AddressesAllocated", "AddressesReleased",
    "HostImported", "PoolImported", "InventoryObjectGone",
})

# The things an event's data may name, in the order the description names the first.
_SUBJECTS = ("vm_id", "volume_id", "template_id", "snapshot_id", "offering_id", "pool_id",
             "network_id", "account_id", "user_id", "zone_id")


def stored_types(cloudstack_type: str | None = None, level: str | None = None) -> list[str]:
    """The stored event types shown as ``cloudstack_type`` (any case) at ``level`` (any
    case); None: any."""
    return sorted(kind for kind, (shown, at) in SHOWN.items()
                  if (cloudstack_type is None or shown == cloudstack_type.upper())
                  and (level is None or at == level.upper()))


def types_matching(keyword: str) -> list[str]:
    """The stored event types whose CloudStack type holds ``keyword`` (any case)."""
    wanted = keyword.upper()
    return sorted(kind for kind, (shown, _) in SHOWN.items() if wanted in shown)


def describe(kind: str, data: dict[str, Any]) -> str:
    """What an event says happened: its type, the first thing it names, a failure's
    reason and the hypervisor operations that did it."""
    tasks: Iterable[str] = data.get("task_ids") or (
        [data["task_id"]] if data.get("task_id") else [])
    # A volume's event names the volume first (it also names its VM).
    subjects = ("volume_id", *_SUBJECTS) if kind.startswith("Volume") else _SUBJECTS
    subject = next((f"{k} {data[k]}" for k in subjects if data.get(k)), "")
    text = f"{kind} {subject}".strip()
    if data.get("reason"):
        text += f": {data['reason']}"
    tasks = list(tasks)
    if tasks:
        text += f" (hypervisor operations {', '.join(tasks)})"
    return text


def username(actor: str | None) -> str:
    """The user an actor names (``account/user``); ``system`` for a service or none."""
    if actor and "/" in actor:
        return actor.split("/", 1)[1]
    return "system"
