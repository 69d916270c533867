"""The volume service's handlers in process, beside the planner, seeder and cloner: an
in-memory store and the fake driver."""

from __future__ import annotations

from proto import streams
from proto.events import (
    AnyEvent,
    InventoryObjectGone,
    JobCompleted,
    VmSnapshotTaken,
    VolumeAllocated,
    VolumeAttached,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
    VolumeResized,
    VolumeResizeRequested,
)
from proto.streams import stable_id
from shared.bus import Outcome
from shared.domain import volume
from shared.domain.vm import volume_id
from shared.drivers.fake import FakeHypervisor
from shared.errors import INTERNAL_ERROR
from shared.eventstore import MemoryEventStore, Repository
from tests.kit import Delivery, World, deploy, given, imported, new_stream, pipeline

GB = 2**30
DATA_DISK = "[pool0] vm0/data.disk"


async def setup() -> tuple[MemoryEventStore, FakeHypervisor, World, Delivery]:
    """The fake's inventory, its VM with a data disk besides its root disk, imported."""
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    await fake.attach_volume(next(iter(fake.vms)), DATA_DISK, create_bytes=GB)
    world = await imported(store, fake)
    delivery = pipeline(store, fake, "planner", "seeder", "cloner", "volume")
    return store, fake, world, delivery


async def events(store: MemoryEventStore, volume_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(streams.volume(volume_id))]


async def running(store: MemoryEventStore, world: World, delivery: Delivery) -> str:
    """A VM deployed from the world's snapshot, running: its ref."""
    await new_stream(store, streams.vm("a"), deploy("a", pool_id=world.pool_id,
                                                    vm_snapshot_id=world.snapshot_id))
    await delivery.settle()
    ref = (await Repository(store).vm("a")).ref
    assert ref is not None
    return ref


def job(volume_id: str, what: str) -> str:
    return stable_id("job", volume_id, what)


async def from_snapshot(store: MemoryEventStore, world: World, volume_id: str,
                        pool_id: str | None = None) -> None:
    taken = (await Repository(store).vm_snapshot(world.snapshot_id)).live
    assert isinstance(taken, VmSnapshotTaken)
    disk = taken.disks[0]
    await new_stream(store, streams.volume(volume_id), VolumeFromSnapshotRequested(
        volume_id=volume_id, job_id=job(volume_id, "create"), account_id="acct-1",
        user_id="user-1", name=volume_id, vm_snapshot_id=world.snapshot_id,
        source_volume_id=disk.volume_id, source_path=disk.path,
        pool_id=pool_id or world.pool_id, size_bytes=disk.size_bytes))


async def attach(store: MemoryEventStore, volume_id: str, vm_id: str, attach: bool,
                 n: int = 1) -> None:
    await given(store, streams.volume(volume_id), VolumeAttachRequested(
        volume_id=volume_id, vm_id=vm_id, job_id=job(volume_id, f"attach-{n}"), attach=attach))


async def test_a_volume_from_a_snapshot_disk_is_a_copy_on_the_pool() -> None:
    store, fake, world, delivery = await setup()

    await from_snapshot(store, world, "v1")
    await delivery.settle()

    created, done = (await events(store, "v1"))[-2:]
    assert isinstance(created, VolumeCreated) and created.path == "[pool0] volumes/v1.disk"
    assert done == JobCompleted(job_id=job("v1", "create"), succeeded=True)
    assert fake.files[created.path] == created.size_bytes


async def test_a_volume_on_a_pool_gone_or_a_refused_copy_ends_in_error() -> None:
    store, fake, world, delivery = await setup()
    fake.fail("copy_volume")
    await from_snapshot(store, world, "v1")
    await given(store, streams.pool("gone"), InventoryObjectGone(kind="pool", object_id="gone"))
    await from_snapshot(store, world, "v2", pool_id="gone")

    await delivery.settle()

    for made, reason in (("v1", "copy_volume: injected refusal"),
                         ("v2", "storage pool gone no longer exists")):
        failed, done = (await events(store, made))[-2:]
        assert isinstance(failed, VolumeFailed) and reason in failed.reason
        assert isinstance(done, JobCompleted) and done.error_code == INTERNAL_ERROR
    assert not [f for f in fake.files if f.startswith("[pool0] volumes/")]


