"""The cloner's handlers in process, with the planner and the seeder ahead of them: an
in-memory store and the fake driver."""

from __future__ import annotations

from proto import streams
from proto.events import (
    AnyEvent,
    InventoryObjectGone,
    JobCompleted,
    NicCreated,
    PoolSettingChanged,
    VmCreated,
    VmDeployFailed,
    VmDestroyed,
    VmDestroyRequested,
    VmExpunged,
    VmPowerRequested,
    VmRebooted,
    VmReverted,
    VmRevertRequested,
    VmSnapshotDeleted,
    VmSnapshotDeleteRequested,
    VmSnapshotFailed,
    VmSnapshotRequested,
    VmSnapshotTaken,
    VmStarted,
    VmStopped,
    VolumeAttached,
    VolumeCreated,
    VolumeDetached,
)
from proto.streams import stable_id
from shared.bus import Outcome
from shared.domain import vm
from shared.drivers.base import RECONFIGURE
from shared.drivers.fake import FakeHypervisor
from shared.errors import INTERNAL_ERROR
from shared.eventstore import MemoryEventStore, Repository
from tests.kit import Delivery, World, deploy, given, imported, new_stream, pipeline


async def setup() -> tuple[MemoryEventStore, FakeHypervisor, World, Delivery]:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    world = await imported(store, fake)
    delivery = pipeline(store, fake, "planner", "seeder", "cloner")
    return store, fake, world, delivery


async def events(store: MemoryEventStore, stream_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(stream_id)]


async def request(store: MemoryEventStore, world: World, vm_id: str) -> None:
    await new_stream(store, streams.vm(vm_id), deploy(
        vm_id, pool_id=world.pool_id, vm_snapshot_id=world.snapshot_id,
        network_ids=world.network_ids))


def job(vm_id: str, what: str) -> str:
    return stable_id("job", vm_id, what)


async def job_result(store: MemoryEventStore, stream_id: str, job_id: str) -> JobCompleted:
    return next(e for e in await events(store, stream_id)
                if isinstance(e, JobCompleted) and e.job_id == job_id)


async def running(store: MemoryEventStore, fake: FakeHypervisor, world: World,
                  delivery: Delivery, vm_id: str = "a") -> str:
    """A VM deployed and running; its ref in the fake."""
    await request(store, world, vm_id)
    await delivery.settle()
    machine = await Repository(store).vm(vm_id)
    assert machine.ref is not None and fake.vms[machine.ref].powered_on
    return machine.ref


async def reservations(store: MemoryEventStore) -> dict[str, tuple[int, int]]:
    hosts = [await Repository(store).host(h.id) for h in await store.hosts()]
    return {vm_id: held for h in hosts for vm_id, held in h.reservations.items()}


async def test_a_deploy_clones_the_seeded_template_onto_its_host_with_its_networks() -> None:
    store, fake, world, delivery = await setup()

    ref = await running(store, fake, world, delivery)

    made = fake.vms[ref]
    assert made.name == "i-acct-a-VM" and made.cpu_number == 1 and made.memory_mb == 1024
    assert [n.network_ref for n in made.nics] == ["network-1", "dvportgroup-1"]
    history = await events(store, streams.vm("a"))
    created = next(e for e in history if isinstance(e, VmCreated))
    assert created.linked and created.ref == ref
    nics = [e.nic for e in history if isinstance(e, NicCreated)]
    assert [n.network_id for n in nics] == world.network_ids
    assert isinstance(history[-2], VmStarted) and len(history[-2].task_ids) == 3
    assert history[-1] == JobCompleted(job_id=stable_id("job", "a"), succeeded=True)
    (root_id,) = (await store.attached_volumes(["a"]))["a"]
    (root,) = await events(store, streams.volume(root_id))
    assert isinstance(root, VolumeCreated) and root.volume_type == "ROOT"
    assert root.path == made.disks[0].path and root.pool_id == world.pool_id


async def test_a_pool_set_to_full_clones_gets_a_full_clone() -> None:
    store, fake, world, delivery = await setup()
    await given(store, streams.pool(world.pool_id), PoolSettingChanged(
        pool_id=world.pool_id, name=fake.kind.full_clone_setting, value="True"))

    await running(store, fake, world, delivery)

    created = next(e for e in await events(store, streams.vm("a")) if isinstance(e, VmCreated))
    assert not created.linked


async def test_a_refused_reconfigure_fails_the_deploy_and_leaves_nothing() -> None:
    store, fake, world, delivery = await setup()
    fake.fail(RECONFIGURE)
    await request(store, world, "a")

    await delivery.settle()

    failed, done = (await events(store, streams.vm("a")))[-2:]
    assert isinstance(failed, VmDeployFailed) and failed.step == RECONFIGURE
    assert failed.error_code == INTERNAL_ERROR and "injected refusal" in failed.reason
    assert isinstance(done, JobCompleted) and done.error_code == INTERNAL_ERROR
    assert await fake.find_vm("i-acct-a-VM") is None
    assert await reservations(store) == {}


