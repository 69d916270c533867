"""vmsnapshot_spool_ref: the spec's map of VM snapshots seeded as templates on pools."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from proto.events import (
    AnyEvent,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
)
from shared.projections._table import Key, Row, Table

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import RecordedEvent


class SeedState(StrEnum):
    CREATING = "Creating"
    READY = "Ready"
    ERROR = "Error"
    DESTROYED = "Destroyed"


class SnapshotPoolRefs:
    table = Table(
        "vmsnapshot_spool_ref",
        {
            "id": "bigint",
            "pool_id": "text",
            "vm_snapshot_id": "text",
            "created": "timestamptz",
            "install_path": "varchar",
            "state": "varchar",
        },
        ("vm_snapshot_id", "pool_id"),
    )

    def keys(self, event: AnyEvent) -> list[Key]:
        if isinstance(event, _SEED_EVENTS):
            return [(event.vm_snapshot_id, event.pool_id)]
        return []

    def made_anew(self, event: AnyEvent) -> bool:
        return isinstance(event, TemplateSeedStarted)

    def evolve(
        self, row: Row | None, key: Key, recorded: RecordedEvent, event: AnyEvent
    ) -> Row | None:
        if isinstance(event, TemplateSeedStarted):
            return {
                "id": recorded.position,
                "pool_id": event.pool_id,
                "vm_snapshot_id": event.vm_snapshot_id,
                "created": recorded.recorded_at,
                "install_path": None,
                "state": SeedState.CREATING.value,
            }
        if row is None:
            return None
        row = dict(row)
        match event:
            case TemplateSeeded():
                row.update(state=SeedState.READY.value, install_path=event.install_path)
            case TemplateSeedFailed():
                row.update(state=SeedState.ERROR.value)
            case TemplateRemoved():
                row.update(state=SeedState.DESTROYED.value)
        return row


_SEED_EVENTS = (TemplateSeedStarted, TemplateSeeded, TemplateSeedFailed, TemplateRemoved)
