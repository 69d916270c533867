"""The event store against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import msgspec
import pytest

from proto.envelope import Metadata
from proto.events import VmDeployRequested, VmExpunged, VmStopped
from shared.db import applied_versions, create_pool, migrate
from shared.eventstore import (
    ANY_VERSION,
    APPEND_LOCK,
    NO_STREAM,
    NOTIFY_CHANNEL,
    Append,
    ConcurrencyError,
    EventStore,
    Group,
    MemoryEventStore,
    NewEvent,
    RecordedEvent,
)

META = Metadata(correlation_id="req-1", causation_id="req-1", actor="acct/user")


def stopped(vm: str) -> NewEvent:
    return NewEvent(VmStopped(vm_id=vm), META)


async def test_append_and_read_stream_keeps_every_field(store: EventStore) -> None:
    requested = VmDeployRequested(
        vm_id="v1", job_id="j1", account_id="a", user_id="u", name="n", display_name="d",
        instance_name="i-2-1-VM", zone_id="z", service_offering_id="so", cpu_number=2,
        cpu_speed=1000, memory_mb=2048, pool_id="p1", vm_snapshot_id="s1",
        network_ids=["n1", "n2"],
    )
    first = NewEvent(requested, META)
    recorded = await store.append("vm-v1", [first, stopped("v1")], NO_STREAM)

    assert [r.version for r in recorded] == [1, 2]
    assert recorded[1].position == recorded[0].position + 1
    events = await store.read_stream("vm-v1")
    assert [e.event() for e in events] == [requested, VmStopped(vm_id="v1")]
    assert events[0].event_id == first.event_id
    assert events[0].type == "VmDeployRequested"
    assert events[0].schema == 1
    assert events[0].meta() == META
    assert events[0].recorded_at <= events[1].recorded_at
    envelope = events[0].envelope()
    assert envelope.stream_id == "vm-v1" and envelope.data == requested


async def test_several_streams_read_at_once_are_each_as_read_alone(store: EventStore) -> None:
    await store.append("vm-m1", [stopped("m1"), stopped("m1")], NO_STREAM)
    await store.append("vm-m2", [stopped("m2")], NO_STREAM)
    await store.append("vm-m1", [stopped("m1")], 2)
    memory = MemoryEventStore()
    for stream_id, count in (("vm-m1", 2), ("vm-m2", 1)):
        await memory.append(stream_id, [stopped(stream_id[3:]) for _ in range(count)],
                            NO_STREAM)
    await memory.append("vm-m1", [stopped("m1")], 2)
    for each in (store, memory):
        read = await each.read_streams(["vm-m2", "vm-none", "vm-m1"])
        assert list(read) == ["vm-m2", "vm-none", "vm-m1"]
        for stream_id, events in read.items():
            assert events == await each.read_stream(stream_id)
        assert [e.version for e in read["vm-m1"]] == [1, 2, 3] and read["vm-none"] == []


async def test_wrong_expected_version_is_a_clear_concurrency_error(store: EventStore) -> None:
    await store.append("vm-x", [stopped("x")], NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("vm-x", [stopped("x")], NO_STREAM)
    assert caught.value.expected == 0 and caught.value.actual == 1
    assert "vm-x" in str(caught.value) and "retry" in str(caught.value)
    # The writer reloads and retries with the version it now sees.
    retried = await store.append("vm-x", [stopped("x")], await store.stream_version("vm-x"))
    assert retried[0].version == 2
    assert (await store.append("vm-x", [stopped("x")], ANY_VERSION))[0].version == 3


async def test_racing_writers_on_one_stream_exactly_one_wins(store: EventStore) -> None:
    results = await asyncio.gather(
        *(store.append("vm-race", [stopped("race")], NO_STREAM) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert await store.stream_version("vm-race") == 1


async def test_append_inside_a_rolled_back_transaction_leaves_nothing(store: EventStore) -> None:
    async with store.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.append("vm-rb", [stopped("rb")], conn=conn)
                raise RuntimeError("handler failed after appending")
    assert await store.read_stream("vm-rb") == []
    # A rolled-back append leaves a hole in positions; later events still come in order.
    after = await store.append("vm-rb", [stopped("rb")])
    assert [e.position for e in await store.read_all(0)] == [after[0].position]


async def test_read_all_pages_in_global_order(store: EventStore) -> None:
    for i in range(25):
        await store.append(f"vm-{i % 3}", [stopped(str(i))])
    seen, after = [], 0
    while page := await store.read_all(after, limit=7):
        seen.extend(page)
        after = page[-1].position
    assert [e.position for e in seen] == sorted(e.position for e in seen)
    assert len(seen) == 25 == len({e.event_id for e in seen})
    assert await store.head() == seen[-1].position


async def test_tailing_reader_misses_nothing_under_concurrent_writers(store: EventStore) -> None:
    """8 writers append in random-sized batches while one reader follows by position."""
    writers, batches_each = 8, 40
    written: list[uuid.UUID] = []

    rng = random.Random(7)

    async def writer(w: int) -> None:
        for b in range(batches_each):
            batch = [stopped(f"{w}-{b}-{i}") for i in range(1 + (w + b) % 4)]
            # Commit some time after taking positions, as a handler does when it records
            # its inbox row after appending: the window in which a lower position could
            # still be uncommitted while a higher one is visible.
            async with store.pool.acquire() as conn, conn.transaction():
                await store.append(f"vm-writer{w}", batch, conn=conn)
                await asyncio.sleep(rng.random() * 0.004)
            store.announcer.announce()  # committed in the writer's own transaction
            written.extend(e.event_id for e in batch)

    expected_total = sum(1 + (w + b) % 4 for w in range(writers) for b in range(batches_each))
    seen: list[uuid.UUID] = []
    positions: list[int] = []

    async def reader() -> None:
        async for batch in store.follow(0, batch=5, idle_poll=0.05):
            seen.extend(e.event_id for e in batch)
            positions.extend(e.position for e in batch)
            if len(seen) >= expected_total:
                return

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    await asyncio.wait_for(reading, 60)

    assert len(written) == expected_total
    assert len(seen) == expected_total, "the reader missed or repeated events"
    assert len(set(seen)) == expected_total, "the reader saw an event twice"
    assert set(seen) == set(written)
    assert positions == sorted(positions)
    # Stream versions are dense per stream.
    for w in range(writers):
        versions = [e.version for e in await store.read_stream(f"vm-writer{w}")]
        assert versions == list(range(1, len(versions) + 1))


async def test_commits_are_announced_after_they_commit_not_in_their_transaction(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """An append does not notify in its transaction (PostgreSQL makes notifying commits
    take turns through their flush); the store announces each commit it makes after it,
    announcing those made while one announcement is on its way together, and none is
    left unannounced: a follower that would poll only once a minute sees them all."""
    heard: list[str] = []

    def hear(*args: object) -> None:
        heard.append(str(args[-1]))

    async with pool.acquire() as listener:
        await listener.add_listener(NOTIFY_CHANNEL, hear)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await store.append("vm-quiet", [stopped("quiet")], conn=conn)
            await asyncio.sleep(0.3)
            assert heard == [], "an append notified in its own transaction"

            followed: list[str] = []

            async def follower() -> None:
                async for batch in store.follow(await store.head(), idle_poll=60):
                    followed.extend(e.stream_id for e in batch)
                    if len(followed) == 51:
                        return

            following = asyncio.ensure_future(follower())
            await asyncio.sleep(0.2)
            await asyncio.gather(*(store.append(f"vm-loud{n}", [stopped(str(n))])
                                   for n in range(50)))
            await store.commit([Append("vm-loud-commit", [VmStopped(vm_id="c")])], META)
            await asyncio.wait_for(following, 10)
            assert sorted(followed) == sorted(
                [*(f"vm-loud{n}" for n in range(50)), "vm-loud-commit"])
            assert 1 <= len(heard) <= 51
        finally:
            await listener.remove_listener(NOTIFY_CHANNEL, hear)


async def test_appends_run_side_by_side_and_readers_never_read_past_an_open_one(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """An append to another stream commits while one is still open, though its position is
    higher; readers by position wait for the open one, then read both, in order."""
    await store.append("vm-before", [stopped("before")])
    head = await store.head()
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            (first,) = await store.append("vm-open", [stopped("open")], conn=conn)
            async with asyncio.timeout(10):
                (later,) = await store.append("vm-other", [stopped("other")])
            assert later.position > first.position
            reading = asyncio.ensure_future(store.read_all(head))
            heading = asyncio.ensure_future(store.head())
            await asyncio.sleep(0.3)
            assert not reading.done() and not heading.done()
        finally:
            await transaction.commit()
    async with asyncio.timeout(10):
        read = await reading
        assert await heading == later.position
    assert [(e.stream_id, e.position) for e in read] == [
        ("vm-open", first.position), ("vm-other", later.position)]


async def test_appends_to_one_stream_take_turns(store: EventStore, pool: asyncpg.Pool) -> None:
    """The second of two appends at one version waits for the first, then conflicts (a
    version conflict, not a duplicate key)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append("vm-turns", [stopped("t")], NO_STREAM, conn=conn)
            second = asyncio.ensure_future(store.append("vm-turns", [stopped("t")], NO_STREAM))
            await asyncio.sleep(0.3)
            assert not second.done()
    with pytest.raises(ConcurrencyError):
        await asyncio.wait_for(second, 10)
    assert await store.stream_version("vm-turns") == 1


