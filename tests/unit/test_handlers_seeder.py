"""The seeder's handlers in process, with the planner ahead of them: an in-memory store and
the fake driver."""

from __future__ import annotations

import asyncio

from proto import streams
from proto.events import (
    AnyEvent,
    JobCompleted,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    VmDeployFailed,
    VmExpunged,
    VmSnapshotDeleted,
    VmSourceReady,
)
from shared.bus import Outcome
from shared.domain import seed
from shared.drivers.fake import FakeHypervisor
from shared.eventstore import MemoryEventStore, RecordedEvent
from tests.kit import (
    META,
    CountsConflicts,
    Delivery,
    World,
    deploy,
    given,
    imported,
    new_stream,
    pipeline,
)


async def setup() -> tuple[MemoryEventStore, FakeHypervisor, World, Delivery]:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    world = await imported(store, fake)
    delivery = pipeline(store, fake, "planner", "seeder")
    return store, fake, world, delivery


async def vm_events(store: MemoryEventStore, vm_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(streams.vm(vm_id))]


async def seed_events(store: MemoryEventStore, world: World) -> list[AnyEvent]:
    stream = streams.seed(world.snapshot_id, world.pool_id)
    return [e.event() for e in await store.read_stream(stream)]


async def request(store: MemoryEventStore, world: World, vm_id: str,
                  template_id: str | None = None) -> None:
    """A deploy from the world's snapshot, or from ``template_id``."""
    await new_stream(store, streams.vm(vm_id), deploy(
        vm_id, pool_id=world.pool_id, template_id=template_id,
        vm_snapshot_id=None if template_id else world.snapshot_id))


async def test_racing_deploys_seed_the_snapshot_once_and_all_get_its_template() -> None:
    store, fake, world, delivery = await setup()
    for vm_id in ("a", "b", "c"):
        await request(store, world, vm_id)

    await delivery.settle()

    seeded = [e for e in await seed_events(store, world) if isinstance(e, TemplateSeeded)]
    assert len(seeded) == 1
    templates = [vm for vm in fake.vms.values() if vm.template]
    assert [t.ref for t in templates] == [seeded[0].template_ref]
    for vm_id in ("a", "b", "c"):
        ready = (await vm_events(store, vm_id))[-1]
        assert isinstance(ready, VmSourceReady) and ready.template_ref == seeded[0].template_ref

    # A later deploy uses the ready template at once: no second seed.
    await request(store, world, "d")
    await delivery.settle()
    assert isinstance((await vm_events(store, "d"))[-1], VmSourceReady)
    assert len([vm for vm in fake.vms.values() if vm.template]) == 1


async def test_a_refused_seed_fails_it_and_every_waiting_deploy() -> None:
    store, fake, world, delivery = await setup()
    fake.fail("seed_template")
    for vm_id in ("a", "b"):
        await request(store, world, vm_id)

    await delivery.settle()

    assert isinstance((await seed_events(store, world))[-1], TemplateSeedFailed)
    for vm_id in ("a", "b"):
        failed, job = (await vm_events(store, vm_id))[-2:]
        assert isinstance(failed, VmDeployFailed) and failed.step == "seed"
        assert "seeding the template failed: seed_template: injected refusal" in failed.reason
        assert isinstance(job, JobCompleted) and not job.succeeded
    # The next deploy starts a new seed, which succeeds.
    await request(store, world, "c")
    await delivery.settle()
    assert isinstance((await vm_events(store, "c"))[-1], VmSourceReady)


async def test_a_seed_without_answer_is_retried_and_then_succeeds() -> None:
    store, fake, world, delivery = await setup()
    fake.fail("seed_template", transient=True, times=2)
    await request(store, world, "a")

    delivered = await delivery.settle()

    seeds = [d for d in delivered if d.event_type == "TemplateSeedStarted"]
    assert [(d.attempts, d.outcome) for d in seeds] == [(3, Outcome.HANDLED)]
    assert isinstance((await vm_events(store, "a"))[-1], VmSourceReady)


