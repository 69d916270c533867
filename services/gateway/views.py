"""Read-model rows rendered as the CloudStack API's response objects."""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.api import cs_time
from shared.domain.job import JobStatus
from shared.drivers import for_zone
from shared.drivers.base import NetworkInfo


def _drop_none(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if v is not None}


def vm(row: dict[str, Any]) -> dict[str, Any]:
    nics = msgspec.json.decode(row["nics"])
    return _drop_none({
        "id": str(row["id"]),
        "name": row["name"],
        "displayname": row["display_name"],
        "instancename": row["instance_name"],
        "account": row["account_id"],
        "zoneid": row["zone_id"],
        "serviceofferingid": row["service_offering_id"],
        "templateid": row["template_id"],
        "vmsnapshotid": row["vm_snapshot_id"],
        "hostid": row["host_id"],
        "cpunumber": row["cpu_number"],
        "cpuspeed": row["cpu_speed"],
        "memory": row["memory_mb"],
        "state": row["state"],
        "created": cs_time(row["created"]),
        "hypervisor": for_zone(row["zone_id"]).hypervisor,
        "errortext": row["error_text"],
        "nic": [{"id": n["nic_id"], "networkid": n["network_id"], "macaddress": n["mac"],
                 "isdefault": i == 0} for i, n in enumerate(nics)],
    })


def job(row: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
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


def zone(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "networktype": "Advanced",
            "allocationstate": "Enabled", "localstorageenabled": False}


def host(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    return {
        "id": row["id"], "name": row["name"], "zoneid": row["zone_id"], "type": "Routing",
        "hypervisor": for_zone(row["zone_id"]).hypervisor, "state": row["state"],
        "resourcestate": "Enabled",
        "clustername": d["cluster"], "cpunumber": d["cpu_cores"], "cpuspeed": d["cpu_mhz"],
        "cpuallocated": d.get("reserved_cpu_mhz", 0), "memorytotal": d["memory_bytes"],
        "memoryallocated": d.get("reserved_memory_mb", 0) * 1024 * 1024,
        "storagepoolids": d["pool_ids"],
    }


def pool(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    driver = for_zone(row["zone_id"])
    return {
        "id": row["id"], "name": row["name"], "zoneid": row["zone_id"], "state": row["state"],
        "type": driver.pool_type, "scope": "CLUSTER" if len(d["host_ids"]) > 1 else "HOST",
        "path": d["url"], "disksizetotal": d["capacity_bytes"],
        "disksizeused": d["capacity_bytes"] - d["free_bytes"], "hostids": d["host_ids"],
        # CloudStack's field name for the setting, whichever driver's setting it is.
        "vmwarecreatefullclone": d.get("settings", {}).get(driver.full_clone_setting,
                                                           "false") == "true",
    }


def network(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    return {"id": row["id"], "name": row["name"], "displaytext": row["name"],
            "zoneid": row["zone_id"], "state": row["state"], "type": "Shared",
            "traffictype": "Guest",
            "broadcasturi": for_zone(row["zone_id"]).network_uri(NetworkInfo(
                d["ref"], row["name"], d.get("switch_uuid"), d.get("portgroup_key")))}


def service_offering(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    return {"id": row["id"], "name": row["name"], "displaytext": d["display_text"],
            "cpunumber": d["cpu_number"], "cpuspeed": d["cpu_speed"], "memory": d["memory_mb"],
            "created": cs_time(row["created"])}


def disk_offering(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    return {"id": row["id"], "name": row["name"], "displaytext": d["display_text"],
            "disksize": d["disk_size_gb"], "created": cs_time(row["created"])}


def template(row: dict[str, Any], zone_id: str | None) -> dict[str, Any]:
    d = row["data"]
    return _drop_none({
        "id": row["id"], "name": row["name"],
        "displaytext": f"seeded from VM snapshot {d['vm_snapshot_id']}",
        "zoneid": zone_id, "hypervisor": for_zone(zone_id).hypervisor,
        "format": for_zone(zone_id).template_format, "isready": True,
        "status": "Download Complete", "templatetype": "USER", "account": row["account_id"],
        "created": cs_time(row["created"]), "vmsnapshotid": d["vm_snapshot_id"],
        "storageid": d["pool_id"], "installpath": d["install_path"],
    })


def vm_snapshot(row: dict[str, Any], current: bool) -> dict[str, Any]:
    d = row["data"]
    return _drop_none({
        "id": row["id"], "name": row["name"], "displayname": row["name"],
        "description": d["description"], "virtualmachineid": d["vm_id"],
        "parent": d["parent_id"], "parentName": None, "current": current,
        "type": "DiskAndMemory" if d["memory"] else "Disk", "state": row["state"],
        "created": cs_time(row["created"]), "account": row["account_id"],
        "cpunumber": d["cpu_number"], "memory": d["memory_mb"],
    })


def volume(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    return _drop_none({
        "id": row["id"], "name": row["name"], "type": d["volume_type"],
        "size": d["size_bytes"], "storageid": d["pool_id"], "path": d["path"],
        "virtualmachineid": d.get("vm_id"), "templateid": d.get("template_id"),
        "diskofferingid": d.get("disk_offering_id"), "state": row["state"],
        "account": row["account_id"], "zoneid": row["zone_id"],
        "created": cs_time(row["created"]),
    })
