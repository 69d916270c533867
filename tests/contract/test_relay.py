"""The outbox relay against real PostgreSQL and a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from proto import subjects
from proto.envelope import Metadata, decode_envelope
from proto.events import VmStopped
from shared import bus
from shared import relay as relay_module
from shared.eventstore import Append, EventStore, NewEvent
from shared.relay import Herald, Relay
from shared.stack._servers import Server, terminate
from tests.helpers import eventually, nats_connect, settings_for, start_service, stream_messages

META = Metadata(correlation_id="c")


async def append_many(store: EventStore, count: int, *, streams: int = 5) -> None:
    for i in range(count):
        await store.append(f"vm-{i % streams}", [NewEvent(VmStopped(vm_id=str(i)), META)])


async def stream_count(nc) -> int:  # type: ignore[no-untyped-def]
    try:
        return int((await nc.jetstream().stream_info(subjects.EVENTS_STREAM)).state.messages)
    except NotFoundError:
        return 0


async def test_relay_publishes_each_event_once_in_order(
    store: EventStore, nats_server: Server
) -> None:
    nc = await nats_connect(nats_server)
    relay = asyncio.create_task(Relay(store, nc.jetstream(), batch=7).run())
    try:
        await append_many(store, 50)
        await eventually(lambda: _has(nc, 50), what="50 events in JetStream")
        published = await stream_messages(nc)
        events = await store.read_all(0, 100)
        assert published == [(str(e.event_id), e.position) for e in events]
        # The payload on NATS is the stored envelope, decodable by any consumer.
        msg = await nc.jetstream().get_msg(subjects.EVENTS_STREAM, 1)
        assert msg.subject == "snapdeploy.events.vm.VmStopped"
        assert decode_envelope(msg.data or b"").data == events[0].event()
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await nc.close()


async def _has(nc, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await stream_count(nc) >= n


async def test_relay_survives_sigkill_at_random_points(
    store: EventStore, database_url: str, nats_server: Server, tmp_path: Path
) -> None:
    """Kill -9 the relay process repeatedly while writers append: nothing lost, nothing twice."""
    settings = settings_for(database_url, nats_server)
    nc = await nats_connect(nats_server)
    rng = random.Random(42)
    total = 600
    relay = start_service("relay", settings, tmp_path)
    writing = asyncio.create_task(append_many(store, total, streams=13))
    kills = 0
    try:
        while not writing.done() or kills < 5:
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            relay.send_signal(signal.SIGKILL)
            relay.wait()
            kills += 1
            relay = start_service("relay", settings, tmp_path)
        await writing
        await eventually(lambda: _has(nc, total), within=60, what=f"{total} events published")
        await asyncio.sleep(1.0)  # anything extra would arrive now

        published = await stream_messages(nc)
        events = await store.read_all(0, total + 1)
        assert len(events) == total
        assert len(published) == total, f"{len(published) - total} duplicates reached the stream"
        assert published == [(str(e.event_id), e.position) for e in events]
    finally:
        terminate(relay)
        writing.cancel()
        await nc.close()
    assert kills >= 5


async def test_relay_behind_its_checkpoint_republishes_nothing(
    store: EventStore, database_url: str, nats_server: Server, tmp_path: Path
) -> None:
    """A relay that crashed after publishing but before saving its checkpoint, and stayed down
    past JetStream's duplicate window, resumes after what the stream already holds."""
    settings = settings_for(database_url, nats_server)
    nc = await nats_connect(nats_server)
    await append_many(store, 40)
    relay = start_service("relay", settings, tmp_path)
    try:
        await eventually(lambda: _has(nc, 40), what="40 events published")
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait()
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE checkpoints SET position = 0 WHERE name = 'relay'")
    # Let JetStream's duplicate window pass, so only the relay itself can prevent repeats.
    js = nc.jetstream()
    config = (await js.stream_info(subjects.EVENTS_STREAM)).config
    config.duplicate_window = 0.1
    await js.update_stream(config)
    await asyncio.sleep(0.3)
    await append_many(store, 10)
    relay = start_service("relay", settings, tmp_path)
    try:
        await eventually(lambda: _has(nc, 50), what="10 more events published")
        await asyncio.sleep(1.0)
        assert await stream_count(nc) == 50
        async with store.pool.acquire() as conn:
            checkpoint = await conn.fetchval("SELECT position FROM checkpoints")
        assert checkpoint == await store.head()
    finally:
        terminate(relay)
        await nc.close()


