"""The planner's decisions on real PostgreSQL: placements handled at once by one planner are
decided one at a time, each with its host's capacity, its addresses and, when the seed it
deploys from is ready, its source, and none has to run again; a check of a stream's version
with nothing appended to it, which the source decided at placement relies on (the
in-memory store makes it: tests/unit/test_handlers_seeder.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from proto import streams
from proto.events import (
    NetworkImported,
    TemplateSeeded,
    TemplateSeedStarted,
    VmPlaced,
    VmSourceReady,
    VmStopped,
)
from services.planner.handlers import Planner
from shared.bus import Dispatcher, Outcome
from shared.domain import capacity
from shared.eventstore import NO_STREAM, Append, ConcurrencyError, EventStore
from tests.kit import (
    META,
    CountsConflicts,
    deliver,
    deploy,
    given,
    host,
    new_stream,
    no_changes,
)

VMS = 64


class Counting(CountsConflicts, EventStore):
    pass


async def test_placements_handled_at_once_by_one_planner_never_run_again(
        pool: asyncpg.Pool) -> None:
    store = Counting(pool)
    for n in range(8):
        await given(store, streams.host(f"h{n}"), host(f"h{n}", ["pool-1"],
                                                       memory_mb=VMS // 8 * 1024))
    for network_id in ("n1", "n2"):
        await given(store, streams.network(network_id), NetworkImported(
            network_id=network_id, zone_id="zone-1", name=network_id, ref=f"ref-{network_id}"))
    # Half the deploys from a snapshot whose seed is ready, half from one never seeded.
    await given(store, streams.seed("ready", "pool-1"), TemplateSeedStarted(
        vm_snapshot_id="ready", pool_id="pool-1", template_id="t-ready", name="seed-ready"),
        TemplateSeeded(vm_snapshot_id="ready", pool_id="pool-1", template_id="t-ready",
                       template_ref="vm-t", base_snapshot_ref="snap-t", install_path="[ds] t",
                       task_ids=[]))
    for n in range(VMS):
        await new_stream(store, streams.vm(f"v{n}"), deploy(
            f"v{n}", memory_mb=1024, network_ids=["n1", "n1", "n2"],
            vm_snapshot_id="ready" if n % 2 else "unseeded"))
    planner = Dispatcher("planner", store, Planner(store, no_changes).handlers())
    requests = [(await store.read_stream(streams.vm(f"v{n}")))[0] for n in range(VMS)]

    results = await asyncio.gather(*(deliver(planner, str(r.event_id)) for r in requests))

    assert {(result.outcome, attempts) for result, attempts in results} == {
        (Outcome.HANDLED, 1)}
    assert store.conflicts == 0
    for n in range(VMS):
        events = [e.event() for e in await store.read_stream(streams.vm(f"v{n}"))]
        assert isinstance(events[1], VmPlaced)
        assert [type(e) for e in events[2:]] == ([VmSourceReady] if n % 2 else [])
    for n in range(8):
        h = capacity.fold(f"h{n}", [e.event() for e in
                                    await store.read_stream(streams.host(f"h{n}"))])
        assert sum(memory for _, memory in h.reservations.values()) == h.memory_mb_total
    n1, n2 = await store.network("n1"), await store.network("n2")
    assert len(n1.held) == len(n2.held) == VMS
    assert len({a for held in n1.held.values() for a in held}) == 2 * VMS
    assert len({a for held in n2.held.values() for a in held}) == VMS


async def test_an_append_of_no_events_checks_its_streams_version(store: EventStore) -> None:
    seed_stream = streams.seed("s", "p")
    await store.commit([Append(seed_stream, [TemplateSeedStarted(
        vm_snapshot_id="s", pool_id="p", template_id="t", name="seed-t")], NO_STREAM)], META)
    with pytest.raises(ConcurrencyError):
        await store.commit([Append("vm-a", [VmStopped(vm_id="a")]),
                            Append(seed_stream, [], NO_STREAM)], META)
    assert await store.read_stream("vm-a") == []
    await store.commit([Append("vm-a", [VmStopped(vm_id="a")]), Append(seed_stream, [], 1)],
                       META)
    assert len(await store.read_stream("vm-a")) == 1
    assert len(await store.read_stream(seed_stream)) == 1
