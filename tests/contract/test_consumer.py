"""Durable consumers on real NATS JetStream and PostgreSQL: once in effect, never crashed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from nats.aio.client import Client as NATS

from proto import subjects
from proto.envelope import EventEnvelope, Metadata
from proto.events import (
    JobCompleted,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmPlaced,
    VmRecovered,
    VmStopped,
)
from shared import metrics
from shared.bus import Consumer, Dispatcher, Handlers, Outcome
from shared.eventstore import Append, EventStore, NewEvent, RecordedEvent
from tests.helpers import eventually


class Destroyer:
    """A handler that answers every VmStopped with a VmDestroyed on the same stream."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, envelope: EventEnvelope) -> Sequence[Append]:
        self.calls += 1
        assert isinstance(envelope.data, VmStopped)
        return [Append(envelope.stream_id, [VmDestroyed(vm_id=envelope.data.vm_id)],
                       envelope.version)]


async def run_consumer(consumer: Consumer) -> asyncio.Task[None]:
    return asyncio.create_task(consumer.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_redelivered_message_is_recognised_and_skipped(
    store: EventStore, nc: NATS, relay: None
) -> None:
    handler = Destroyer()
    consumer = Consumer("test-destroyer", nc.jetstream(), store, {"VmStopped": handler})
    task = await run_consumer(consumer)
    try:
        meta = Metadata(correlation_id="corr-7", actor="acct/user")
        await store.append("vm-a", [NewEvent(VmStopped(vm_id="a"), meta)])
        await eventually(lambda: _version_is(store, "vm-a", 2), what="the handler's event")

        # The same event again, as JetStream redelivers it after a lost ack (a new msg id,
        # so the stream's own dedupe does not hide it).
        original = (await store.read_stream("vm-a"))[0]
        await nc.jetstream().publish(
            subjects.event_subject("vm-a", "VmStopped"), original.wire(),
            headers={"Nats-Msg-Id": "redelivery-1"},
        )
        await eventually(lambda: _handled(consumer.name, "duplicate", 1), what="the duplicate")
    finally:
        await stop(task)

    events = await store.read_stream("vm-a")
    assert [e.type for e in events] == ["VmStopped", "VmDestroyed"]
    assert handler.calls == 1
    result = events[1].meta()
    assert result.correlation_id == "corr-7"
    assert result.causation_id == str(original.event_id)
    assert result.actor == "test-destroyer"


async def test_malformed_message_is_rejected_counted_and_harmless(
    store: EventStore, nc: NATS, relay: None
) -> None:
    handler = Destroyer()
    consumer = Consumer("test-malformed", nc.jetstream(), store, {"VmStopped": handler})
    task = await run_consumer(consumer)
    try:
        js = nc.jetstream()
        subject = subjects.event_subject("vm-b", "VmStopped")
        for n, junk in enumerate([b"not json", b'{"id": 3}', b'{"type": "VmStopped"}', b"\xff"]):
            await js.publish(subject, junk, headers={"Nats-Msg-Id": f"junk-{n}"})
        await store.append("vm-b", [NewEvent(VmStopped(vm_id="b"), Metadata(correlation_id="c"))])
        await eventually(lambda: _version_is(store, "vm-b", 2), what="the valid message handled")
    finally:
        await stop(task)
    assert _count(metrics.MALFORMED_MESSAGES.labels("test-malformed")) == 4
    assert handler.calls == 1
    assert await store.head() == 2  # nothing malformed reached the store


async def test_handler_failure_is_retried_until_it_succeeds(
    store: EventStore, nc: NATS, relay: None
) -> None:
    attempts = 0

    async def flaky(envelope: EventEnvelope) -> Sequence[Append]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("vCenter did not answer")
        return [Append(envelope.stream_id, [VmDestroyed(vm_id="c")], envelope.version)]

    consumer = Consumer("test-flaky", nc.jetstream(), store, {"VmStopped": flaky})
    task = await run_consumer(consumer)
    try:
        await store.append("vm-c", [NewEvent(VmStopped(vm_id="c"), Metadata(correlation_id="c"))])
        await eventually(lambda: _version_is(store, "vm-c", 2), within=30,
                         what="the handler to succeed on its third attempt")
    finally:
        await stop(task)
    assert attempts == 3
    assert _count(metrics.HANDLER_FAILURES.labels("test-flaky", "VmStopped")) == 2


async def test_last_attempt_ends_the_deploy_in_error_instead_of_dropping_it(
    store: EventStore, nc: NATS, relay: None
) -> None:
    async def broken(envelope: EventEnvelope) -> Sequence[Append]:
        raise TimeoutError("vCenter did not answer within 30s")

    consumer = Consumer("test-giveup", nc.jetstream(), store, {"VmPlaced": broken},
                        max_deliver=3)
    request = VmDeployRequested(
        vm_id="d", job_id="job-d", account_id="acct", user_id="user", name="web-d",
        display_name="web-d", instance_name="i-acct-d-VM", zone_id="z", service_offering_id="so",
        cpu_number=1, cpu_speed=500, memory_mb=512, pool_id="p", network_ids=[])
    placed = VmPlaced(vm_id="d", host_id="h", pool_id="p", cpu_number=1, cpu_speed=500,
                      memory_mb=512)
    task = await run_consumer(consumer)
    try:
        meta = Metadata(correlation_id="c")
        await store.append("vm-d", [NewEvent(request, meta), NewEvent(placed, meta)])
        await eventually(lambda: _version_is(store, "vm-d", 4), within=30,
                         what="the deploy settled as failed after the last attempt")
    finally:
        await stop(task)
    failed, job = [e.event() for e in (await store.read_stream("vm-d"))[2:]]
    assert isinstance(failed, VmDeployFailed) and isinstance(job, JobCompleted)
    assert "failed at seed: gave up after 3 attempts: TimeoutError: vCenter did not answer" \
        in failed.reason
    assert job.job_id == "job-d" and not job.succeeded
    assert _count(metrics.HANDLER_FAILURES.labels("test-giveup", "VmPlaced")) == 3
    assert _count(metrics.MESSAGES_HANDLED.labels("test-giveup", "VmPlaced", "abandoned")) == 1


async def test_stopping_finishes_the_message_in_hand_then_returns(
    store: EventStore, nc: NATS, relay: None
) -> None:
    started = asyncio.Event()

    async def slow(envelope: EventEnvelope) -> Sequence[Append]:
        started.set()
        await asyncio.sleep(1.0)
        return [Append(envelope.stream_id, [VmDestroyed(vm_id="e")], envelope.version)]

    stopping = asyncio.Event()
    consumer = Consumer("test-drain", nc.jetstream(), store, {"VmStopped": slow},
                        stopping=stopping)
    task = await run_consumer(consumer)
    try:
        await store.append("vm-e", [NewEvent(VmStopped(vm_id="e"), Metadata(correlation_id="c"))])
        await asyncio.wait_for(started.wait(), 30)
        stopping.set()
        await asyncio.wait_for(task, 30)  # returns by itself once the message is done
    finally:
        await stop(task)
    assert [e.type for e in await store.read_stream("vm-e")] == ["VmStopped", "VmDestroyed"]


async def test_cancelled_consumer_hands_its_message_back_for_immediate_redelivery(
    store: EventStore, nc: NATS, relay: None
) -> None:
    started = asyncio.Event()

    async def hangs(envelope: EventEnvelope) -> Sequence[Append]:
        started.set()
        await asyncio.sleep(3600)
        return []

    # ack_wait of 10 minutes: only the hand-back can bring the message back within the test.
    first = Consumer("test-handback", nc.jetstream(), store, {"VmStopped": hangs}, ack_wait=600)
    task = await run_consumer(first)
    await store.append("vm-f", [NewEvent(VmStopped(vm_id="f"), Metadata(correlation_id="c"))])
    await asyncio.wait_for(started.wait(), 30)
    await stop(task)

    handler = Destroyer()
    second = Consumer("test-handback", nc.jetstream(), store, {"VmStopped": handler},
                      ack_wait=600)
    task = await run_consumer(second)
    try:
        await eventually(lambda: _version_is(store, "vm-f", 2), within=30,
                         what="the handed-back message handled by the next consumer")
    finally:
        await stop(task)
    assert handler.calls == 1


def _count(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


async def _version_is(store: EventStore, stream: str, version: int) -> bool:
    return await store.stream_version(stream) == version


async def _handled(consumer: str, outcome: str, n: int) -> bool:
    return _count(metrics.MESSAGES_HANDLED.labels(consumer, "VmStopped", outcome)) >= n


async def test_a_handler_on_its_stream_has_it_read_with_its_event_and_anew_after_a_conflict(
    store: EventStore,
) -> None:
    meta = Metadata(correlation_id="corr-s", actor="acct/user")
    await store.append("vm-s", [NewEvent(VmRecovered(vm_id="s"), meta),
                                NewEvent(VmStopped(vm_id="s"), meta)])
    stopped = (await store.read_stream("vm-s"))[1]
    read: list[str] = []
    given: list[list[str]] = []

    async def read_stream(stream_id: str) -> list[RecordedEvent]:
        read.append(stream_id)
        return await store.read_stream(stream_id)

    async def destroy(event: VmStopped, envelope: EventEnvelope,
                      stream: Sequence[RecordedEvent]) -> Sequence[Append]:
        given.append([e.type for e in stream])
        if len(given) == 1:  # another writer moves the stream on before this commits
            await store.append("vm-s", [NewEvent(VmRecovered(vm_id="s"), meta)])
        return [Append(envelope.stream_id, [VmDestroyed(vm_id=event.vm_id)],
                       stream[-1].version)]

    dispatcher = Dispatcher("streamer", store,
                            Handlers().on_stream(VmStopped, destroy, read_stream))
    done = await dispatcher.dispatch(str(stopped.event_id), 1, "VmStopped")

    assert done.outcome is Outcome.HANDLED
    # The first run had the stream with its event; the rerun read it again, moved on.
    assert given == [["VmRecovered", "VmStopped"], ["VmRecovered", "VmStopped", "VmRecovered"]]
    assert read == ["vm-s"]
    assert [e.type for e in await store.read_stream("vm-s")][-1] == "VmDestroyed"
    # Not told its type (a message that says another), the handler reads its stream itself.
    (other,) = await store.append("vm-t", [NewEvent(VmStopped(vm_id="t"), meta)])
    done = await dispatcher.dispatch(str(other.event_id), 1, "VmRecovered")
    assert done.outcome is Outcome.HANDLED
    assert read == ["vm-s", "vm-t"] and given[-1] == ["VmStopped"]
