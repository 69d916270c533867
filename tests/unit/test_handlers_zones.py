"""The services' handlers in a deployment with zones of two kinds: two in-memory fakes, each
a hypervisor of its own kind with a datacenter of its own. Every deploy, seed, VM change and
volume acts on the hypervisor of the zone it is in, with that kind's settings and
locations; the other hypervisor is left alone."""

from __future__ import annotations

from proto import streams
from proto.events import (
    AnyEvent,
    JobCompleted,
    PoolSettingChanged,
    TemplateSeeded,
    VmCreated,
    VmDeployFailed,
    VmDestroyRequested,
    VmPowerRequested,
    VmSnapshotRequested,
    VmSnapshotTaken,
    VmStopped,
    VolumeAllocated,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeFromSnapshotRequested,
    ZoneImported,
)
from proto.streams import stable_id
from shared.domain.inventory import zone_id
from shared.drivers.fake import OTHER_KIND, FakeHypervisor
from shared.eventstore import MemoryEventStore, Repository
from tests.kit import Delivery, World, deploy, given, imported, new_stream, pipeline, sessions

GB = 2**30


async def setup() -> tuple[MemoryEventStore, FakeHypervisor, FakeHypervisor, World, World,
                           Delivery]:
    """Zone DC0 of the fake's own kind and zone KVM0 of the other kind, both imported."""
    store = MemoryEventStore()
    first = FakeHypervisor.standard()
    other = FakeHypervisor.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                                    kind=OTHER_KIND)
    first_world, other_world = await imported(store, first), await imported(store, other)
    delivery = pipeline(store, sessions(first, other), "planner", "seeder", "cloner", "volume")
    return store, first, other, first_world, other_world, delivery


async def events(store: MemoryEventStore, stream_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(stream_id)]


async def deployed(store: MemoryEventStore, world: World, delivery: Delivery,
                   vm_id: str) -> str:
    await new_stream(store, streams.vm(vm_id), deploy(
        vm_id, pool_id=world.pool_id, vm_snapshot_id=world.snapshot_id,
        network_ids=world.network_ids, zone_id=world.zone_id))
    await delivery.settle()
    machine = await Repository(store).vm(vm_id)
    assert machine.ref is not None, await events(store, streams.vm(vm_id))
    return machine.ref


def names(fake: FakeHypervisor) -> set[str]:
    return {vm.name for vm in fake.vms.values()}


async def test_each_zone_records_the_kind_of_its_hypervisor() -> None:
    store, _, _, first_world, other_world, _ = await setup()
    assert other_world.zone_id == zone_id("KVM0") != first_world.zone_id
    [first_zone] = await events(store, streams.zone(first_world.zone_id))
    [other_zone] = await events(store, streams.zone(other_world.zone_id))
    assert isinstance(first_zone, ZoneImported) and first_zone.driver_kind == "fake"
    assert isinstance(other_zone, ZoneImported) and other_zone.driver_kind == "fake2"


async def test_a_deploy_seeds_and_clones_in_the_zone_of_its_snapshot_only() -> None:
    store, first, other, first_world, other_world, delivery = await setup()
    before = names(first)

    ref = await deployed(store, other_world, delivery, "k")

    made = other.vms[ref]
    assert made.name == "i-acct-k-VM" and made.powered_on
    assert made.host_ref is not None and made.host_ref.startswith("kvm-")
    assert [n.network_ref for n in made.nics] == ["kvm-network-1", "kvm-dvportgroup-1"]
    seeded = next(e for e in await events(store, streams.seed(other_world.snapshot_id,
                                                              other_world.pool_id))
                  if isinstance(e, TemplateSeeded))
    assert seeded.template_ref in other.vms and other.vms[seeded.template_ref].template
    assert names(first) == before  # nothing seeded or cloned in the other zone

    ref_first = await deployed(store, first_world, delivery, "v")
    assert ref_first in first.vms and "i-acct-v-VM" not in names(other)


async def test_full_clones_follow_the_setting_of_the_zones_kind() -> None:
    store, _, _, _, other_world, delivery = await setup()
    # The first kind's setting means nothing on a pool of the other kind's zone...
    await given(store, streams.pool(other_world.pool_id), PoolSettingChanged(
        pool_id=other_world.pool_id, name="fake.create.full.clone", value="true"))
    await deployed(store, other_world, delivery, "linked")
    # ...its own does.
    await given(store, streams.pool(other_world.pool_id), PoolSettingChanged(
        pool_id=other_world.pool_id, name=OTHER_KIND.full_clone_setting, value="true"))
    await deployed(store, other_world, delivery, "full")

    created = {vm_id: next(e for e in await events(store, streams.vm(vm_id))
                           if isinstance(e, VmCreated)) for vm_id in ("linked", "full")}
    assert created["linked"].linked and not created["full"].linked


