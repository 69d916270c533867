"""The read models' views rendered as the CloudStack API's response objects.

A zone's hypervisor facts (hypervisor name, template format, pool type, full-clone setting,
broadcast URIs) are its driver kind's, as its inventory import recorded it (``zone_kind``
on every view of something in a zone; ``shared.drivers.for_zone``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from services.gateway.api import cs_time
from shared.domain import network as _network
from shared.domain.accounts import (
    DEFAULT_OS_TYPE_ID,
    OS_TYPES,
    ROOT_DOMAIN,
    ROOT_DOMAIN_ID,
)
from shared.domain.job import CREATE_VM_SNAPSHOT_CMD, VM_COMMANDS, VOLUME_COMMANDS, JobStatus
from shared.drivers import for_zone
from shared.drivers.base import NetworkInfo
from shared.projections import read

# The names a response shows beside the ids it holds (``ReadModels.names``): id -> name.
Names = Mapping[str, str]
NO_NAMES: Names = {}

# The one network offering every guest network shows (CloudStack's shared networks').
NETWORK_OFFERING_ID = "6f0a5f4e-2d5c-5b0e-9d9c-0f3c1f0e5d01"
NETWORK_OFFERING = "DefaultSharedNetworkOffering"

DOMAIN = {"domainid": ROOT_DOMAIN_ID, "domain": ROOT_DOMAIN}


def _drop_none(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if v is not None}


def ids_of(*objects: Iterable[Any]) -> list[str]:
    """Every id a list of views refers to by a field ending in ``id`` (to look up their
    names once for the whole response)."""
    out: list[str] = []
    for group in objects:
        for obj in group:
            for name in ("account_id", "zone_id", "service_offering_id", "template_id",
                         "host_id", "pool_id", "vm_id", "disk_offering_id", "network_id"):
                value = getattr(obj, name, None)
                if isinstance(value, str):
                    out.append(value)
            out.extend(n.network_id for n in getattr(obj, "nics", []))
    return out


def _netmask(cidr: str | None) -> str | None:
    return None if cidr is None else str(ipaddress.IPv4Network(cidr).netmask)


def nic(n: read.Nic, vm_id: str, index: int, names: Names = NO_NAMES) -> dict[str, Any]:
    return _drop_none({
        "id": n.id, "networkid": n.network_id, "networkname": names.get(n.network_id),
        "macaddress": n.mac, "ipaddress": n.ip_address, "netmask": _netmask(n.cidr),
        "gateway": n.gateway, "isdefault": index == 0, "virtualmachineid": vm_id,
        "type": "Shared", "traffictype": "Guest", "deviceid": str(index),
    })


def vm(v: read.Vm, names: Names = NO_NAMES) -> dict[str, Any]:
    return _drop_none({
        "id": v.id,
        "name": v.name,
        "displayname": v.display_name,
        "instancename": v.instance_name,
        "account": names.get(v.account_id, v.account_id),
        "accountid": v.account_id,
        "userid": v.user_id,
        **DOMAIN,
        "zoneid": v.zone_id,
        "zonename": names.get(v.zone_id),
        "serviceofferingid": v.service_offering_id,
        "serviceofferingname": names.get(v.service_offering_id or ""),
        "templateid": v.template_id,
        "templatename": names.get(v.template_id or ""),
        "templatedisplaytext": names.get(v.template_id or ""),
        "vmsnapshotid": v.vm_snapshot_id,
        "hostid": v.host_id,
        "hostname": names.get(v.host_id or ""),
        "cpunumber": v.cpu_number,
        "cpuspeed": v.cpu_speed,
        "memory": v.memory_mb,
        "state": v.state,
        "created": cs_time(v.created),
        "hypervisor": for_zone(v.zone_kind).hypervisor,
        "guestosid": DEFAULT_OS_TYPE_ID,
        "ostypeid": DEFAULT_OS_TYPE_ID,
        "osdisplayname": OS_TYPES[DEFAULT_OS_TYPE_ID],
        "rootdeviceid": 0,
        "rootdevicetype": "ROOT",
        "passwordenabled": False,
        "haenable": False,
        "isdynamicallyscalable": False,
        "errortext": v.error_text,
        "ipaddress": next((n.ip_address for n in v.nics if n.ip_address), None),
        "nic": [nic(n, v.id, i, names) for i, n in enumerate(v.nics)],
        "securitygroup": [],
        "affinitygroup": [],
        "tags": [],
    })


def job_result(job: read.Job, made: read.Vm | read.Volume | read.VmSnapshot | None,
               names: Names = NO_NAMES) -> dict[str, Any] | None:
    """A succeeded job's ``jobresult``: the object it made or changed, or ``success``."""
    if job.status != JobStatus.SUCCEEDED:
        return None
    if isinstance(made, read.Vm):
        return {"virtualmachine": vm(made, names)}
    if isinstance(made, read.Volume):
        return {"volume": volume(made, names)}
    if isinstance(made, read.VmSnapshot):
        return {"vmsnapshot": vm_snapshot(made, names)}
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
    return {"id": z.id, "name": z.name, "displaytext": z.name, "networktype": "Advanced",
            "allocationstate": "Enabled", "localstorageenabled": False,
            "securitygroupsenabled": False, "hypervisor": for_zone(z.zone_kind).hypervisor,
            "tags": []}