async def test_a_clone_without_answer_is_retried_and_then_runs_once() -> None:
    store, fake, world, delivery = await setup()
    fake.fail(RECONFIGURE, transient=True, times=2)
    await request(store, world, "a")

    delivered = await delivery.settle()

    clones = [d for d in delivered if d.event_type == "VmSourceReady"]
    assert [(d.attempts, d.outcome) for d in clones] == [(3, Outcome.HANDLED)]
    assert [v.name for v in fake.vms.values()].count("i-acct-a-VM") == 1
    assert isinstance((await events(store, streams.vm("a")))[-2], VmStarted)


async def test_a_clone_that_never_answers_is_given_up_and_its_leftover_removed() -> None:
    store, fake, world, delivery = await setup()
    fake.fail(RECONFIGURE, transient=True, times=4)
    await request(store, world, "a")

    delivered = await delivery.settle()

    clones = [d for d in delivered if d.event_type == "VmSourceReady"]
    assert [(d.attempts, d.outcome) for d in clones] == [(4, Outcome.ABANDONED)]
    failed = (await events(store, streams.vm("a")))[-2]
    assert isinstance(failed, VmDeployFailed) and "gave up after 4 attempts" in failed.reason
    # The last attempt made a VM before it failed: the failure removed it.
    assert await fake.find_vm("i-acct-a-VM") is None
    assert await reservations(store) == {}


async def test_a_deploy_to_a_network_gone_meanwhile_fails_at_once() -> None:
    store, fake, world, delivery = await setup()
    gone = world.network_ids[1]
    await given(store, streams.network(gone), InventoryObjectGone(kind="network",
                                                                  object_id=gone))
    await request(store, world, "a")

    await delivery.settle()

    failed = (await events(store, streams.vm("a")))[-2]
    assert isinstance(failed, VmDeployFailed) and failed.step == "clone"
    assert f"network {gone} no longer exists" in failed.reason
    assert await fake.find_vm("i-acct-a-VM") is None


async def test_stop_start_and_reboot_act_on_the_vm_and_complete_their_jobs() -> None:
    store, fake, world, delivery = await setup()
    ref = await running(store, fake, world, delivery)
    stream = streams.vm("a")

    for action, expected, powered in (("stop", VmStopped, False), ("start", VmStarted, True),
                                      ("reboot", VmRebooted, True)):
        await given(store, stream, VmPowerRequested(vm_id="a", job_id=job("a", action),
                                                    action=action))
        await delivery.settle()
        done, result = (await events(store, stream))[-2:]
        assert isinstance(done, expected)
        assert result == JobCompleted(job_id=job("a", action), succeeded=True)
        assert fake.vms[ref].powered_on is powered
    assert vm.fold("a", await events(store, stream)).state == vm.VmState.RUNNING


async def test_power_of_a_vm_never_made_fails_its_job() -> None:
    store, _, world, delivery = await setup()
    await given(store, streams.vm("x"), deploy("x", pool_id=world.pool_id),
                VmPowerRequested(vm_id="x", job_id=job("x", "stop"), action="stop"))
    # The cloner alone: the VM was never placed, so never made.
    delivery.dispatchers[:] = [d for d in delivery.dispatchers if d.name == "cloner"]

    await delivery.settle()

    result = await job_result(store, streams.vm("x"), job("x", "stop"))
    assert not result.succeeded and result.error_code == INTERNAL_ERROR
    assert result.error_text == "VM x has no VM in the fake hypervisor"


async def test_an_expunge_keeps_data_volumes_detached_and_frees_the_capacity() -> None:
    store, fake, world, delivery = await setup()
    ref = await running(store, fake, world, delivery)
    data_path = "[pool0] volumes/d1.disk"
    key, _ = await fake.attach_volume(ref, data_path, create_bytes=2**30)
    await given(store, streams.volume("d1"), VolumeCreated(
        volume_id="d1", account_id="acct-1", name="data", volume_type="DATADISK",
        pool_id=world.pool_id, size_bytes=2**30, path=data_path),
        VolumeAttached(volume_id="d1", vm_id="a", key=key))
    (root_id,) = [v for v in (await store.attached_volumes(["a"]))["a"] if v != "d1"]

    await given(store, streams.vm("a"), VmDestroyRequested(vm_id="a", job_id=job("a", "x"),
                                                           expunge=True))
    await delivery.settle()

    destroyed, expunged, result = (await events(store, streams.vm("a")))[-3:]
    assert isinstance(destroyed, VmDestroyed)
    assert result == JobCompleted(job_id=job("a", "x"), succeeded=True)
    assert expunged == VmExpunged(vm_id="a", volume_ids=[root_id])
    assert isinstance((await events(store, streams.volume("d1")))[-1], VolumeDetached)
    assert ref not in fake.vms and data_path in fake.files
    assert await store.attached_volumes(["a"]) == {}
    assert await reservations(store) == {}


