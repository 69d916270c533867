"""listEvents: the audit trail in CloudStack's event shape."""

from __future__ import annotations

from typing import Any

from services.gateway import schema
from services.gateway.api import (
    PAGING,
    Caller,
    Context,
    Param,
    Params,
    command,
    cs_time,
    listing,
)
from shared.projections.read import Paging

# event type -> (CloudStack event type, level, what to say)
_SHOWN: dict[str, tuple[str, str]] = {
    "VmDeployRequested": ("VM.CREATE", "INFO"),
    "VmCreated": ("VM.CREATE", "INFO"),
    "NicCreated": ("NIC.CREATE", "INFO"),
    "VmStarted": ("VM.START", "INFO"),
    "VmDeployFailed": ("VM.CREATE", "ERROR"),
    "VolumeCreated": ("VOLUME.CREATE", "INFO"),
    "TemplateSeeded": ("TEMPLATE.CREATE", "INFO"),
    "TemplateSeedFailed": ("TEMPLATE.CREATE", "ERROR"),
    "TemplateRemoved": ("TEMPLATE.DELETE", "INFO"),
    "VmSnapshotTaken": ("VMSNAPSHOT.CREATE", "INFO"),
    "VmSnapshotDeleted": ("VMSNAPSHOT.DELETE", "INFO"),
    "VmReverted": ("VMSNAPSHOT.REVERTTOVMSNAPSHOT", "INFO"),
    "VmDestroyed": ("VM.DESTROY", "INFO"),
    "VmExpunged": ("VM.EXPUNGE", "INFO"),
    "ServiceOfferingCreated": ("SERVICE.OFFERING.CREATE", "INFO"),
    "PoolSettingChanged": ("CONFIGURATION.VALUE.EDIT", "INFO"),
}


def describe(kind: str, data: dict[str, Any]) -> str:
    tasks = data.get("task_ids") or ([data["task_id"]] if data.get("task_id") else [])
    subject = next((f"{k} {data[k]}" for k in ("vm_id", "volume_id", "template_id",
                                               "snapshot_id", "offering_id", "pool_id")
                    if data.get(k)), "")
    text = f"{kind} {subject}".strip()
    if data.get("reason"):
        text += f": {data['reason']}"
    if tasks:
        text += f" (vCenter tasks {', '.join(tasks)})"
    return text


@command("listEvents", description="Lists the audit events of the caller's account (every "
         "account's for an admin), 500 at most unless paged.",
         response=schema.EVENT, params=(
             Param("type", "string", "only events of this CloudStack type (VM.CREATE, ...)"),
             *PAGING,
         ))
async def list_events(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    paging = params.page() or Paging(limit=500)
    wanted = params.text("type")
    types = [t for t, (cs_type, _) in _SHOWN.items()
             if wanted is None or wanted.upper() == cs_type]
    items = []
    for event in await ctx.read.audit_events(caller.viewer, types, paging):
        cs_type, level = _SHOWN[event.type]
        items.append({
            "id": event.id, "type": cs_type, "level": level, "state": "Completed",
            "description": describe(event.type, event.data), "username": event.actor,
            "account": event.account_id, "created": cs_time(event.recorded_at),
            "parentid": event.causation_id,
        })
    return listing("event", items)
