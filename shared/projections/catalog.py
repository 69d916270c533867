"""catalog: the objects the API lists besides VMs, one row per (kind, id).

Kinds: zone, host, pool, network, serviceoffering, diskoffering, template, vmsnapshot,
volume. ``data`` holds each kind's own fields as JSON (a zone's ``driver_kind``, the kind of
hypervisor that holds it, is there when its import recorded one); ``version`` is the version of the
object's own stream (the planner appends capacity reservations at it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from proto import streams
from proto.events import (
    AccountCreated,
    AccountDeleted,
    AnyEvent,
    CapacityReleased,
    CapacityReserved,
    DiskOfferingCreated,
    DiskOfferingDeleted,
    HostImported,
    InventoryObjectGone,
    NetworkImported,
    NetworkRangeSet,
    PoolImported,
    PoolSettingChanged,
    ResourceLimitUpdated,
    ServiceOfferingCreated,
    ServiceOfferingDeleted,
    TemplateRemoved,
    TemplateSeeded,
    UserCreated,
    UserKeysRegistered,
    VmAssigned,
    VmExpunged,
    VmImported,
    VmSnapshotDeleted,
    VmSnapshotTaken,
    VolumeAllocated,
    VolumeAttached,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
    VolumeResized,
    ZoneImported,
)
from shared.projections._table import Key, Row, Table

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import RecordedEvent

_encode = msgspec.json.encode
_decode = msgspec.json.decode

READY = "Ready"
ALLOCATED = "Allocated"
DESTROY = "Destroy"
EXPUNGED = "Expunged"


def _fields(event: msgspec.Struct, *skip: str) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(event).items() if k not in ("type", *skip)}


def _one(kind: str, field: str) -> Callable[[Any], list[Key]]:
    return lambda event: [(kind, getattr(event, field))]


# The catalog rows each event type touches, looked up by type (a `match` over these classes
# cost more than the rest of a rebuild's per-event work).
_KEYS: dict[type, Callable[[Any], list[Key]]] = {
    ZoneImported: _one("zone", "zone_id"),
    **dict.fromkeys((HostImported, CapacityReserved, CapacityReleased), _one("host", "host_id")),
    **dict.fromkeys((PoolImported, PoolSettingChanged), _one("pool", "pool_id")),
    **dict.fromkeys((NetworkImported, NetworkRangeSet), _one("network", "network_id")),
    InventoryObjectGone: lambda e: [(e.kind, e.object_id)],
    **dict.fromkeys((ServiceOfferingCreated, ServiceOfferingDeleted),
                    _one("serviceoffering", "offering_id")),
    **dict.fromkeys((DiskOfferingCreated, DiskOfferingDeleted),
                    _one("diskoffering", "offering_id")),
    AccountDeleted: lambda e: [("account", e.account_id)] + [("user", u) for u in e.user_ids],
    **dict.fromkeys((TemplateSeeded, TemplateRemoved), lambda e: [
        ("template", streams.seed_template_id(e.vm_snapshot_id, e.pool_id))]),
    **dict.fromkeys((VmSnapshotTaken, VmSnapshotDeleted), _one("vmsnapshot", "snapshot_id")),
    VmImported: lambda e: [("volume", d.volume_id) for d in e.disks],
    **dict.fromkeys((AccountCreated, ResourceLimitUpdated), _one("account", "account_id")),
    **dict.fromkeys((UserCreated, UserKeysRegistered), _one("user", "user_id")),
    VmExpunged: lambda e: [("volume", v) for v in e.volume_ids],
    VmAssigned: lambda e: [("volume", v) for v in e.volume_ids]
    + [("vmsnapshot", s) for s in e.snapshot_ids],
    **dict.fromkeys((VolumeCreated, VolumeFromSnapshotRequested, VolumeFailed, VolumeAttached,
                     VolumeDetached, VolumeResized, VolumeAllocated, VolumeDeleteRequested,
                     VolumeDeleted), _one("volume", "volume_id")),
}


class Catalog:
    table = Table(
        "catalog",
        {
            "kind": "text",
            "id": "text",
            "zone_id": "text",
            "account_id": "text",
            "name": "text",
            "state": "text",
            "data": "jsonb",
            "version": "integer",
            "created": "timestamptz",
            "removed": "timestamptz",
        },
        ("kind", "id"),
    )

    def keys(self, event: AnyEvent) -> list[Key]:
        keys_of = _KEYS.get(type(event))
        return [] if keys_of is None else keys_of(event)

    def made_anew(self, event: AnyEvent) -> bool:
        return False  # a row made again keeps what its kind kept (its creation time)

    def evolve(
        self, row: Row | None, key: Key, recorded: RecordedEvent, event: AnyEvent
    ) -> Row | None:
        kind, obj_id = key
        data: dict[str, Any] = _decode(row["data"]) if row else {}
        fresh = row is None
        out: Row = dict(row) if row else {
            "kind": kind, "id": obj_id, "zone_id": None, "account_id": None, "name": obj_id,
            "state": READY, "created": recorded.recorded_at, "removed": None,
        }
        match event:
            case InventoryObjectGone():
                out.update(state="Removed", removed=recorded.recorded_at)
            case ZoneImported():
                out.update(zone_id=event.zone_id, name=event.name, removed=None)
                data.update(ref=event.ref)
                if event.driver_kind is not None:  # not recorded before: vCenter's
                    data.update(driver_kind=event.driver_kind)
            case HostImported():
                out.update(zone_id=event.zone_id, name=event.name, state="Up", removed=None)
                data.update(_fields(event, "host_id", "zone_id", "name"))
                data.setdefault("reservations", {})
            case CapacityReserved() | CapacityReleased():
                held = data.setdefault("reservations", {})
                if isinstance(event, CapacityReserved):
                    held[event.vm_id] = [event.cpu_mhz, event.memory_mb]
                else:
                    held.pop(event.vm_id, None)
                # Totals kept beside the map, so placement reads two numbers per host.
                data["reserved_cpu_mhz"] = sum(r[0] for r in held.values())
                data["reserved_memory_mb"] = sum(r[1] for r in held.values())
            case PoolImported():
                out.update(zone_id=event.zone_id, name=event.name, state="Up", removed=None)
                data.update(_fields(event, "pool_id", "zone_id", "name"))
                data.setdefault("settings", {})
            case PoolSettingChanged():
                data.setdefault("settings", {})[event.name] = event.value
            case NetworkImported():
                out.update(zone_id=event.zone_id, name=event.name, state="Implemented",
                           removed=None)
                data.update(_fields(event, "network_id", "zone_id", "name"),
                            binding=event.network_binding())
            case NetworkRangeSet():
                data.update(cidr=event.cidr, gateway=event.gateway)
            case ServiceOfferingCreated() | DiskOfferingCreated():
                out.update(name=event.name)
                data.update(_fields(event, "offering_id", "name"))
            case ServiceOfferingDeleted() | DiskOfferingDeleted():
                # Unlisted; a VM's or volume's response still names it.
                out.update(state="Inactive", removed=recorded.recorded_at)
            case AccountDeleted():
                out.update(state="removed", removed=recorded.recorded_at)
            case TemplateSeeded():
                out.update(name=f"snapshot-{event.vm_snapshot_id[:8]}-{event.pool_id[:8]}")
                data.update(_fields(event))
            case TemplateRemoved():
                out.update(state="Destroyed", removed=recorded.recorded_at)
            case VmSnapshotTaken():
                out.update(account_id=event.account_id, name=event.name)
                data.update(_fields(event, "snapshot_id", "account_id", "name", "current"))
            case VmSnapshotDeleted():
                out.update(state="Expunging", removed=recorded.recorded_at)
            case VmImported():
                disk = next(d for d in event.disks if d.volume_id == obj_id)
                out.update(zone_id=event.zone_id, account_id=event.account_id,
                           name=f"{'ROOT' if disk.root else 'DATA'}-{event.name}-{disk.disk_key}")
                data.update(_fields(disk), key=disk.disk_key, vm_id=event.vm_id,
                            volume_type="ROOT" if disk.root else "DATADISK",
                            template_id=event.template_id if disk.root else None)
            case AccountCreated():
                out.update(account_id=event.account_id, name=event.name, state="enabled")
                data.update(role=event.role)
            case ResourceLimitUpdated():
                data.setdefault("limits", {})[event.resource] = event.max
            case UserCreated():
                out.update(account_id=event.account_id, name=event.username, state="enabled")
                data.update(_fields(event, "user_id", "account_id"))
            case UserKeysRegistered():
                data.update(api_key=event.api_key)
            case VolumeFromSnapshotRequested():
                out.update(account_id=event.account_id, name=event.name, state=ALLOCATED)
                data.update(_fields(event, "account_id", "name", "job_id", "user_id"),
                            volume_type="DATADISK", vm_id=None, path=None)
            case VolumeAllocated():
                out.update(zone_id=event.zone_id, account_id=event.account_id, name=event.name,
                           state=ALLOCATED)
                data.update(_fields(event, "account_id", "name", "job_id", "zone_id"),
                            volume_type="DATADISK", vm_id=None, path=None, pool_id=None)
            case VolumeCreated():
                out.update(account_id=event.account_id, name=event.name, state=READY)
                data.update(_fields(event, "account_id", "name"), key=event.disk_key)
            case VolumeDeleteRequested():
                out.update(state=DESTROY)
            case VolumeDeleted():
                out.update(state=EXPUNGED, removed=recorded.recorded_at)
            case VolumeFailed():
                out.update(state="Error")
                data.update(reason=event.reason)
            case VolumeAttached():
                data.update(vm_id=event.vm_id, device_key=event.device_key, key=event.disk_key)
            case VolumeDetached():
                data.update(vm_id=None, device_key=None, key=None)
            case VolumeResized():
                data.update(size_bytes=event.size_bytes)
            case VmExpunged():
                out.update(state=DESTROY, removed=recorded.recorded_at)
            case VmAssigned():
                out.update(account_id=event.account_id)
            case _:
                return row
        out["data"] = _encode(data)
        own = streams.OWN_STREAM.get(kind)
        if own is not None and recorded.stream_id == own(obj_id):
            out["version"] = recorded.version
        elif fresh:
            out["version"] = 0
        return out
