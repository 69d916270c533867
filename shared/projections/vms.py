"""vm_instances: every VM, deployed or imported, with its CloudStack state."""

from __future__ import annotations

import msgspec

from proto.events import (
    AddressesAllocated,
    AddressesReleased,
    AnyEvent,
    NicCreated,
    VmAssigned,
    VmCreated,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
    VmImported,
    VmPlaced,
    VmReverted,
    VmServiceChanged,
    VmSnapshotTaken,
    VmStarted,
)
from shared.domain.vm import VmState, state_after
from shared.eventstore import RecordedEvent
from shared.projections._table import Key, Row, Table, parse_uuid

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class VmInstances:
    table = Table(
        "vm_instances",
        {
            "id": "uuid",
            "account_id": "text",
            "user_id": "text",
            "name": "text",
            "display_name": "text",
            "instance_name": "text",
            "zone_id": "text",
            "service_offering_id": "text",
            "cpu_number": "integer",
            "cpu_speed": "integer",
            "memory_mb": "integer",
            "vm_snapshot_id": "text",
            "template_id": "text",
            "host_id": "text",
            "pool_id": "text",
            "hypervisor_ref": "text",
            "nics": "jsonb",
            "addresses": "jsonb",
            "state": "text",
            "error_text": "text",
            "current_snapshot_id": "text",
            "imported": "boolean",
            "created": "timestamptz",
            "updated": "timestamptz",
            "removed": "timestamptz",
            "last_position": "bigint",
        },
        ("id",),
    )

    def keys(self, event: AnyEvent) -> list[Key]:
        vm_id = getattr(event, "vm_id", None)
        return [] if vm_id is None else [(parse_uuid(vm_id),)]

    def made_anew(self, event: AnyEvent) -> bool:
        return isinstance(event, VmDeployRequested)

    def evolve(
        self, row: Row | None, key: Key, recorded: RecordedEvent, event: AnyEvent
    ) -> Row | None:
        if isinstance(event, VmDeployRequested):
            row = {
                "id": parse_uuid(event.vm_id),
                "account_id": event.account_id,
                "user_id": event.user_id,
                "name": event.name,
                "display_name": event.display_name,
                "instance_name": event.instance_name,
                "zone_id": event.zone_id,
                "service_offering_id": event.service_offering_id,
                "cpu_number": event.cpu_number,
                "cpu_speed": event.cpu_speed,
                "memory_mb": event.memory_mb,
                "vm_snapshot_id": event.vm_snapshot_id,
                "template_id": event.root_template_id or event.template_id,
                "host_id": event.host_id,
                "pool_id": event.pool_id,
                "hypervisor_ref": None,
                "nics": b"[]",
                "addresses": b"{}",
                "error_text": None,
                "current_snapshot_id": None,
                "imported": False,
                "created": recorded.recorded_at,
                "removed": None,
            }
        elif isinstance(event, VmImported):
            previous = row or {}
            row = {
                "id": parse_uuid(event.vm_id),
                "account_id": previous.get("account_id", event.account_id),
                "user_id": None,
                "name": event.name,
                "display_name": event.name,
                "instance_name": event.name,
                "zone_id": event.zone_id,
                "service_offering_id": None,
                "cpu_number": event.cpu_number,
                "cpu_speed": None,
                "memory_mb": event.memory_mb,
                "vm_snapshot_id": None,
                "template_id": event.template_id,
                "host_id": event.host_id,
                "pool_id": next((d.pool_id for d in event.disks if d.root), None),
                "hypervisor_ref": event.ref,
                "nics": _encode(event.nics),
                "addresses": previous.get("addresses", b"{}"),
                "state": (VmState.RUNNING if event.powered_on else VmState.STOPPED).value,
                "error_text": None,
                "current_snapshot_id": previous.get("current_snapshot_id"),
                "imported": True,
                "created": previous.get("created", recorded.recorded_at),
                "removed": None,
            }
        elif row is None:
            return None  # an event for a VM whose creation this model never saw
        else:
            row = dict(row)
        match event:
            case VmPlaced():
                row.update(host_id=event.host_id, pool_id=event.pool_id)
            case VmCreated():
                row.update(hypervisor_ref=event.ref, host_id=event.host_id)
            case NicCreated():
                row["nics"] = _encode([*_decode(row["nics"]), event.nic])
            case VmStarted():
                row.update(host_id=event.host_id, hypervisor_ref=event.hypervisor_ref)
            case VmDeployFailed():
                row.update(error_text=event.reason)
            case VmExpunged():
                row.update(removed=recorded.recorded_at)
            case VmSnapshotTaken() if event.current:
                row.update(current_snapshot_id=event.snapshot_id)
            case VmAssigned():
                row.update(account_id=event.account_id)
            case VmServiceChanged():
                row.update(service_offering_id=event.service_offering_id,
                           cpu_number=event.cpu_number, cpu_speed=event.cpu_speed,
                           memory_mb=event.memory_mb)
            case AddressesAllocated():
                held = _decode(row["addresses"])
                held[event.network_id] = {"addresses": event.addresses, "cidr": event.cidr,
                                          "gateway": event.gateway}
                row["addresses"] = _encode(held)
            case AddressesReleased():
                held = _decode(row["addresses"])
                held.pop(event.network_id, None)
                row["addresses"] = _encode(held)
            case VmReverted():
                row.update(current_snapshot_id=event.snapshot_id,
                           state=(VmState.RUNNING if event.powered_on else VmState.STOPPED).value)
        state = state_after(event)
        if state is not None:
            row["state"] = state.value
        row["updated"] = recorded.recorded_at
        row["last_position"] = recorded.position
        return row
