"""Events decided several at once under their lock (``Handlers.on_many``), in process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import VmDeployRequested, VmPlaced
from shared.bus import Decided, Dispatcher, Handlers, Outcome
from shared.eventstore import Append, MemoryEventStore
from tests.kit import deliver, deploy, new_stream


class Toy:
    """Places each VM on "h1", except those named in ``refuse``; records each batch."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse or set()

    async def decide(self, requests: Sequence[tuple[VmDeployRequested, EventEnvelope]]
                     ) -> list[Decided]:
        self.batches.append([r.vm_id for r, _ in requests])
        out: list[Decided] = []
        for request, envelope in requests:
            if request.vm_id in self.refuse:
                self.refuse.discard(request.vm_id)  # refused once
                out.append(RuntimeError(f"no decision for {request.vm_id}"))
            else:
                out.append([Append(envelope.stream_id, [VmPlaced(
                    vm_id=request.vm_id, host_id="h1", pool_id=request.pool_id,
                    cpu_number=1, cpu_speed=1000, memory_mb=1024)], envelope.version)])
        return out


async def requested(store: MemoryEventStore, count: int) -> list[str]:
    for n in range(count):
        await new_stream(store, streams.vm(f"v{n}"), deploy(f"v{n}"))
    return [str(e.event_id) for e in await store.read_all() if e.type == "VmDeployRequested"]


async def test_those_waiting_for_the_lock_are_decided_together_and_committed_each() -> None:
    store, toy = MemoryEventStore(), Toy(refuse={"v2"})
    dispatcher = Dispatcher("toy", store, Handlers().on_many(
        VmDeployRequested, toy.decide, serial="toy"))
    ids = await requested(store, 5)

    async with store.decision_lock("toy"):  # all five wait for it
        waiting = [asyncio.create_task(dispatcher.dispatch(i, 1)) for i in ids]
        await asyncio.sleep(0.01)
    results = await asyncio.gather(*waiting)

    assert toy.batches == [["v0", "v1", "v2", "v3", "v4"]]
    assert [r.outcome for r in results] == [Outcome.HANDLED, Outcome.HANDLED, Outcome.RETRY,
                                            Outcome.HANDLED, Outcome.HANDLED]
    for n in (0, 1, 3, 4):
        assert isinstance((await store.read_stream(streams.vm(f"v{n}")))[-1].event(), VmPlaced)
    assert len(await store.read_stream(streams.vm("v2"))) == 1  # nothing appended for it
    # Delivered again, it is decided alone; the others, delivered again, are duplicates.
    assert [(await deliver(dispatcher, i))[0].outcome for i in ids] == [
        Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.HANDLED, Outcome.DUPLICATE,
        Outcome.DUPLICATE]
    assert toy.batches[1:] == [["v2"]]


async def test_a_waiter_handed_back_before_its_turn_is_not_decided() -> None:
    store, toy = MemoryEventStore(), Toy()
    dispatcher = Dispatcher("toy", store, Handlers().on_many(
        VmDeployRequested, toy.decide, serial="toy"))
    ids = await requested(store, 3)

    async with store.decision_lock("toy"):
        waiting = [asyncio.create_task(dispatcher.dispatch(i, 1)) for i in ids]
        await asyncio.sleep(0.01)
        waiting[1].cancel()  # its consumer hands its message back to NATS
    results = await asyncio.gather(*waiting, return_exceptions=True)

    assert isinstance(results[1], asyncio.CancelledError)
    assert toy.batches == [["v0", "v2"]]
    assert len(await store.read_stream(streams.vm("v1"))) == 1
