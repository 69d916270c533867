"""Read-model rows rendered as the CloudStack API's response objects."""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.api import Caller, cs_time
from shared.domain.job import JobStatus


def vm(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "name": row["name"],
        "displayname": row["display_name"],
        "instancename": row["instance_name"],
        "account": row["account_id"],
        "zoneid": row["zone_id"],
        "serviceofferingid": row["service_offering_id"],
        "state": row["state"],
        "created": cs_time(row["created"]),
        "hypervisor": "VMware",
        "nic": [{"networkid": n} for n in msgspec.json.decode(row["network_ids"])],
    }
    optional = {
        "templateid": row["template_id"],
        "vmsnapshotid": row["vm_snapshot_id"],
        "hostid": row["host_id"],
        "cpunumber": row["cpu_number"],
        "cpuspeed": row["cpu_speed"],
        "memory": row["memory_mb"],
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def job(row: dict[str, Any], caller: Caller, result: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobid": str(row["id"]),
        "accountid": row["account_id"],
        "userid": row["user_id"],
        "cmd": row["cmd"],
        "jobstatus": row["status"],
        "jobprocstatus": 0,
        "jobresultcode": row["result_code"],
        "jobresulttype": "object",
        "jobinstancetype": row["instance_type"],
        "jobinstanceid": str(row["instance_id"]),
        "created": cs_time(row["created"]),
    }
    if row["completed"] is not None:
        out["completed"] = cs_time(row["completed"])
    if row["status"] == JobStatus.FAILED:
        out["jobresult"] = {"errorcode": row["error_code"], "errortext": row["error_text"]}
    elif result is not None:
        out["jobresult"] = result
    return out