async def test_a_seed_that_never_answers_is_given_up_and_its_deploys_end_in_error() -> None:
    store, fake, world, delivery = await setup()
    fake.fail("seed_template", transient=True, times=4)
    await request(store, world, "a")

    delivered = await delivery.settle()

    seeds = [d for d in delivered if d.event_type == "TemplateSeedStarted"]
    assert [(d.attempts, d.outcome) for d in seeds] == [(4, Outcome.ABANDONED)]
    failure = (await seed_events(store, world))[-1]
    assert isinstance(failure, TemplateSeedFailed) and "gave up after 4 attempts" in failure.reason
    failed = (await vm_events(store, "a"))[-2]
    assert isinstance(failed, VmDeployFailed) and failed.step == "seed"
    # Its capacity was released by the planner.
    released = [e.type for e in store.events if e.type == "CapacityReleased"]
    assert released == ["CapacityReleased"]


async def test_a_deploy_from_a_seeded_template_uses_it_and_one_from_an_unknown_fails() -> None:
    store, _, world, delivery = await setup()
    await request(store, world, "a")
    await delivery.settle()
    template_id = streams.seed_template_id(world.snapshot_id, world.pool_id)

    await request(store, world, "b", template_id=template_id)
    await request(store, world, "c", template_id="no-such-template")
    await delivery.settle()

    ready = (await vm_events(store, "b"))[-1]
    assert isinstance(ready, VmSourceReady) and ready.template_id == template_id
    failed = (await vm_events(store, "c"))[-2]
    assert isinstance(failed, VmDeployFailed)
    assert "template no-such-template no longer exists" in failed.reason


async def test_a_seed_whose_snapshot_was_deleted_fails() -> None:
    store, fake, world, delivery = await setup()
    await given(store, streams.vm_snapshot(world.snapshot_id),
                VmSnapshotDeleted(snapshot_id=world.snapshot_id, vm_id=world.vm_id))
    await request(store, world, "a")

    await delivery.settle()

    failure = [e for e in await seed_events(store, world) if isinstance(e, TemplateSeedFailed)]
    assert len(failure) == 1 and "no longer exists" in failure[0].reason
    assert isinstance((await vm_events(store, "a"))[-2], VmDeployFailed)
    assert not [vm for vm in fake.vms.values() if vm.template]


async def test_the_template_of_a_deleted_snapshot_goes_with_its_last_vm() -> None:
    store, fake, world, delivery = await setup()
    for vm_id in ("a", "b"):
        await request(store, world, vm_id)
    await delivery.settle()
    assert [vm for vm in fake.vms.values() if vm.template]

    await given(store, streams.vm_snapshot(world.snapshot_id),
                VmSnapshotDeleted(snapshot_id=world.snapshot_id, vm_id=world.vm_id))
    await given(store, streams.vm("a"), VmExpunged(vm_id="a"))
    await delivery.settle()
    # VM b still depends on the template.
    assert [vm for vm in fake.vms.values() if vm.template]
    assert not isinstance((await seed_events(store, world))[-1], TemplateRemoved)

    await given(store, streams.vm("b"), VmExpunged(vm_id="b"))
    await delivery.settle()
    assert not [vm for vm in fake.vms.values() if vm.template]
    assert isinstance((await seed_events(store, world))[-1], TemplateRemoved)
    assert seed.fold(await seed_events(store, world)).status == seed.DESTROYED


async def test_placements_of_one_snapshot_handled_at_once_all_wait_on_one_seed() -> None:
    store, _, world, delivery = await setup()
    for vm_id in ("a", "b", "c", "d"):
        await request(store, world, vm_id)
    planner = delivery.dispatchers[0]
    requested = [e for e in store.events if e.type == "VmDeployRequested"]

    results = await asyncio.gather(*(planner.dispatch(str(r.event_id), 1) for r in requested))

    assert {r.outcome for r in results} == {Outcome.HANDLED}
    state = seed.fold(await seed_events(store, world))
    assert state.status == seed.CREATING and sorted(state.waiters) == ["a", "b", "c", "d"]
    # The first placement started the seed; the seeder makes it once.
    assert [e.meta().actor for e in await store.read_stream(
        streams.seed(world.snapshot_id, world.pool_id))] == ["planner"] * 5
    await delivery.settle()
    assert seed.fold(await seed_events(store, world)).status == seed.READY
    for vm_id in ("a", "b", "c", "d"):
        assert isinstance((await vm_events(store, vm_id))[-1], VmSourceReady)