async def _relay_process_published(store: EventStore, nc, settings, tmp_path: Path,  # type: ignore[no-untyped-def]
                                   count: int) -> None:
    """A relay that published the store's first ``count`` events and saved its checkpoint
    after them (it saves at most every ``SAVE_EVERY_S``), then SIGKILLed."""
    relay = start_service("relay", settings, tmp_path)

    async def saved() -> bool:
        async with store.pool.acquire() as conn:
            position: int | None = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = 'relay'")
        return position == (await store.read_all(0, count))[-1].position

    try:
        await eventually(lambda: _has(nc, count), what=f"{count} events published")
        await eventually(saved, what="the relay's checkpoint after them")
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait()


async def test_a_forged_position_header_does_not_move_the_relay(
    store: EventStore, database_url: str, nats_server: Server, tmp_path: Path
) -> None:
    """Messages the relay did not publish, last in the stream when it restarts, claiming a
    huge position (one with no id, one reusing a real event's id): the relay resumes from
    its own checkpoint and later events still flow, each once."""
    settings = settings_for(database_url, nats_server)
    nc = await nats_connect(nats_server)
    await append_many(store, 20)
    await _relay_process_published(store, nc, settings, tmp_path, 20)
    first = (await store.read_all(0, 1))[0]
    js = nc.jetstream()
    # Let the duplicate window pass, so that a copy of a real event's id is stored too.
    config = (await js.stream_info(subjects.EVENTS_STREAM)).config
    config.duplicate_window = 0.1
    await js.update_stream(config)
    await asyncio.sleep(0.3)
    huge = str(2**62)
    subject = subjects.event_subject("vm-x", "VmStopped")
    await js.publish(subject, b"junk", headers={subjects.POSITION_HEADER: huge})
    await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "not-an-event",
                                               subjects.POSITION_HEADER: huge})
    await js.publish(subject, first.wire(), headers={"Nats-Msg-Id": str(first.event_id),
                                                     subjects.POSITION_HEADER: huge})
    planted = await stream_count(nc)
    relay = start_service("relay", settings, tmp_path)
    try:
        await append_many(store, 10)
        await eventually(lambda: _has(nc, planted + 10), what="10 later events published")
        await asyncio.sleep(1.0)
        assert await stream_count(nc) == planted + 10
        async with store.pool.acquire() as conn:
            checkpoint = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = 'relay'")
        assert checkpoint == await store.head() == 30
        # The later events are the newest in the stream, in store order.
        tail = (await stream_messages_after(nc, planted))
        assert tail == [str(e.event_id) for e in await store.read_all(20, 10)]
    finally:
        terminate(relay)
        await nc.close()


async def test_a_checkpoint_beyond_the_store_is_replaced_by_what_the_stream_holds(
    store: EventStore, database_url: str, nats_server: Server, tmp_path: Path
) -> None:
    """A checkpoint that an earlier relay saved from a forged header: the relay resumes after
    the newest event the stream is proven to hold, republishing nothing and skipping
    nothing."""
    settings = settings_for(database_url, nats_server)
    nc = await nats_connect(nats_server)
    await append_many(store, 15)
    await _relay_process_published(store, nc, settings, tmp_path, 15)
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE checkpoints SET position = $1 WHERE name = 'relay'", 2**62)
    relay = start_service("relay", settings, tmp_path)
    try:
        await append_many(store, 5)
        await eventually(lambda: _has(nc, 20), what="5 later events published")
        await asyncio.sleep(1.0)
        published = await stream_messages(nc)
        assert published == [(str(e.event_id), e.position) for e in await store.read_all(0, 50)]
        async with store.pool.acquire() as conn:
            checkpoint = await conn.fetchval(
                "SELECT position FROM checkpoints WHERE name = 'relay'")
        assert checkpoint == await store.head() == 20
    finally:
        terminate(relay)
        await nc.close()


