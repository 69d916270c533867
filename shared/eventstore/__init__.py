"""The event store: append-only streams in PostgreSQL, read by stream or in global order."""

from shared.eventstore._announce import NOTIFY_CHANNEL
from shared.eventstore._group import Group, Outcome
from shared.eventstore._memory import MemoryEventStore
from shared.eventstore._repository import HeldNetworks, Repository, SnapshotStreams
from shared.eventstore._store import (
    ANY_VERSION,
    APPEND_LOCK,
    NO_STREAM,
    STREAM_LOCK,
    Append,
    ConcurrencyError,
    EventStore,
    Holding,
    NameTaken,
    NewEvent,
    RecordedEvent,
    Store,
    VmEntry,
)

__all__ = [
    "ANY_VERSION",
    "APPEND_LOCK",
    "NOTIFY_CHANNEL",
    "NO_STREAM",
    "STREAM_LOCK",
    "Append",
    "ConcurrencyError",
    "EventStore",
    "Group",
    "HeldNetworks",
    "Holding",
    "MemoryEventStore",
    "NameTaken",
    "NewEvent",
    "Outcome",
    "RecordedEvent",
    "Repository",
    "SnapshotStreams",
    "Store",
    "VmEntry",
]