async def test_a_vm_deployed_from_the_template_keeps_it_as_one_deployed_from_the_snapshot(
) -> None:
    store, fake, world, delivery = await setup()
    await request(store, world, "a")
    await delivery.settle()
    template_id = streams.seed_template_id(world.snapshot_id, world.pool_id)
    await request(store, world, "b", template_id=template_id)
    await delivery.settle()

    await given(store, streams.vm_snapshot(world.snapshot_id),
                VmSnapshotDeleted(snapshot_id=world.snapshot_id, vm_id=world.vm_id))
    await given(store, streams.vm("a"), VmExpunged(vm_id="a"))
    await delivery.settle()
    # VM b's disk is backed by the template: it stays.
    assert [vm for vm in fake.vms.values() if vm.template]
    assert not isinstance((await seed_events(store, world))[-1], TemplateRemoved)

    # Its expunge is what lets the template go.
    await given(store, streams.vm("b"), VmExpunged(vm_id="b"))
    await delivery.settle()
    assert not [vm for vm in fake.vms.values() if vm.template]
    assert isinstance((await seed_events(store, world))[-1], TemplateRemoved)


async def test_a_deploy_of_a_ready_seed_gets_its_source_in_the_placements_own_commit() -> None:
    store, _, world, delivery = await setup()
    await request(store, world, "a")
    await delivery.settle()
    template_id = streams.seed_template_id(world.snapshot_id, world.pool_id)
    seed_version = await store.stream_version(streams.seed(world.snapshot_id, world.pool_id))
    template = seed.fold(await seed_events(store, world)).template
    assert template is not None

    await request(store, world, "b")
    await request(store, world, "c", template_id=template_id)
    delivered = await delivery.settle()

    for vm_id in ("b", "c"):
        recorded = await store.read_stream(streams.vm(vm_id))
        assert [e.type for e in recorded] == [
            "VmDeployRequested", "VmPlaced", "VmSourceReady"]
        placed, ready = recorded[1:]
        # One commit of the planner's, caused by the request.
        assert placed.meta() == ready.meta() and ready.meta().actor == "planner"
        assert ready.meta().causation_id == str(recorded[0].event_id)
        assert ready.event() == VmSourceReady(
            vm_id=vm_id, template_id=template_id, template_ref=template.template_ref,
            base_snapshot_ref=template.base_snapshot_ref, pool_id=world.pool_id)
    # The seeder was handed nothing; the seed stream is untouched.
    assert [d for d in delivered if d.consumer == "seeder"] == []
    assert await store.stream_version(
        streams.seed(world.snapshot_id, world.pool_id)) == seed_version


class RemovedWhilePlacing(CountsConflicts, MemoryEventStore):
    """The seed's template is removed once, just after a placement read the seed ready."""

    def __init__(self) -> None:
        super().__init__()
        self.remove: tuple[str, str] | None = None

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        found = await super().read_stream(stream_id, from_version)
        if self.remove is not None and stream_id == streams.seed(*self.remove):
            state = seed.fold([e.event() for e in found])
            removal = seed.removal(state, *self.remove)
            assert removal is not None
            await self.commit([removal], META)
            self.remove = None
        return found



async def test_a_template_removed_while_a_vm_is_placed_is_not_its_source() -> None:
    store, fake = RemovedWhilePlacing(), FakeHypervisor.standard()
    world = await imported(store, fake)
    delivery = pipeline(store, fake, "planner", "seeder")
    await request(store, world, "a")
    await delivery.settle()
    first = seed.fold(await seed_events(store, world)).template
    assert first is not None

    store.remove = (world.snapshot_id, world.pool_id)
    await request(store, world, "b")
    await delivery.settle()

    # The placement read the seed ready, conflicted on its version, and decided again: it
    # started a new seed, and b's one source is the new template.
    assert store.conflicts == 1
    sources = [e for e in await vm_events(store, "b") if isinstance(e, VmSourceReady)]
    assert len(sources) == 1
    seeded = [e for e in await seed_events(store, world) if isinstance(e, TemplateSeeded)]
    assert len(seeded) == 2 and seed.fold(await seed_events(store, world)).waiters == ["b"]
    assert sources[0].template_ref == seeded[1].template_ref