async def stream_messages_after(nc, seq: int) -> list[str]:  # type: ignore[no-untyped-def]
    """The Nats-Msg-Id of every message after stream sequence ``seq``."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.EVENTS_STREAM)
    out = []
    for n in range(seq + 1, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.EVENTS_STREAM, n)
        out.append((msg.headers or {})["Nats-Msg-Id"])
    return out


async def commit_published(store: EventStore, js: JetStreamContext, count: int) -> None:
    """``count`` events committed by a cloner that publishes them at once (``Herald``)."""
    store.publisher = Herald(js, "cloner")
    try:
        for i in range(count):
            await store.commit([Append(f"vm-{i % 3}", [VmStopped(vm_id=str(i))])], META)
    finally:
        store.publisher = None


async def test_events_published_at_once_reach_the_stream_once(
    store: EventStore, nc: NATS, relay: None
) -> None:
    """The committer publishes its events before the relay: each is in the stream once, with
    its stored position, marked as the committer's, its envelope the stored one."""
    await commit_published(store, nc.jetstream(), 20)
    await eventually(lambda: _has(nc, 20), what="20 events in JetStream")
    await asyncio.sleep(1.0)  # the relay's copies would arrive now
    events = await store.read_all(0, 100)
    assert sorted(await stream_messages(nc)) == sorted(
        (str(e.event_id), e.position) for e in events)
    js = nc.jetstream()
    marks = set()
    for seq in range(1, len(events) + 1):
        msg = await js.get_msg(subjects.EVENTS_STREAM, seq)
        marks.add((msg.headers or {}).get(subjects.DIRECT_HEADER))
        envelope = decode_envelope(msg.data or b"")
        stored = next(e for e in events if str(e.event_id) == envelope.id)
        assert envelope == stored.envelope()
    assert "cloner" in marks  # the relay may win a race now and then, not every one


async def test_a_relay_resumes_before_the_events_no_one_published(
    store: EventStore, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events the relay published, then events whose committer died before publishing
    them, then events their committers published, newest in the stream; the relay down
    meanwhile, past JetStream's duplicate window. It resumes after the newest event it
    published itself (the committers' messages prove nothing of the events before them),
    publishes the events no one had, and not again those the stream holds: each once."""
    monkeypatch.setattr(bus, "DUPLICATE_WINDOW_S", 1.0)
    monkeypatch.setattr(relay_module, "DUPLICATE_WINDOW_S", 1.0)
    monkeypatch.setattr(relay_module, "WINDOW_MARGIN_S", 0.5)
    js = nc.jetstream()

    async def relay_until(count: int) -> None:
        task = asyncio.create_task(Relay(store, js).run())
        try:
            await eventually(lambda: _has(nc, count), what=f"{count} events in JetStream")
            await asyncio.sleep(relay_module.SAVE_EVERY_S + 0.5)  # its checkpoint saved
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    await append_many(store, 5)
    await relay_until(5)
    await append_many(store, 5)  # committed; their committer died before publishing
    await commit_published(store, js, 5)
    await eventually(lambda: _has(nc, 10), what="the committers' 5 events in JetStream")
    assert await stream_count(nc) == 10
    await asyncio.sleep(1.5)  # past the duplicate window: JetStream would keep a repeat
    await relay_until(15)
    await asyncio.sleep(0.5)
    events = await store.read_all(0, 100)
    assert len(events) == 15
    assert sorted(await stream_messages(nc)) == sorted(
        (str(e.event_id), e.position) for e in events)
    async with store.pool.acquire() as conn:
        checkpoint = await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'relay'")
    assert checkpoint == await store.head() == 15