async def test_an_allocated_volume_is_made_beside_the_root_disk_on_first_attach() -> None:
    store, fake, world, delivery = await setup()
    ref = await running(store, world, delivery)
    await new_stream(store, streams.volume("e1"), VolumeAllocated(
        volume_id="e1", job_id=job("e1", "create"), account_id="acct-1", user_id="user-1",
        name="empty", zone_id=world.zone_id, disk_offering_id="small-disk", size_bytes=2 * GB))

    await attach(store, "e1", "a", True)
    await delivery.settle()

    created, attached, done = (await events(store, "e1"))[-3:]
    assert isinstance(created, VolumeCreated) and created.pool_id == world.pool_id
    assert created.disk_offering_id == "small-disk" and created.size_bytes == 2 * GB
    assert isinstance(attached, VolumeAttached) and attached.vm_id == "a"
    assert isinstance(done, JobCompleted) and done.succeeded
    assert created.path in [d.path for d in fake.vms[ref].disks]
    assert "e1" in (await store.attached_volumes(["a"]))["a"]


async def test_a_volume_is_attached_resized_detached_and_deleted() -> None:
    store, fake, world, delivery = await setup()
    ref = await running(store, world, delivery)
    await from_snapshot(store, world, "v1")
    await delivery.settle()
    path = "[pool0] volumes/v1.disk"

    await attach(store, "v1", "a", True)
    await delivery.settle()
    assert path in [d.path for d in fake.vms[ref].disks]
    await given(store, streams.volume("v1"), VolumeResizeRequested(
        volume_id="v1", job_id=job("v1", "resize"), size_bytes=4 * GB))
    await delivery.settle()
    assert fake.files[path] == 4 * GB
    await attach(store, "v1", "a", False, 2)
    await delivery.settle()
    assert path not in [d.path for d in fake.vms[ref].disks]
    await given(store, streams.volume("v1"), VolumeDeleteRequested(volume_id="v1"))
    await delivery.settle()

    history = await events(store, "v1")
    assert [type(e) for e in history[3:]] == [
        VolumeAttachRequested, VolumeAttached, JobCompleted, VolumeResizeRequested,
        VolumeResized, JobCompleted, VolumeAttachRequested, VolumeDetached, JobCompleted,
        VolumeDeleteRequested, VolumeDeleted]
    assert all(e.succeeded for e in history if isinstance(e, JobCompleted))
    assert path not in fake.files
    final = volume.fold("v1", history)
    assert final.deleted and final.size_bytes == 4 * GB and final.vm_id is None


async def test_an_imported_vms_data_disk_is_detached_and_deleted_by_its_import() -> None:
    store, fake, world, delivery = await setup()
    vm0 = next(iter(fake.vms))
    data_id = volume_id(world.vm_id, fake.vms[vm0].disks[1].key)

    await attach(store, data_id, world.vm_id, False)
    await delivery.settle()
    await given(store, streams.volume(data_id), VolumeDeleteRequested(volume_id=data_id))
    await delivery.settle()

    detached, done, _, deleted = (await events(store, data_id))[-4:]
    assert isinstance(detached, VolumeDetached) and isinstance(done, JobCompleted)
    assert isinstance(deleted, VolumeDeleted) and deleted.task_id is not None
    assert DATA_DISK not in fake.files and len(fake.vms[vm0].disks) == 1


async def test_an_allocated_volume_grows_without_a_disk_and_a_failed_attach_keeps_it() -> None:
    store, _, world, delivery = await setup()
    await new_stream(store, streams.volume("e1"), VolumeAllocated(
        volume_id="e1", job_id=job("e1", "create"), account_id="acct-1", user_id="user-1",
        name="empty", zone_id=world.zone_id, disk_offering_id="small-disk", size_bytes=GB))
    await given(store, streams.volume("e1"), VolumeResizeRequested(
        volume_id="e1", job_id=job("e1", "resize"), size_bytes=3 * GB))
    await attach(store, "e1", "never-made", True)

    await delivery.settle()

    history = await events(store, "e1")
    assert VolumeResized(volume_id="e1", size_bytes=3 * GB, task_id=None) in history
    results = {e.job_id: e for e in history if isinstance(e, JobCompleted)}
    assert results[job("e1", "resize")].succeeded
    failed = results[job("e1", "attach-1")]
    assert failed.error_code == INTERNAL_ERROR
    assert failed.error_text == "the volume or the VM no longer exists"
    assert not any(isinstance(e, VolumeFailed) for e in history)
    assert volume.fold("e1", history).path is None


async def test_a_delete_without_answer_is_retried_until_the_disk_is_gone() -> None:
    store, fake, world, delivery = await setup()
    await from_snapshot(store, world, "v1")
    await delivery.settle()
    fake.fail("delete_volume", transient=True, times=2)

    await given(store, streams.volume("v1"), VolumeDeleteRequested(volume_id="v1"))
    delivered = await delivery.settle()

    assert [(d.event_type, d.attempts, d.outcome) for d in delivered] == [
        ("VolumeDeleteRequested", 3, Outcome.HANDLED)]
    assert isinstance((await events(store, "v1"))[-1], VolumeDeleted)
    assert "[pool0] volumes/v1.disk" not in fake.files
