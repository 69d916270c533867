"""The read models' views rendered as the CloudStack API's response objects.

A zone's hypervisor facts (hypervisor name, template format, pool type, full-clone setting,
broadcast URIs) are its driver kind's, as its inventory import recorded it (``zone_kind``
on every view of something in a zone; ``shared.drivers.for_zone``)."""

from __future__ import annotations

from typing import Any

from services.gateway.api import cs_time
from shared.domain.job import CREATE_VM_SNAPSHOT_CMD, VM_COMMANDS, VOLUME_COMMANDS, JobStatus
from shared.drivers import for_zone
from shared.drivers.base import NetworkInfo
from shared.projections import read


def _drop_none(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if v is not None}


def vm(v: read.Vm) -> dict[str, Any]:
    return _drop_none({
        "id": v.id,
        "name": v.name,
        "displayname": v.display_name,
        "instancename": v.instance_name,
        "account": v.account_id,
        "zoneid": v.zone_id,
        "serviceofferingid": v.service_offering_id,
        "templateid": v.template_id,
        "vmsnapshotid": v.vm_snapshot_id,
        "hostid": v.host_id,
        "cpunumber": v.cpu_number,
        "cpuspeed": v.cpu_speed,
        "memory": v.memory_mb,
        "state": v.state,
        "created": cs_time(v.created),
        "hypervisor": for_zone(v.zone_kind).hypervisor,
        "errortext": v.error_text,
        "nic": [{"id": n.id, "networkid": n.network_id, "macaddress": n.mac,
                 "isdefault": i == 0} for i, n in enumerate(v.nics)],
    })


def job_result(job: read.Job, made: read.Vm | read.Volume | read.VmSnapshot | None
               ) -> dict[str, Any] | None:
    """A succeeded job's ``jobresult``: the object it made or changed, or ``success``."""
    if job.status != JobStatus.SUCCEEDED:
        return None
    if isinstance(made, read.Vm):
        return {"virtualmachine": vm(made)}
    if isinstance(made, read.Volume):
        return {"volume": volume(made)}
    if isinstance(made, read.VmSnapshot):
        return {"vmsnapshot": vm_snapshot(made)}
    if job.cmd in VM_COMMANDS or job.cmd in VOLUME_COMMANDS or job.cmd == CREATE_VM_SNAPSHOT_CMD:
        return None  # its object is gone
    return {"success": True}


def job(j: read.Job, result: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobid": j.id,
        "accountid": j.account_id,
        "userid": j.user_id,
        "cmd": j.cmd,
        "jobstatus": int(j.status),
        "jobprocstatus": 0,
        "jobresultcode": j.result_code,
        "jobresulttype": "object",
        "jobinstancetype": j.instance_type,
        "jobinstanceid": j.instance_id,
        "created": cs_time(j.created),
    }
    if j.completed is not None:
        out["completed"] = cs_time(j.completed)
    if j.status == JobStatus.FAILED:
        out["jobresult"] = {"errorcode": j.error_code, "errortext": j.error_text}
    elif result is not None:
        out["jobresult"] = result
    return out


def zone(z: read.Zone) -> dict[str, Any]:
    return {"id": z.id, "name": z.name, "networktype": "Advanced",
            "allocationstate": "Enabled", "localstorageenabled": False,
            "hypervisor": for_zone(z.zone_kind).hypervisor}


def host(h: read.Host) -> dict[str, Any]:
    return {
        "id": h.id, "name": h.name, "zoneid": h.zone_id, "type": "Routing",
        "hypervisor": for_zone(h.zone_kind).hypervisor, "state": h.state,
        "resourcestate": "Enabled",
        "clustername": h.cluster, "cpunumber": h.cpu_cores, "cpuspeed": h.cpu_mhz,
        "cpuallocated": h.reserved_cpu_mhz, "memorytotal": h.memory_bytes,
        "memoryallocated": h.reserved_memory_mb * 1024 * 1024,
        "storagepoolids": h.pool_ids,
    }


def pool(p: read.Pool) -> dict[str, Any]:
    driver = for_zone(p.zone_kind)
    return {
        "id": p.id, "name": p.name, "zoneid": p.zone_id, "state": p.state,
        "type": driver.pool_type, "scope": "CLUSTER" if len(p.host_ids) > 1 else "HOST",
        "path": p.url, "disksizetotal": p.capacity_bytes,
        "disksizeused": p.capacity_bytes - p.free_bytes, "hostids": p.host_ids,
        # CloudStack's field name for the setting, whichever driver's setting it is.
        "vmwarecreatefullclone": p.settings.get(driver.full_clone_setting, "false") == "true",
    }


def network(n: read.Network) -> dict[str, Any]:
    return {"id": n.id, "name": n.name, "displaytext": n.name,
            "zoneid": n.zone_id, "state": n.state, "type": "Shared",
            "traffictype": "Guest",
            "broadcasturi": for_zone(n.zone_kind).network_uri(NetworkInfo(
                n.ref, n.name, n.binding))}


def service_offering(o: read.ServiceOffering) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "displaytext": o.display_text,
            "cpunumber": o.cpu_number, "cpuspeed": o.cpu_speed, "memory": o.memory_mb,
            "created": cs_time(o.created)}


def disk_offering(o: read.DiskOffering) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "displaytext": o.display_text,
            "disksize": o.disk_size_gb, "created": cs_time(o.created)}


def template(t: read.Template) -> dict[str, Any]:
    return _drop_none({
        "id": t.id, "name": t.name,
        "displaytext": f"seeded from VM snapshot {t.vm_snapshot_id}",
        "zoneid": t.zone_id, "hypervisor": for_zone(t.zone_kind).hypervisor,
        "format": for_zone(t.zone_kind).template_format, "isready": True,
        "status": "Download Complete", "templatetype": "USER", "account": t.account_id,
        "created": cs_time(t.created), "vmsnapshotid": t.vm_snapshot_id,
        "storageid": t.pool_id, "installpath": t.install_path,
    })


def vm_snapshot(s: read.VmSnapshot) -> dict[str, Any]:
    return _drop_none({
        "id": s.id, "name": s.name, "displayname": s.name,
        "description": s.description, "virtualmachineid": s.vm_id,
        "parent": s.parent_id, "parentName": None, "current": s.current,
        "type": "DiskAndMemory" if s.memory else "Disk", "state": s.state,
        "created": cs_time(s.created), "account": s.account_id,
        "cpunumber": s.cpu_number, "memory": s.memory_mb,
    })


def volume(v: read.Volume) -> dict[str, Any]:
    return _drop_none({
        "id": v.id, "name": v.name, "type": v.volume_type,
        "size": v.size_bytes, "storageid": v.pool_id, "path": v.path,
        "virtualmachineid": v.vm_id, "templateid": v.template_id,
        "diskofferingid": v.disk_offering_id, "state": v.state,
        "account": v.account_id, "zoneid": v.zone_id,
        "created": cs_time(v.created),
    })


def account(a: read.Account) -> dict[str, Any]:
    return {
        "id": a.id, "name": a.name, "state": a.state,
        "accounttype": 1 if a.is_admin else 0,
        "roletype": "Admin" if a.is_admin else "User",
        "created": cs_time(a.created),
        "user": [{"id": u.id, "username": u.name, "accountid": a.id,
                  "account": a.name, "email": u.email,
                  "firstname": u.firstname, "lastname": u.lastname,
                  "state": u.state, "created": cs_time(u.created)} for u in a.users],
    }
