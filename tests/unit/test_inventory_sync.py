"""The inventory sync in process: what it appends from the fake driver's inventory, read
against an in-memory store's streams and lookups."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from proto import streams
from proto.events import (
    Event,
    HostImported,
    InventoryObjectGone,
    NetworkImported,
    VmAssigned,
    VmDestroyRequested,
    VmExpunged,
    VmImported,
    VmSnapshotDeleted,
    VmSnapshotRequested,
    VmSnapshotTaken,
    ZoneImported,
    dvs_binding,
)
from services.cloner.handlers import Cloner
from services.planner.handlers import Planner
from services.planner.inventory import changes, describe, sync
from services.seeder.handlers import Seeder
from shared.bus import Dispatcher
from shared.domain.inventory import current_form, object_id, zone_id
from shared.drivers import fake as fake_driver
from shared.drivers import vmware
from shared.drivers.base import HypervisorError, NetworkInfo
from shared.drivers.fake import FakeHypervisor
from shared.drivers.vmware import dvs_portgroup
from shared.eventstore import Append, MemoryEventStore, Repository
from tests.kit import META, Delivery, deploy, given, new_stream, no_changes, sessions


async def synced() -> tuple[MemoryEventStore, FakeHypervisor]:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    await fake.create_snapshot(next(iter(fake.vms)), "before-upgrade", "", False, False)
    await sync(store, sessions(fake))
    return store, fake


async def test_a_first_sync_imports_everything_and_a_second_finds_nothing_new() -> None:
    store, fake = await synced()

    assert describe(await changes(store, sessions(fake))) == "no changes"
    imported = [type(e.event()).__name__ for e in store.events]
    assert sorted(set(imported)) == ["HostImported", "NetworkImported", "PoolImported",
                                     "VmImported", "VmSnapshotTaken", "ZoneImported"]
    assert isinstance(store.events[0].event(), ZoneImported)


async def test_a_host_gone_is_marked_so_and_imported_again_when_it_is_back() -> None:
    store, fake = await synced()
    host = fake.hosts.pop("host-2")
    stream = streams.host(object_id("host", "host-2"))

    gone = await changes(store, sessions(fake))
    await sync(store, sessions(fake))
    fake.hosts["host-2"] = host
    back = await changes(store, sessions(fake))

    assert [(a.stream_id, type(a.events[0])) for a in gone] == [(stream, InventoryObjectGone)]
    assert gone[0].expected_version == 1
    assert [(a.stream_id, type(a.events[0])) for a in back] == [(stream, HostImported)]


async def test_an_imported_vm_gone_is_expunged_with_its_volumes_and_snapshots() -> None:
    store, fake = await synced()
    vm0 = fake.vms.pop(next(iter(fake.vms)))
    vm_id = object_id("vm", vm0.ref)
    (snapshot_id,) = (await store.vm_snapshots([vm_id]))[vm_id]

    appended = [e for a in await changes(store, sessions(fake)) for e in a.events]

    assert VmSnapshotDeleted(snapshot_id=snapshot_id, vm_id=vm_id) in appended
    expunged = next(e for e in appended if isinstance(e, VmExpunged))
    assert expunged.vm_id == vm_id
    assert expunged.volume_ids == (await store.attached_volumes([vm_id]))[vm_id]


async def test_snapshots_of_an_imported_vm_belong_to_its_owner_now() -> None:
    store, fake = await synced()
    vm_ref = next(iter(fake.vms))
    vm_id = object_id("vm", vm_ref)
    await given(store, streams.vm(vm_id), VmAssigned(vm_id=vm_id, account_id="acct-2"))
    await fake.create_snapshot(vm_ref, "after", "", False, False)

    appended = [e for a in await changes(store, sessions(fake)) for e in a.events]

    taken = [e for e in appended if isinstance(e, VmSnapshotTaken) and e.name == "after"]
    assert [e.account_id for e in taken] == ["acct-2"]
    assert not any(isinstance(e, VmImported) for e in appended)


async def test_a_deployed_vm_gone_is_expunged_unless_it_is_being_destroyed() -> None:
    store, fake = await synced()
    pool_id = object_id("pool", "pool-1")
    snapshot_id = next(e.snapshot_id for e in (r.event() for r in store.events)
                       if isinstance(e, VmSnapshotTaken))
    delivery = Delivery(store, [
        Dispatcher("planner", store, Planner(store, no_changes).handlers()),
        Dispatcher("seeder", store, Seeder(store, sessions(fake)).handlers()),
        Dispatcher("cloner", store, Cloner(store, sessions(fake)).handlers()),
    ])
    for vm_id in ("a", "b"):
        await new_stream(store, streams.vm(vm_id), deploy(vm_id, pool_id=pool_id,
                                                          vm_snapshot_id=snapshot_id))
    await delivery.settle()
    await given(store, streams.vm("a"), VmSnapshotRequested(
        job_id="j", snapshot_id="s-a", vm_id="a", name="s", description="", memory=False,
        quiesce=False))
    await delivery.settle()
    assert describe(await changes(store, sessions(fake))) == "no changes"
    for vm_id in ("a", "b"):
        ref = (await Repository(store).vm(vm_id)).ref
        assert ref is not None
        del fake.vms[ref]
    await given(store, streams.vm("b"), VmDestroyRequested(vm_id="b", job_id="jb",
                                                           expunge=True))

    appended = [(a.stream_id, e) for a in await changes(store, sessions(fake)) for e in a.events]

    (root,) = (await store.attached_volumes(["a"]))["a"]
    assert appended == [
        (streams.vm_snapshot("s-a"), VmSnapshotDeleted(snapshot_id="s-a", vm_id="a")),
        (streams.vm("a"), VmExpunged(vm_id="a", volume_ids=[root]))]


def _as_recorded_before_opaque_keys(event: Event) -> Event:
    """An inventory event as vSphere's inventory was recorded when disk and NIC keys were
    numbers and distributed port groups carried their switch and key."""
    replace = msgspec.structs.replace
    match event:
        case NetworkImported(binding=str(binding)):
            dvs = dvs_portgroup(binding)
            assert dvs is not None
            return replace(event, binding=None, switch_uuid=dvs[0], portgroup_key=dvs[1])
        case VmImported() | VmSnapshotTaken():
            return replace(event, disks=[replace(d, key=None) for d in event.disks],
                           nics=[replace(n, key=None) for n in event.nics])
    return event


async def test_what_was_recorded_with_vsphere_numbers_and_switch_fields_is_not_new() -> None:
    store, fake = MemoryEventStore(), FakeHypervisor.standard()
    fake.networks["dvportgroup-1"] = NetworkInfo("dvportgroup-1", "DVPG0",
                                                 dvs_binding("switch-1", "dvportgroup-1"))
    for vm in fake.vms.values():  # vSphere's keys
        vm.disks = [dataclasses.replace(d, key=str(2000 + i)) for i, d in enumerate(vm.disks)]
        vm.nics = [dataclasses.replace(n, key=str(4000 + i)) for i, n in enumerate(vm.nics)]
    await fake.create_snapshot(next(iter(fake.vms)), "before-upgrade", "", False, False)
    now = await changes(store, sessions(fake))
    before = [Append(a.stream_id, [_as_recorded_before_opaque_keys(e) for e in a.events],
                     a.expected_version) for a in now]
    assert [a.events for a in before] != [a.events for a in now]
    await store.commit(before, META)

    assert describe(await changes(store, sessions(fake))) == "no changes"


async def test_every_hypervisor_is_synced_and_each_zone_records_its_kind() -> None:
    store = MemoryEventStore()
    first = FakeHypervisor.standard()
    other = FakeHypervisor.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                                    kind=fake_driver.OTHER_KIND)
    both = sessions(first, other)

    await sync(store, both)

    zones = {e.name: e.driver_kind for e in (r.event() for r in store.events)
             if isinstance(e, ZoneImported)}
    assert zones == {"DC0": "fake", "KVM0": "fake2"}
    hosts = {e.name: e.zone_id for e in (r.event() for r in store.events)
             if isinstance(e, HostImported)}
    assert hosts["kvm-host0"] == zone_id("KVM0") and hosts["host0"] == zone_id("datacenter-1")
    assert describe(await changes(store, both)) == "no changes"


async def test_a_hypervisor_that_does_not_answer_is_named_and_nothing_of_it_is_gone() -> None:
    store = MemoryEventStore()
    first = FakeHypervisor.standard()
    other = FakeHypervisor.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                                    kind=fake_driver.OTHER_KIND)
    await sync(store, sessions(first, other))
    recorded = len(store.events)
    other.fail("inventory", transient=True)

    # Never read by these sessions: any zone the answering one does not hold may be its.
    summary = await sync(store, sessions(first, other))

    assert summary == "no changes; the second fake hypervisor did not answer " \
        "(inventory: injected no answer)"
    assert len(store.events) == recorded
    other.fail("inventory", transient=True)  # (a failure injected is one call's)
    with pytest.raises(HypervisorError) as unanswered:  # the strict reading fails whole
        await changes(store, sessions(first, other))
    assert unanswered.value.transient


async def test_a_zone_recorded_before_zones_had_kinds_is_vcenters_and_not_imported_again(
) -> None:
    store = MemoryEventStore()
    fake = FakeHypervisor.standard(kind=vmware.KIND)  # a vCenter's datacenter, in memory
    zone = zone_id("datacenter-1")
    await given(store, streams.zone(zone), ZoneImported(zone_id=zone, name="DC0",
                                                        ref="datacenter-1"))
    appended = await changes(store, sessions(fake))
    assert not any(isinstance(e, ZoneImported) for a in appended for e in a.events)
    assert current_form(ZoneImported(zone_id=zone, name="DC0", ref="datacenter-1")) == \
        ZoneImported(zone_id=zone, name="DC0", ref="datacenter-1", driver_kind="vmware")


async def test_what_is_recorded_while_the_hypervisors_are_read_is_not_taken_for_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot taken and a host imported after the sync read the hypervisors, but before
    it read the store's lookups, are not in its reading: they are left alone, not deleted
    or marked gone (the next sync sees them)."""
    store, fake = await synced()
    hypervisors = sessions(fake)
    vm_ref = next(iter(fake.vms))
    read = hypervisors.read

    async def read_then_record() -> Any:
        reading = await read()
        # Meanwhile: a snapshot is taken and a host added, and both are recorded (by a
        # sync of their own, as a snapshot's job or another planner copy records them).
        await fake.create_snapshot(vm_ref, "meanwhile", "", False, False)
        fake.add_host("host-new", "new", list(fake.pools))
        for append in await changes(store, sessions(fake)):
            await given(store, append.stream_id, *append.events)
        return reading

    monkeypatch.setattr(hypervisors, "read", read_then_record)
    appended = [e for a in await changes(store, hypervisors) for e in a.events]

    assert not any(isinstance(e, VmSnapshotDeleted | InventoryObjectGone) for e in appended), \
        appended
    assert describe(await changes(store, sessions(fake))) == "no changes"
