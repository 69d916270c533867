"""A VM snapshot as its stream ``vmsnapshot-<id>`` tells it: taken (or imported), then
perhaps deleted."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto.events import AnyEvent, VmAssigned, VmSnapshotDeleted, VmSnapshotTaken


@dataclass(frozen=True)
class VmSnapshot:
    taken: VmSnapshotTaken | None = None
    deleted: bool = False

    @property
    def live(self) -> VmSnapshotTaken | None:
        """The snapshot as last taken, unless it was deleted since."""
        return None if self.deleted else self.taken


def fold(events: Iterable[AnyEvent]) -> VmSnapshot:
    snapshot = VmSnapshot()
    for event in events:
        match event:
            case VmSnapshotTaken():
                snapshot = VmSnapshot(taken=event)
            case VmSnapshotDeleted():
                snapshot = VmSnapshot(taken=snapshot.taken, deleted=True)
    return snapshot


def owner(snapshot_id: str, events: Iterable[AnyEvent]) -> str | None:
    """Whose the VM snapshot is: the account it was taken for, or the one its VM was
    assigned to later with it. ``events``: its own stream's and its VM's, in global order."""
    found = None
    for event in events:
        match event:
            case VmSnapshotTaken() if event.snapshot_id == snapshot_id:
                found = event.account_id
            case VmAssigned() if snapshot_id in event.snapshot_ids:
                found = event.account_id
    return found
