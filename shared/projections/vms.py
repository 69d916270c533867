"""vm_instances: every VM with its CloudStack state."""

from __future__ import annotations

import uuid

import msgspec

from proto.events import (
    AnyEvent,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
    VmPlaced,
    VmStarted,
)
from shared.domain.vm import state_after
from shared.eventstore import RecordedEvent
from shared.projections._table import Key, Row, Table

_encode = msgspec.json.encode


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
            "vm_snapshot_id": "text",
            "template_id": "text",
            "network_ids": "jsonb",
            "host_id": "text",
            "pool_id": "text",
            "cpu_number": "integer",
            "cpu_speed": "integer",
            "memory_mb": "integer",
            "hypervisor_ref": "text",
            "state": "text",
            "error_text": "text",
            "created": "timestamptz",
            "updated": "timestamptz",
            "removed": "timestamptz",
            "last_position": "bigint",
        },
        ("id",),
    )

    def key(self, event: AnyEvent) -> Key | None:
        vm_id = getattr(event, "vm_id", None)
        return None if vm_id is None else (uuid.UUID(vm_id),)

    def evolve(self, row: Row | None, recorded: RecordedEvent, event: AnyEvent) -> Row | None:
        if isinstance(event, VmDeployRequested):
            row = {
                "id": uuid.UUID(event.vm_id),
                "account_id": event.account_id,
                "user_id": event.user_id,
                "name": event.name,
                "display_name": event.display_name,
                "instance_name": event.instance_name,
                "zone_id": event.zone_id,
                "service_offering_id": event.service_offering_id,
                "vm_snapshot_id": event.vm_snapshot_id,
                "template_id": event.template_id,
                "network_ids": _encode(event.network_ids),
                "host_id": event.host_id,
                "pool_id": None,
                "cpu_number": None,
                "cpu_speed": None,
                "memory_mb": None,
                "hypervisor_ref": None,
                "error_text": None,
                "created": recorded.recorded_at,
                "removed": None,
            }
        elif row is None:
            return None  # an event for a VM whose creation this model never saw
        else:
            row = dict(row)
        match event:
            case VmPlaced():
                row.update(host_id=event.host_id, pool_id=event.pool_id,
                           cpu_number=event.cpu_number, cpu_speed=event.cpu_speed,
                           memory_mb=event.memory_mb)
            case VmStarted():
                row.update(host_id=event.host_id, hypervisor_ref=event.hypervisor_ref)
            case VmDeployFailed():
                row.update(error_text=event.reason)
            case VmExpunged():
                row.update(removed=recorded.recorded_at)
        state = state_after(event)
        if state is not None:
            row["state"] = state.value
        row["updated"] = recorded.recorded_at
        row["last_position"] = recorded.position
        return row