async def test_a_destroy_without_expunge_powers_the_vm_off() -> None:
    store, fake, world, delivery = await setup()
    ref = await running(store, fake, world, delivery)

    await given(store, streams.vm("a"), VmDestroyRequested(vm_id="a", job_id=job("a", "x"),
                                                           expunge=False))
    await delivery.settle()

    destroyed, result = (await events(store, streams.vm("a")))[-2:]
    assert isinstance(destroyed, VmDestroyed) and isinstance(result, JobCompleted)
    assert not fake.vms[ref].powered_on
    assert list(await reservations(store)) == ["a"]


async def snapshot(store: MemoryEventStore, delivery: Delivery, vm_id: str, snapshot_id: str,
                   name: str) -> None:
    await given(store, streams.vm(vm_id), VmSnapshotRequested(
        job_id=job(vm_id, snapshot_id), snapshot_id=snapshot_id, vm_id=vm_id, name=name,
        description="", memory=False, quiesce=False))
    await delivery.settle()


async def test_a_snapshot_is_taken_with_its_parent_found_by_its_ref() -> None:
    store, fake, world, delivery = await setup()

    await snapshot(store, delivery, world.vm_id, "s-1", "first")
    await snapshot(store, delivery, world.vm_id, "s-2", "second")

    first, second = [(await Repository(store).vm_snapshot(s)).live for s in ("s-1", "s-2")]
    assert isinstance(first, VmSnapshotTaken) and isinstance(second, VmSnapshotTaken)
    # The imported VM's own snapshot came first, then each new one is the current's child.
    assert first.parent_id == world.snapshot_id and second.parent_id == "s-1"
    assert first.account_id == "acct-1" and second.ref in fake.vms[vm0_ref(fake)].snapshots
    result = await job_result(store, streams.vm(world.vm_id), job(world.vm_id, "s-2"))
    assert result.succeeded


def vm0_ref(fake: FakeHypervisor) -> str:
    return next(ref for ref, v in fake.vms.items() if v.name == "vm0")


async def test_a_refused_snapshot_fails_it_and_its_job() -> None:
    store, fake, world, delivery = await setup()
    fake.fail("create_snapshot")

    await snapshot(store, delivery, world.vm_id, "s-1", "first")

    failed, result = (await events(store, streams.vm(world.vm_id)))[-2:]
    assert isinstance(failed, VmSnapshotFailed) and "injected refusal" in failed.reason
    assert isinstance(result, JobCompleted) and result.error_code == INTERNAL_ERROR
    assert await store.read_stream(streams.vm_snapshot("s-1")) == []


async def test_delete_and_revert_act_on_the_snapshot_and_fail_once_it_is_gone() -> None:
    store, fake, world, delivery = await setup()
    await snapshot(store, delivery, world.vm_id, "s-1", "first")
    taken = (await Repository(store).vm_snapshot("s-1")).live
    assert taken is not None
    vm_stream = streams.vm(world.vm_id)

    await given(store, vm_stream, VmRevertRequested(job_id=job("r", "1"), snapshot_id="s-1",
                                                    vm_id=world.vm_id))
    await delivery.settle()
    reverted = (await events(store, vm_stream))[-2]
    assert reverted == VmReverted(snapshot_id="s-1", vm_id=world.vm_id, powered_on=False)

    for n in ("1", "2"):
        await given(store, vm_stream, VmSnapshotDeleteRequested(
            job_id=job("d", n), snapshot_id="s-1", vm_id=world.vm_id))
        await delivery.settle()
    assert taken.ref not in fake.vms[vm0_ref(fake)].snapshots
    assert isinstance((await events(store, streams.vm_snapshot("s-1")))[-1], VmSnapshotDeleted)
    assert (await job_result(store, vm_stream, job("d", "1"))).succeeded
    again = await job_result(store, vm_stream, job("d", "2"))
    assert again.error_text == "VM snapshot s-1 no longer exists"

    await given(store, vm_stream, VmRevertRequested(job_id=job("r", "2"), snapshot_id="s-1",
                                                    vm_id=world.vm_id))
    await delivery.settle()
    assert not (await job_result(store, vm_stream, job("r", "2"))).succeeded


def test_a_failed_deploy_carries_cloudstacks_internal_error_unless_told_otherwise() -> None:
    assert VmDeployFailed(vm_id="a", step="clone", reason="r").error_code == INTERNAL_ERROR