async def test_vm_changes_go_to_the_hypervisor_of_the_vms_zone() -> None:
    store, first, other, first_world, other_world, delivery = await setup()
    ref = await deployed(store, other_world, delivery, "k")
    first_ops = list(first.operations)

    await given(store, streams.vm("k"), VmPowerRequested(vm_id="k", job_id="stop",
                                                         action="stop"))
    await given(store, streams.vm("k"), VmSnapshotRequested(
        job_id="snap", snapshot_id="s-k", vm_id="k", name="s", description="", memory=False,
        quiesce=False))
    await delivery.settle()

    assert not other.vms[ref].powered_on
    assert any(isinstance(e, VmStopped) for e in await events(store, streams.vm("k")))
    [taken] = await events(store, streams.vm_snapshot("s-k"))
    assert isinstance(taken, VmSnapshotTaken) and taken.ref in other.vms[ref].snapshots

    await given(store, streams.vm("k"), VmDestroyRequested(vm_id="k", job_id="gone",
                                                           expunge=True))
    await delivery.settle()
    assert ref not in other.vms
    assert first.operations == first_ops  # the first hypervisor did none of it
    imported_vm = first_world.vm_id
    await given(store, streams.vm(imported_vm), VmPowerRequested(
        vm_id=imported_vm, job_id="stop-first", action="stop"))
    await delivery.settle()
    machine = await Repository(store).vm(imported_vm)
    assert machine.ref is not None and not first.vms[machine.ref].powered_on


async def test_volumes_are_made_where_the_zones_kind_puts_them() -> None:
    store, first, other, _, other_world, delivery = await setup()
    ref = await deployed(store, other_world, delivery, "k")
    taken = (await Repository(store).vm_snapshot(other_world.snapshot_id)).live
    assert isinstance(taken, VmSnapshotTaken)
    disk = taken.disks[0]
    await new_stream(store, streams.volume("copy"), VolumeFromSnapshotRequested(
        volume_id="copy", job_id="copy-job", account_id="acct-1", user_id="user-1",
        name="copy", vm_snapshot_id=other_world.snapshot_id, source_volume_id=disk.volume_id,
        source_path=disk.path, pool_id=other_world.pool_id, size_bytes=disk.size_bytes))
    await new_stream(store, streams.volume("empty"), VolumeAllocated(
        volume_id="empty", job_id="empty-job", account_id="acct-1", user_id="user-1",
        name="empty", zone_id=other_world.zone_id, disk_offering_id="d", size_bytes=GB))
    await given(store, streams.volume("empty"), VolumeAttachRequested(
        volume_id="empty", vm_id="k", job_id="attach-job", attach=True))
    files_first = dict(first.files)

    await delivery.settle()

    copied = next(e for e in await events(store, streams.volume("copy"))
                  if isinstance(e, VolumeCreated))
    made = next(e for e in await events(store, streams.volume("empty"))
                if isinstance(e, VolumeCreated))
    assert copied.path == "[kvm-pool0] other/copy.qcow2" and copied.path in other.files
    assert made.path == "[kvm-pool0] other/empty.qcow2"
    assert made.path in [d.path for d in other.vms[ref].disks]
    assert first.files == files_first


async def test_a_deploy_in_a_zone_no_hypervisor_holds_fails_and_says_so() -> None:
    store, first, other, _, other_world, delivery = await setup()
    await new_stream(store, streams.vm("lost"), deploy(
        "lost", pool_id=other_world.pool_id, vm_snapshot_id=other_world.snapshot_id,
        network_ids=other_world.network_ids, zone_id="zone-nowhere"))

    await delivery.settle()

    history = await events(store, streams.vm("lost"))
    failed = next(e for e in history if isinstance(e, VmDeployFailed))
    assert failed.step == "clone"
    assert "zone zone-nowhere is in no hypervisor snapdeploy is connected to" in failed.reason
    done = history[-1]
    assert isinstance(done, JobCompleted) and done.job_id == stable_id("job", "lost")
    assert not done.succeeded
    assert "i-acct-lost-VM" not in names(first) | names(other)