def host(h: read.Host, names: Names = NO_NAMES) -> dict[str, Any]:
    return {
        "id": h.id, "name": h.name, "zoneid": h.zone_id,
        "zonename": names.get(h.zone_id or ""), "type": "Routing",
        "hypervisor": for_zone(h.zone_kind).hypervisor, "state": h.state,
        "resourcestate": "Enabled",
        "clustername": h.cluster, "cpunumber": h.cpu_cores, "cpuspeed": h.cpu_mhz,
        "cpuallocated": h.reserved_cpu_mhz, "memorytotal": h.memory_bytes,
        "memoryallocated": h.reserved_memory_mb * 1024 * 1024,
        "storagepoolids": h.pool_ids,
    }


def pool(p: read.Pool, names: Names = NO_NAMES) -> dict[str, Any]:
    driver = for_zone(p.zone_kind)
    return {
        "id": p.id, "name": p.name, "zoneid": p.zone_id,
        "zonename": names.get(p.zone_id or ""), "state": p.state,
        "type": driver.pool_type, "scope": "CLUSTER" if len(p.host_ids) > 1 else "HOST",
        "path": p.url, "disksizetotal": p.capacity_bytes,
        "disksizeused": p.capacity_bytes - p.free_bytes, "hostids": p.host_ids,
        # CloudStack's field name for the setting, whichever driver's setting it is.
        "vmwarecreatefullclone": p.settings.get(driver.full_clone_setting, "false") == "true",
    }


def network(n: read.Network, names: Names = NO_NAMES) -> dict[str, Any]:
    cidr, gateway = (n.cidr, n.gateway) if n.cidr and n.gateway else \
        _network.default_range(n.id)
    return {"id": n.id, "name": n.name, "displaytext": n.name,
            "zoneid": n.zone_id, "zonename": names.get(n.zone_id or ""), "state": n.state,
            "type": "Shared", "traffictype": "Guest", "guestiptype": "Shared",
            "networkofferingid": NETWORK_OFFERING_ID,
            "networkofferingname": NETWORK_OFFERING,
            "networkofferingdisplaytext": NETWORK_OFFERING,
            "networkofferingavailability": "Optional",
            "cidr": cidr, "gateway": gateway, "netmask": _netmask(cidr),
            "acltype": "Domain", **DOMAIN, "subdomainaccess": True,
            "issystem": False, "isdefault": False, "canusefordeploy": True,
            "restartrequired": False, "specifyipranges": True, "tags": [],
            "broadcasturi": for_zone(n.zone_kind).network_uri(NetworkInfo(
                n.ref, n.name, n.binding))}


def network_offering() -> dict[str, Any]:
    return {"id": NETWORK_OFFERING_ID, "name": NETWORK_OFFERING,
            "displaytext": NETWORK_OFFERING, "guestiptype": "Shared",
            "traffictype": "Guest", "state": "Enabled", "isdefault": True,
            "availability": "Optional", "specifyvlan": True, "specifyipranges": True,
            "forvpc": False, "conservemode": True, "serviceofferingid": None,
            "networkrate": -1, "service": []}


def service_offering(o: read.ServiceOffering) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "displaytext": o.display_text,
            "cpunumber": o.cpu_number, "cpuspeed": o.cpu_speed, "memory": o.memory_mb,
            "storagetype": "shared", "offerha": False, "limitcpuuse": False,
            "iscustomized": False, "issystem": False, "defaultuse": False,
            "isvolatile": False, "provisioningtype": "thin",
            "created": cs_time(o.created)}


