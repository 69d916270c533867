from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from proto.envelope import Metadata
from proto.events import TemplateSeedStarted, VmDeployRequested, VmExpunged
from shared.domain import capacity
from shared.domain.deploy import HostView
from shared.eventstore._store import (
    ANY_VERSION,
    Append,
    ConcurrencyError,
    NewEvent,
    RecordedEvent,
)

_encoder = msgspec.json.Encoder()


class MemoryEventStore:
    """An event store in memory, for running handlers in process at unit speed.

    It keeps the promises of ``shared.eventstore.Store`` as PostgreSQL's ``EventStore``
    does: versions checked per stream, a commit all or nothing, the inbox, global order.
    Nothing is shared between instances and nothing survives the process.
    """

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[uuid.UUID, RecordedEvent] = {}
        self._inbox: set[tuple[str, str]] = set()

    async def append(self, stream_id: str, events: Sequence[NewEvent],
                     expected_version: int = ANY_VERSION) -> list[RecordedEvent]:
        self._check({stream_id: len(self._streams.get(stream_id, []))}, stream_id,
                    expected_version)
        return self._write(stream_id, events)

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> bool:
        if inbox is not None:
            inbox = (inbox[0], str(uuid.UUID(inbox[1])))
            if inbox in self._inbox:
                return False
        # Check every batch against the versions the earlier batches leave, then write.
        versions: dict[str, int] = {}
        for append in appends:
            current = versions.get(append.stream_id,
                                   len(self._streams.get(append.stream_id, [])))
            self._check({append.stream_id: current}, append.stream_id,
                        append.expected_version)
            versions[append.stream_id] = current + len(append.events)
        if inbox is not None:
            self._inbox.add(inbox)
        for append in appends:
            self._write(append.stream_id, [NewEvent(e, metadata) for e in append.events])
        return True

    @staticmethod
    def _check(versions: dict[str, int], stream_id: str, expected: int) -> None:
        actual = versions[stream_id]
        if expected != ANY_VERSION and actual != expected:
            raise ConcurrencyError(stream_id, expected, actual)

    def _write(self, stream_id: str, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        stream = self._streams.setdefault(stream_id, [])
        out = []
        for new in events:
            recorded = RecordedEvent(
                position=len(self.events) + 1, event_id=new.event_id, stream_id=stream_id,
                version=len(stream) + 1, type=type(new.data).__name__, schema=new.data.SCHEMA,
                data=_encoder.encode(new.data), metadata=_encoder.encode(new.metadata),
                recorded_at=datetime.now(UTC),
            )
            self.events.append(recorded)
            stream.append(recorded)
            self._by_id[recorded.event_id] = recorded
            out.append(recorded)
        return out

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        return list(self._streams.get(stream_id, [])[max(from_version, 1) - 1:])

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self.events[after:after + limit]

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, []))

    async def head(self) -> int:
        return len(self.events)

    async def stored(self, event_id: str, consumer: str) -> tuple[RecordedEvent | None, bool]:
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            return None, False
        recorded = self._by_id.get(key)
        if recorded is None:
            return None, False
        return recorded, (consumer, str(key)) in self._inbox

    async def hosts(self) -> list[HostView]:
        hosts = [capacity.fold(stream_id.removeprefix("host-"), [e.event() for e in events])
                 for stream_id, events in sorted(self._streams.items())
                 if stream_id.startswith("host-")]
        return [host.view() for host in hosts if capacity.placeable(host)]

    async def snapshot_uses(self, vm_snapshot_id: str) -> tuple[list[str], list[str]]:
        vms: set[str] = set()
        expunged: set[str] = set()
        pools: set[str] = set()
        for recorded in self.events:
            match recorded.event():
                case VmDeployRequested() as request if request.vm_snapshot_id == vm_snapshot_id:
                    vms.add(request.vm_id)
                case VmExpunged() as gone:
                    expunged.add(gone.vm_id)
                case TemplateSeedStarted() as started if started.vm_snapshot_id == vm_snapshot_id:
                    pools.add(started.pool_id)
        return sorted(vms - expunged), sorted(pools)

    async def template_seed(self, template_id: str) -> tuple[str, str] | None:
        for recorded in self.events:
            event = recorded.event()
            if isinstance(event, TemplateSeedStarted) and event.template_id == template_id:
                return event.vm_snapshot_id, event.pool_id
        return None
