"""vm_instances: every VM, deployed or imported, with its CloudStack state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from shared.projections._table import Key, Row, Table, parse_uuid

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import RecordedEvent

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
        made = _MADE.get(type(event))
        if made is not None:
            row = made(row, key, recorded, event)
        elif row is None:
            return None  # an event for a VM whose creation this model never saw
        else:
            row = dict(row)
            change = _CHANGES.get(type(event))
            if change is not None:
                change(row, recorded, event)
        state = state_after(event)
        if state is not None:
            row["state"] = _STATE_TEXT[state]
        row["updated"] = recorded.recorded_at
        row["last_position"] = recorded.position
        return row


def _requested(_: Row | None, key: Key, recorded: RecordedEvent,
               event: VmDeployRequested) -> Row:
    return {
        "id": key[0],
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


def _imported(row: Row | None, key: Key, recorded: RecordedEvent, event: VmImported) -> Row:
    previous = row or {}
    return {
        "id": key[0],
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
        "state": _STATE_TEXT[VmState.RUNNING if event.powered_on else VmState.STOPPED],
        "error_text": None,
        "current_snapshot_id": previous.get("current_snapshot_id"),
        "imported": True,
        "created": previous.get("created", recorded.recorded_at),
        "removed": None,
    }


def _allocated(row: Row, _: RecordedEvent, event: AddressesAllocated) -> None:
    held = _decode(row["addresses"])
    held[event.network_id] = {"addresses": event.addresses, "cidr": event.cidr,
                              "gateway": event.gateway}
    row["addresses"] = _encode(held)


def _released(row: Row, _: RecordedEvent, event: AddressesReleased) -> None:
    held = _decode(row["addresses"])
    held.pop(event.network_id, None)
    row["addresses"] = _encode(held)


# What each event type does to a VM's row: the two that make it, then those that change it
# in place (on a copy), looked up by type (a `match` over these classes cost a rebuild
# more than the rest of its work on the event).
_MADE: dict[type, Callable[[Row | None, Key, RecordedEvent, Any], Row]] = {
    VmDeployRequested: _requested,
    VmImported: _imported,
}
_CHANGES: dict[type, Callable[[Row, RecordedEvent, Any], None]] = {
    VmPlaced: lambda row, _, e: row.update(host_id=e.host_id, pool_id=e.pool_id),
    VmCreated: lambda row, _, e: row.update(hypervisor_ref=e.ref, host_id=e.host_id),
    NicCreated: lambda row, _, e: row.update(nics=_encode([*_decode(row["nics"]), e.nic])),
    VmStarted: lambda row, _, e: row.update(host_id=e.host_id, hypervisor_ref=e.hypervisor_ref),
    VmDeployFailed: lambda row, _, e: row.update(error_text=e.reason),
    VmExpunged: lambda row, recorded, _: row.update(removed=recorded.recorded_at),
    VmSnapshotTaken: lambda row, _, e: row.update(current_snapshot_id=e.snapshot_id)
    if e.current else None,
    VmAssigned: lambda row, _, e: row.update(account_id=e.account_id),
    VmServiceChanged: lambda row, _, e: row.update(
        service_offering_id=e.service_offering_id, cpu_number=e.cpu_number,
        cpu_speed=e.cpu_speed, memory_mb=e.memory_mb),
    AddressesAllocated: _allocated,
    AddressesReleased: _released,
    # Its state is state_after's, set by evolve with every event's.
    VmReverted: lambda row, _, e: row.update(current_snapshot_id=e.snapshot_id),
}
# A state's text, as the column holds it (an enum's ``value`` is a slow property).
_STATE_TEXT = {state: state.value for state in VmState}