def disk_offering(o: read.DiskOffering) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "displaytext": o.display_text,
            "disksize": o.disk_size_gb, "iscustomized": False, "storagetype": "shared",
            "provisioningtype": "thin", "displayoffering": True,
            "created": cs_time(o.created)}


def template(t: read.Template, names: Names = NO_NAMES) -> dict[str, Any]:
    return _drop_none({
        "id": t.id, "name": t.name,
        "displaytext": f"seeded from VM snapshot {t.vm_snapshot_id}",
        "zoneid": t.zone_id, "zonename": names.get(t.zone_id or ""),
        "hypervisor": for_zone(t.zone_kind).hypervisor,
        "format": for_zone(t.zone_kind).template_format, "isready": True,
        "status": "Download Complete", "templatetype": "USER",
        "account": names.get(t.account_id or "", t.account_id), "accountid": t.account_id,
        **DOMAIN, "ostypeid": DEFAULT_OS_TYPE_ID, "ostypename": OS_TYPES[DEFAULT_OS_TYPE_ID],
        "ispublic": False, "isfeatured": False, "isextractable": False,
        "passwordenabled": False, "sshkeyenabled": False, "crossZones": False,
        "isdynamicallyscalable": False, "bootable": True, "tags": [],
        "created": cs_time(t.created), "vmsnapshotid": t.vm_snapshot_id,
        "storageid": t.pool_id, "installpath": t.install_path,
    })


def vm_snapshot(s: read.VmSnapshot, names: Names = NO_NAMES) -> dict[str, Any]:
    return _drop_none({
        "id": s.id, "name": s.name, "displayname": s.name,
        "description": s.description, "virtualmachineid": s.vm_id,
        "virtualmachinename": names.get(s.vm_id),
        "parent": s.parent_id, "parentName": names.get(s.parent_id or ""),
        "current": s.current,
        "type": "DiskAndMemory" if s.memory else "Disk", "state": s.state,
        "created": cs_time(s.created), "account": names.get(s.account_id or "", s.account_id),
        "accountid": s.account_id, **DOMAIN,
        "cpunumber": s.cpu_number, "memory": s.memory_mb,
    })


def volume(v: read.Volume, names: Names = NO_NAMES) -> dict[str, Any]:
    return _drop_none({
        "id": v.id, "name": v.name, "type": v.volume_type,
        "size": v.size_bytes, "storageid": v.pool_id, "storage": names.get(v.pool_id or ""),
        "storagetype": "shared", "path": v.path,
        "virtualmachineid": v.vm_id, "vmname": names.get(v.vm_id or ""),
        "vmdisplayname": names.get(v.vm_id or ""),
        "deviceid": (0 if v.volume_type == "ROOT" else None) if v.vm_id else None,
        "templateid": v.template_id,
        "diskofferingid": v.disk_offering_id,
        "diskofferingname": names.get(v.disk_offering_id or ""), "state": v.state,
        "account": names.get(v.account_id or "", v.account_id), "accountid": v.account_id,
        **DOMAIN, "zoneid": v.zone_id, "zonename": names.get(v.zone_id or ""),
        "destroyed": v.state in ("Destroy", "Expunged"), "tags": [],
        "created": cs_time(v.created),
    })


def user(u: read.User, account_name: str, is_admin: bool) -> dict[str, Any]:
    return {"id": u.id, "username": u.name, "accountid": u.account_id,
            "account": account_name, "accounttype": 1 if is_admin else 0,
            "roletype": "Admin" if is_admin else "User", **DOMAIN, "email": u.email,
            "firstname": u.firstname, "lastname": u.lastname, "state": u.state,
            "created": cs_time(u.created)}


def account(a: read.Account) -> dict[str, Any]:
    return {
        "id": a.id, "name": a.name, "state": a.state,
        "accounttype": 1 if a.is_admin else 0,
        "roletype": "Admin" if a.is_admin else "User",
        "rolename": "Root Admin" if a.is_admin else "User",
        **DOMAIN, "created": cs_time(a.created),
        "user": [user(u, a.name, a.is_admin) for u in a.users],
    }


def domain() -> dict[str, Any]:
    return {"id": ROOT_DOMAIN_ID, "name": ROOT_DOMAIN, "level": 0, "path": ROOT_DOMAIN,
            "haschild": False, "state": "Active"}
