"""A volume attached to a VM through the API keeps its own id on the VM's disk: the volume
knows its disk's key, and a VM snapshot taken through snapdeploy or found by an inventory
sync names that disk by the volume's id, never by the id its VM and key derive. Pure rules,
then the handlers in process (an in-memory store and the fake driver)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import cast

import msgspec

from proto import streams
from proto.events import (
    AnyEvent,
    Disk,
    JobCompleted,
    VmImported,
    VmSnapshotRequested,
    VmSnapshotTaken,
    VolumeAllocated,
    VolumeAttached,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeDetached,
    VolumeFromSnapshotRequested,
)
from services.gateway import commands  # noqa: F401  (registers them)
from services.gateway.api import COMMANDS, Caller, Context, Params
from services.planner.inventory import changes, describe, sync
from shared.domain import volume
from shared.domain.accounts import ADMIN_ACCOUNT_ID
from shared.domain.inventory import disks_of, object_id, observed
from shared.domain.vm import volume_id
from shared.drivers.base import DiskInfo, Inventory, SnapshotInfo, VmInfo
from shared.drivers.fake import FakeHypervisor
from shared.eventstore import Append, EventStore, MemoryEventStore, Repository
from tests.kit import (
    FAKE_ZONE_ID,
    META,
    Delivery,
    World,
    deploy,
    given,
    imported,
    new_stream,
    pipeline,
    sessions,
)

GB = 2**30
T0 = datetime(2026, 11, 28, tzinfo=UTC)
ROOT = DiskInfo("2000", "[ds1] web/web.vmdk", "datastore-1", 10 * GB)
DATA = DiskInfo("2001", "[ds1] web/data.vmdk", "datastore-1", GB)
ATTACHED = DiskInfo("2002", "[ds1] volumes/v.vmdk", "datastore-1", 2 * GB)


# ---- pure --------------------------------------------------------------------------------


def test_a_disk_whose_key_names_an_attached_volume_is_that_volume() -> None:
    plain = disks_of("vm-1", [ROOT, DATA, ATTACHED])
    named = disks_of("vm-1", [ROOT, DATA, ATTACHED], {"2002": "vol-api"})

    assert [d.volume_id for d in plain] == [volume_id("vm-1", k) for k in ("2000", "2001",
                                                                          "2002")]
    assert [d.volume_id for d in named] == [volume_id("vm-1", "2000"),
                                            volume_id("vm-1", "2001"), "vol-api"]
    # Only the id differs: the key, the legacy number, the path and the root flag stay.
    assert [(d.key, d.device_key, d.path, d.root) for d in named] == \
        [(d.key, d.device_key, d.path, d.root) for d in plain]
    assert disks_of("vm-1", [ROOT], {"9999": "vol-elsewhere"}) == disks_of("vm-1", [ROOT])


def test_a_volume_knows_its_disks_key_while_it_is_attached() -> None:
    allocated = VolumeAllocated(volume_id="v", job_id="j", account_id="a", user_id="u",
                                name="v", zone_id="z", disk_offering_id="o", size_bytes=GB)
    created = VolumeCreated(volume_id="v", account_id="a", name="v", volume_type="DATADISK",
                            pool_id="p", size_bytes=GB, path="[p] volumes/v", key="disk3")
    attached = VolumeAttached(volume_id="v", vm_id="vm-1", key="disk3", task_id="t")
    detached = VolumeDetached(volume_id="v", vm_id="vm-1", task_id="t")

    assert volume.fold("v", [allocated, created]).key is None  # made, not attached yet
    assert volume.fold("v", [allocated, created, attached]).key == "disk3"
    assert volume.fold("v", [allocated, created, attached, detached]).key is None
    # Recorded when keys were vSphere's numbers: the number, as text.
    legacy = VolumeAttached(volume_id="v", vm_id="vm-1", device_key=2002)
    assert volume.fold("v", [created, legacy]).key == "2002"
    assert volume.fold("v", [created, VolumeAttached(volume_id="v", vm_id="vm-1")]).key is None
    root = VolumeCreated(volume_id="r", account_id="a", name="ROOT-x", volume_type="ROOT",
                         pool_id="p", size_bytes=GB, path="[p] x/x", vm_id="vm-1",
                         device_key=2000)
    assert volume.fold("r", [root]).key == "2000"
    vm = VmImported(vm_id="vm-1", zone_id="z", account_id="a", name="web", ref="vm-9",
                    host_id="h", cpu_number=1, memory_mb=512, powered_on=True, nics=[],
                    disks=[Disk(volume_id="d", path="[p] web", pool_id="p", size_bytes=GB,
                                root=True, device_key=2000)])
    assert volume.imported("d", vm).key == "2000"


def test_attached_keys_are_those_of_live_volumes_attached_to_the_vm() -> None:
    on_vm = volume.Volume("v1", vm_id="vm-1", key="k1", known=True)
    elsewhere = volume.Volume("v2", vm_id="vm-2", key="k2", known=True)
    deleted = volume.Volume("v3", vm_id="vm-1", key="k3", known=True, deleted=True)
    untold = volume.Volume("v4", vm_id="vm-1", known=True)

    assert volume.attached_keys("vm-1", [on_vm, elsewhere, deleted, untold]) == {"k1": "v1"}


def _inventory(vm: VmInfo) -> Inventory:
    return Inventory("datacenter-1", "DC0", [], [], [], [vm])


def test_an_import_leaves_attached_volumes_out_and_its_snapshots_name_them() -> None:
    snap = SnapshotInfo("snapshot-1", "s", "", T0, False, None, 1, 512, [ROOT, ATTACHED], [])
    web = VmInfo("vm-9", "web", "uuid", False, "host-1", 1, 512, True, [ROOT, ATTACHED], [],
                 [snap], "snapshot-1")
    vm_id = object_id("vm", "vm-9")

    seen = dict(observed(_inventory(web), "admin", set(),
                         attached={vm_id: {"2002": "vol-api"}}))

    imported_vm = seen[streams.vm(vm_id)]
    taken = seen[streams.vm_snapshot(object_id("snapshot", "snapshot-1"))]
    assert isinstance(imported_vm, VmImported) and isinstance(taken, VmSnapshotTaken)
    assert [d.volume_id for d in imported_vm.disks] == [volume_id(vm_id, "2000")]
    assert [d.volume_id for d in taken.disks] == [volume_id(vm_id, "2000"), "vol-api"]
    # Another VM's volumes name nothing here.
    other = dict(observed(_inventory(web), "admin", set(), attached={"vm-x": {"2002": "v"}}))
    assert other == dict(observed(_inventory(web), "admin", set()))


# ---- handlers in process -------------------------------------------------------------------

ADMIN = Caller(ADMIN_ACCOUNT_ID, "admin", "admin-user", "admin", "admin")
USER = Caller("acct-1", "acct", "user-1", "alice", "user")


async def events(store: MemoryEventStore, stream_id: str) -> list[AnyEvent]:
    return [e.event() for e in await store.read_stream(stream_id)]


async def allocate_and_attach(store: MemoryEventStore, delivery: Delivery, vm_id: str,
                              account_id: str = "acct-1") -> str:
    """An empty data volume, allocated as createVolume diskofferingid= does and attached to
    ``vm_id`` through the volume service: its id (a random UUID, as the gateway's)."""
    made = str(uuid.uuid4())
    await new_stream(store, streams.volume(made), VolumeAllocated(
        volume_id=made, job_id=str(uuid.uuid4()), account_id=account_id, user_id="user-1",
        name="data", zone_id=FAKE_ZONE_ID, disk_offering_id="small-disk", size_bytes=2 * GB))
    await given(store, streams.volume(made), VolumeAttachRequested(
        volume_id=made, vm_id=vm_id, job_id=str(uuid.uuid4()), attach=True))
    await delivery.settle()
    assert (await Repository(store).volume(made)).vm_id == vm_id
    return made


async def take_snapshot(store: MemoryEventStore, delivery: Delivery, vm_id: str) -> str:
    snapshot_id = str(uuid.uuid4())
    await given(store, streams.vm(vm_id), VmSnapshotRequested(
        job_id=str(uuid.uuid4()), snapshot_id=snapshot_id, vm_id=vm_id, name="s",
        description="", memory=False, quiesce=False))
    await delivery.settle()
    return snapshot_id


async def taken(store: MemoryEventStore, snapshot_id: str) -> VmSnapshotTaken:
    found = (await Repository(store).vm_snapshot(snapshot_id)).live
    assert isinstance(found, VmSnapshotTaken)
    return found


async def running(store: MemoryEventStore, world: World, delivery: Delivery) -> str:
    await new_stream(store, streams.vm("a"), deploy("a", pool_id=world.pool_id,
                                                    vm_snapshot_id=world.snapshot_id))
    await delivery.settle()
    ref = (await Repository(store).vm("a")).ref
    assert ref is not None
    return ref


async def test_a_snapshot_names_a_volume_attached_through_the_api_by_its_own_id() -> None:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    world = await imported(store, fake)
    delivery = pipeline(store, fake, "planner", "seeder", "cloner", "volume")
    ref = await running(store, world, delivery)
    data = await allocate_and_attach(store, delivery, "a")

    snapshot_id = await take_snapshot(store, delivery, "a")

    snapshot = await taken(store, snapshot_id)
    root, disk = snapshot.disks
    (root_volume,) = [v for v in (await store.attached_volumes(["a"]))["a"] if v != data]
    attached = await Repository(store).volume(data)
    assert (root.volume_id, root.root) == (root_volume, True)
    assert disk.volume_id == data and not disk.root
    assert (disk.key, disk.path, disk.pool_id, disk.size_bytes) == (
        attached.key, attached.path, attached.pool_id, attached.size_bytes)
    assert disk.key == fake.vms[ref].disks[1].key

    # createVolume vmsnapshotid= volumeid=<that volume> is accepted and makes its copy.
    # (The gateway's context over the in-memory store: the command reads and appends only
    # through the store's promises, which both stores keep.)
    answer = await COMMANDS["createvolume"].run(Context(cast(EventStore, store)), Params(
        "createVolume", {"vmsnapshotid": snapshot_id, "volumeid": data, "name": "copy"}), USER)
    await delivery.settle()
    history = await events(store, streams.volume(answer["id"]))
    request, (copied, done) = history[0], history[-2:]
    assert isinstance(request, VolumeFromSnapshotRequested)
    assert request.source_volume_id == data and request.source_path == disk.path
    assert isinstance(copied, VolumeCreated) and isinstance(done, JobCompleted)
    assert done.succeeded
    assert (copied.pool_id, copied.size_bytes) == (attached.pool_id, attached.size_bytes)


async def test_a_sync_over_an_imported_vm_with_an_api_volume_records_no_phantom() -> None:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    await sync(store, sessions(fake))
    vm_ref = next(iter(fake.vms))
    vm_id = object_id("vm", vm_ref)
    delivery = pipeline(store, fake, "cloner", "volume")
    before = await store.attached_volumes([vm_id])
    data = await allocate_and_attach(store, delivery, vm_id, ADMIN_ACCOUNT_ID)
    key = fake.vms[vm_ref].disks[-1].key

    # The VM shows one disk more now, and it is the volume's: nothing new to record.
    assert describe(await changes(store, sessions(fake))) == "no changes"
    assert (await store.attached_volumes([vm_id]))[vm_id] == sorted([*before[vm_id], data])
    assert await store.volume_origin(volume_id(vm_id, key)) is None

    # A snapshot through the API, and one taken in the hypervisor that a sync finds.
    through_api = await take_snapshot(store, delivery, vm_id)
    recorded = await taken(store, through_api)
    assert recorded.disks[-1].volume_id == data
    # A sync describes it with the same disks (it records the description the hypervisor
    # holds, with snapdeploy's tag, once).
    (described,) = [e for a in await changes(store, sessions(fake)) for e in a.events]
    assert isinstance(described, VmSnapshotTaken) and described.disks == recorded.disks
    assert msgspec.structs.replace(described, description="") == recorded
    await sync(store, sessions(fake))
    assert describe(await changes(store, sessions(fake))) == "no changes"
    await fake.create_snapshot(vm_ref, "outside", "", False, False)
    found = await changes(store, sessions(fake))
    # The new snapshot, and the one before it no longer current.
    assert describe(found) == "2 VmSnapshotTaken"
    snapshots = {e.name: e for a in found for e in a.events if isinstance(e, VmSnapshotTaken)}
    assert not snapshots["s"].current and snapshots["outside"].current
    assert [e.disks[-1].volume_id for e in snapshots.values()] == [data, data]
    await store.commit(found, META)
    assert describe(await changes(store, sessions(fake))) == "no changes"
    assert (await store.attached_volumes([vm_id]))[vm_id] == sorted([*before[vm_id], data])


async def test_a_disk_recorded_under_its_derived_id_is_named_by_its_volume_once() -> None:
    """What a sync recorded before attached volumes were named by their own ids: the
    import's disk and the snapshot's are corrected once, then nothing is new."""
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    await sync(store, sessions(fake))
    vm_ref = next(iter(fake.vms))
    vm_id = object_id("vm", vm_ref)
    delivery = pipeline(store, fake, "volume")
    data = await allocate_and_attach(store, delivery, vm_id, ADMIN_ACCOUNT_ID)
    await fake.create_snapshot(vm_ref, "outside", "", False, False)
    (inventory,) = await fake.inventory()
    recorded = [(s, e) for s, e in observed(inventory, ADMIN_ACCOUNT_ID, set(),
                                            driver_kind=fake.kind.name)
                if isinstance(e, VmImported | VmSnapshotTaken)]
    await store.commit([Append(s, [e]) for s, e in recorded], META)

    corrected = [e for a in await changes(store, sessions(fake)) for e in a.events]

    assert sorted(type(e).__name__ for e in corrected) == ["VmImported", "VmSnapshotTaken"]
    for event in corrected:
        assert isinstance(event, VmImported | VmSnapshotTaken)
        key = fake.vms[vm_ref].disks[-1].key
        assert volume_id(vm_id, key) not in [d.volume_id for d in event.disks]
    await store.commit([Append(a.stream_id, a.events) for a in await changes(
        store, sessions(fake))], META)
    assert describe(await changes(store, sessions(fake))) == "no changes"
    snapshot = next(e for e in corrected if isinstance(e, VmSnapshotTaken))
    assert snapshot.disks[-1].volume_id == data