async def test_an_expunge_waits_for_every_append_under_way(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """A VM's expunge writes its volumes' write-side rows, which other streams' events
    write too: it is appended alone, after the appends under way, as every append was
    before appends ran side by side."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append("vm-busy", [stopped("busy")], conn=conn)
            expunge = asyncio.ensure_future(store.append(
                "vm-gone", [NewEvent(VmExpunged(vm_id="gone", volume_ids=["vol-1"]), META)]))
            await asyncio.sleep(0.3)
            assert not expunge.done()
    (expunged,) = await asyncio.wait_for(expunge, 10)
    assert expunged.position > (await store.read_stream("vm-busy"))[0].position


async def test_appends_do_not_wait_for_vacuum_or_analyze_of_the_events_table(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """VACUUM and ANALYZE hold SHARE UPDATE EXCLUSIVE on the table they work on. Appends
    keep their order without a lock on the table, so they go on meanwhile (with
    a table lock they waited for autovacuum to be cancelled, a second, or for a whole
    anti-wraparound vacuum, which is never cancelled: held here until the end)."""
    await store.append("vm-v1", [stopped("v1")], NO_STREAM)
    async with pool.acquire() as vacuum, vacuum.transaction():
        await vacuum.execute("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
        async with asyncio.timeout(30):
            await store.append("vm-v1", [stopped("v1")], 1)
            # A batch of no events checks its stream's version under the same lock.
            await store.commit([Append("vm-v1", [], 2), Append("vm-v2", [VmStopped(vm_id="v2")],
                                                             NO_STREAM)], META)
            head = await store.head()
    assert [e.version for e in await store.read_stream("vm-v1")] == [1, 2]
    assert (await store.read_stream("vm-v2"))[0].position == head
    # The lock held is the one APPEND_LOCK names (the bench's raw inserts take it too).
    async with pool.acquire() as conn, conn.transaction():
        await store.append("vm-v3", [stopped("v3")], NO_STREAM, conn=conn)
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1"
            " AND objid = 0 AND objsubid = 2 AND pid = pg_backend_pid()", APPEND_LOCK) == 1


async def test_migrations_are_versioned_and_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        before = await applied_versions(conn)
        assert before and before == sorted(before)
        assert await migrate(conn) == []
        assert await applied_versions(conn) == before


async def test_a_commit_is_one_statement_all_or_none_with_its_inbox_row(
        store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("vm-c1", [stopped("c1")], NO_STREAM)
    cause = str(uuid.uuid4())
    # The second batch is at the wrong version: the first batch and the inbox row go too.
    with pytest.raises(ConcurrencyError) as caught:
        await store.commit([Append("vm-c2", [VmStopped(vm_id="c2")], NO_STREAM),
                            Append("vm-c1", [VmStopped(vm_id="c1")], NO_STREAM)], META,
                           inbox=("planner", cause))
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == \
        ("vm-c1", NO_STREAM, 1)
    assert await store.read_stream("vm-c2") == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1",
                                   uuid.UUID(cause)) == 0
    last = await store.commit([Append("vm-c2", [VmStopped(vm_id="c2")], NO_STREAM),
                               Append("vm-c1", [VmStopped(vm_id="c1")], 1)], META,
                              inbox=("planner", cause))
    assert last == (await store.read_stream("vm-c1"))[-1].position
    assert [e.meta() for e in await store.read_stream("vm-c2")] == [META]
    # Recorded already: nothing is appended again.
    assert await store.commit([Append("vm-c2", [VmStopped(vm_id="c2")])], META,
                              inbox=("planner", cause)) is None
    assert len(await store.read_stream("vm-c2")) == 1
    # An inbox row alone (a handler that appends nothing) commits too.
    assert await store.commit([], META, inbox=("planner", str(uuid.uuid4()))) == 0


async def test_group_commit_shares_statements_and_undoes_only_the_group_that_failed(
        pool: asyncpg.Pool) -> None:
    store = EventStore(pool, group_commit=True)
    assert store.group_commit is not None
    await store.append("vm-taken", [stopped("taken")], NO_STREAM)

    async def one(i: int) -> int | None:
        # Every 8th asks for a stream that exists already: it fails alone.
        stream = "vm-taken" if i % 8 == 0 else f"vm-g{i}"
        return await store.commit([Append(stream, [VmStopped(vm_id=str(i))], NO_STREAM),
                                   Append(f"vm-side{i}", [VmStopped(vm_id=str(i))])], META)

    outcomes = await asyncio.gather(*(one(i) for i in range(64)), return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, ConcurrencyError)]
    assert failed == list(range(0, 64, 8))
    for i, outcome in enumerate(outcomes):
        side = await store.read_stream(f"vm-side{i}")
        if i in failed:
            assert side == []
            continue
        assert isinstance(outcome, int) and outcome == side[-1].position
        assert [e.event() for e in await store.read_stream(f"vm-g{i}")] == \
            [VmStopped(vm_id=str(i))]
    assert len(await store.read_stream("vm-taken")) == 1
    # Commits that arrived while one statement ran went together in the next.
    assert store.group_commit.statements < 64


async def test_account_decisions_at_once_never_take_every_connection(database_url: str) -> None:
    """A holder of an account's decision needs more connections (its reads, its commit):
    waiters that each held one while they waited for the lock took a small pool whole."""
    pool = await create_pool(database_url, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = EventStore(pool)
        decided: list[str] = []

        async def decide(account_id: str) -> None:
            async with store.account_decision(account_id):
                async with pool.acquire() as conn:  # as a holder's reads and commit do
                    await conn.fetchval("SELECT 1")
                decided.append(account_id)

        async with asyncio.timeout(30):
            await asyncio.gather(*(decide(f"acct-{i % 3}") for i in range(16)))
        assert sorted(decided) == sorted(f"acct-{i % 3}" for i in range(16))
        assert store._accounts == {}  # nothing kept once no one waits
    finally:
        await pool.close()


async def test_a_commit_hands_its_publisher_each_event_as_stored(store: EventStore) -> None:
    """``commit_all``'s groups that committed are handed to ``publisher`` as stored (the
    store's positions, versions and times), in position order; a group undone or already
    recorded hands nothing."""
    handed: list[list[RecordedEvent]] = []

    async def publish(events: list[RecordedEvent]) -> None:
        handed.append(events)

    store.publisher = publish
    await store.append("vm-p1", [stopped("p1")], NO_STREAM)
    groups = [
        Group([Append("vm-p1", [VmStopped(vm_id="a"), VmStopped(vm_id="b")], 1),
               Append("vm-p2", [VmStopped(vm_id="c")], NO_STREAM)], META,
              ("planner", str(uuid.uuid4()))),
        Group([Append("vm-p1", [VmStopped(vm_id="late")], 1)], META),  # moved on: undone
        Group([Append("vm-p3", [], ANY_VERSION)], META),  # appends nothing
        Group([Append("vm-p3", [VmStopped(vm_id="d")])], META),
    ]
    outcomes = await store.commit_all(groups)
    assert isinstance(outcomes[1], ConcurrencyError)
    (events,) = handed
    stored = await store.read_all(1, 100)
    # Every column; the JSON as the committer encoded it (PostgreSQL spaces jsonb its way).
    assert [msgspec.structs.replace(e, data=b"", metadata=b"") for e in events] == \
        [msgspec.structs.replace(e, data=b"", metadata=b"") for e in stored]
    assert [e.event() for e in events] == [VmStopped(vm_id=v) for v in "abcd"]
    assert [(e.stream_id, e.version) for e in events] == [
        ("vm-p1", 2), ("vm-p1", 3), ("vm-p2", 1), ("vm-p3", 1)]
    assert all(e.meta() == META for e in events)
    # Recorded already: nothing is handed.
    assert await store.commit_all(groups[:1]) == [None]
    assert len(handed) == 1
