"""listEvents: the audit trail in CloudStack's event shape."""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.api import Caller, Context, Params, command, cs_time, listing

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


@command("listEvents")
async def list_events(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    page = params.page() or (500, 0)
    wanted = params.text("type")
    args: list[object] = [list(_SHOWN)]
    where = ["type = ANY($1)"]
    if not caller.is_admin:
        args.append(caller.account_id)
        where.append(f"metadata ->> 'account_id' = ${len(args)}")
    args.extend(page)
    async with ctx.store.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT position, event_id, type, data, metadata, recorded_at FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY position DESC"
            f" LIMIT ${len(args) - 1} OFFSET ${len(args)}", *args)
    items = []
    for row in rows:
        cs_type, level = _SHOWN[row["type"]]
        if wanted is not None and wanted.upper() != cs_type:
            continue
        data = msgspec.json.decode(row["data"])
        meta = msgspec.json.decode(row["metadata"])
        items.append({
            "id": str(row["event_id"]), "type": cs_type, "level": level, "state": "Completed",
            "description": describe(row["type"], data), "username": meta.get("actor"),
            "account": meta.get("account_id"), "created": cs_time(row["recorded_at"]),
            "parentid": meta.get("causation_id"),
        })
    return listing("event", items)
