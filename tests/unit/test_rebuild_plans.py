"""Which event types a rebuild decodes and hands to each projection: it asks keys() once per
type, with an event that has every field set, and skips the types it names no row for.
Random events of every type show no projection names a row for a type skipped for it."""

from __future__ import annotations

import random
import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi

from proto.events import (
    AnyEvent,
    CapacityReserved,
    Event,
    JobCompleted,
    JobSubmitted,
    TemplateSeedStarted,
    VmDeployRequested,
    VolumeCreated,
    ZoneImported,
)
from shared.eventstore import RecordedEvent
from shared.projections import ALL, AsyncJobs, Catalog, SnapshotPoolRefs, VmInstances
from shared.projections._runner import _touches

EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)
# Ids drawn from a few, so that random events meet the same rows again and again.
IDS = [str(uuid.UUID(int=i + 1)) for i in range(10)]


def random_value(rng: random.Random, info: mi.Type) -> Any:
    match info:
        case mi.StrType():
            return rng.choice(IDS)
        case mi.BoolType():
            return rng.random() < 0.5
        case mi.IntType():
            return rng.randrange(5000)
        case mi.DateTimeType():
            return datetime(2026, 1, 1, rng.randrange(24), tzinfo=UTC)
        case mi.ListType(item_type=item):
            return [random_value(rng, item) for _ in range(rng.randrange(3))]
        case mi.UnionType(types=members):
            options = [m for m in members if not isinstance(m, mi.NoneType)]
            if len(options) < len(members) and rng.random() < 0.3:
                return None
            return random_value(rng, rng.choice(options))
        case mi.StructType(cls=cls, fields=fields):
            return cls(**{f.name: random_value(rng, f.type) for f in fields})
    raise TypeError(f"no random value for {info}")


def random_event(rng: random.Random, cls: type[Event] | None = None) -> AnyEvent:
    """An event of ``cls`` (else of a random type) with random fields, as stored and read back."""
    event = random_value(rng, mi.type_info(cls or rng.choice(EVENT_TYPES)))
    decoded: AnyEvent = msgspec.json.decode(msgspec.json.encode(event), type=AnyEvent)
    return decoded


def test_no_projection_names_a_row_for_an_event_type_the_rebuild_skips_for_it() -> None:
    rng = random.Random(3)
    skipped = 0
    for cls in EVENT_TYPES:
        for projection in ALL:
            if _touches(projection, cls):
                continue
            skipped += 1
            for _ in range(200):
                event = random_event(rng, cls)
                assert projection.keys(event) == [], (type(projection).__name__, event)
    assert skipped > 150  # most types are read by one projection alone


def test_each_projection_reads_the_event_types_it_names_rows_for() -> None:
    assert _touches(VmInstances(), VmDeployRequested)
    assert _touches(VmInstances(), VolumeCreated)  # its vm_id is optional
    assert not _touches(VmInstances(), ZoneImported)
    assert _touches(AsyncJobs(), JobCompleted)
    assert not _touches(AsyncJobs(), VmDeployRequested)
    assert _touches(SnapshotPoolRefs(), TemplateSeedStarted)
    assert _touches(Catalog(), CapacityReserved)
    assert not _touches(Catalog(), VmDeployRequested)


def test_rows_made_anew_do_not_depend_on_the_row_given() -> None:
    """The live projector reads no row an event makes anew (``Projection.made_anew``): so
    evolve must give the same row whether it is handed none or one already there."""
    rng = random.Random(5)
    checked = 0
    for cls in EVENT_TYPES:
        for projection in ALL:
            for _ in range(50):
                event = random_event(rng, cls)
                if not projection.made_anew(event):
                    break
                for key in projection.keys(event):
                    # A row already there, every column of it other than what the event says.
                    there = {column: f"stale-{column}" for column in projection.table.columns}
                    at = recorded(rng, event)
                    assert projection.evolve(there, key, at, event) == \
                        projection.evolve(None, key, at, event), (cls.__name__, key)
                    checked += 1
    assert checked > 100


def test_creations_are_made_anew_and_changes_are_not() -> None:
    rng = random.Random(6)
    assert VmInstances().made_anew(random_event(rng, VmDeployRequested))
    assert not VmInstances().made_anew(random_event(rng, VolumeCreated))
    assert AsyncJobs().made_anew(random_event(rng, JobSubmitted))
    assert not AsyncJobs().made_anew(random_event(rng, JobCompleted))
    assert SnapshotPoolRefs().made_anew(random_event(rng, TemplateSeedStarted))
    assert not Catalog().made_anew(random_event(rng, ZoneImported))


def recorded(rng: random.Random, event: AnyEvent) -> RecordedEvent:
    """``event`` as stored at a random position and time."""
    return RecordedEvent(
        position=rng.randrange(1, 10**6), event_id=uuid.uuid4(), stream_id="s",
        version=rng.randrange(1, 100), type=type(event).__name__, schema=1,
        data=msgspec.json.encode(event), metadata=b"{}",
        recorded_at=datetime(2026, 1, rng.randrange(1, 28), tzinfo=UTC))
