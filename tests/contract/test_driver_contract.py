"""The promises of ``shared.drivers.base.Hypervisor``, checked against every driver: the
vSphere driver on vcsim (as the session of ``vcenter_url`` and as that of a further vCenter
of ``vcenters``, whose refs are scoped by its name, on a vcsim of its own), the libvirt
driver on a private libvirt daemon with VMs that boot, and the in-memory fake.

Each test gets a source VM of its own (a root disk on a pool, one NIC, powered on), made
beside whatever else the hypervisor holds, and names everything it makes uniquely.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
from pyVmomi import vim

from proto.events import HostImported, PoolImported, VmImported, ZoneImported
from proto.streams import stable_id
from services.planner.inventory import sync
from shared.domain.inventory import zone_id
from shared.drivers import fake, libvirt, vmware
from shared.drivers.base import (
    CLONE,
    CLONE_STEPS,
    POWER_ON,
    RECONFIGURE,
    CloneProgress,
    CloneRequest,
    DriverKind,
    Hypervisor,
    HypervisorError,
    NetworkBinding,
)
from shared.drivers.zones import Hypervisors
from shared.eventstore import MemoryEventStore
from shared.stack._servers import Server, free_port, start_vcsim
from tests.harness.libvirt import HOST, NETWORKS, KvmSite
from tests.harness.vsphere import Vcsim

DRIVERS = ["fake", "vmware", "vmware-scoped", "kvm"]
SCOPE = "second"  # the name of the further vCenter of "vmware-scoped"


@dataclass
class World:
    driver: Hypervisor
    vm_ref: str  # the source VM, powered on
    host_ref: str
    pool_ref: str
    pool_name: str
    networks: list[NetworkBinding]
    prefix: str  # for the names of what a test makes
    source_network: str = "VM Network"  # the network of the source VM's NIC
    # Waits until the source VM's guest has booted, where the hypervisor needs one.
    booted: Callable[[], Awaitable[None]] | None = None


async def _vmware_world(server: Server, prefix: str, scope: str = "") -> World:
    vcsim = await asyncio.to_thread(Vcsim, server.url, server.user, server.password)
    driver = await vmware.VSphere.connect(server.url, server.user, server.password,
                                          verify_tls=False, call_timeout=30, scope=scope)
    vm_ref = vmware.scoped(scope, await asyncio.to_thread(
        vcsim.create_vm, f"{prefix}-source", "DC0_C0_H0", "LocalDS_0", [], ["VM Network"]))
    [inventory] = await driver.inventory()
    host = next(h for h in inventory.hosts if h.name == "DC0_C0_H0")
    pool = next(p for p in inventory.pools if p.name == "LocalDS_0")
    networks = [NetworkBinding(n.ref, n.name, n.binding)
                for n in inventory.networks if n.name in ("VM Network", "DC0_DVPG0")]
    return World(driver, vm_ref, host.ref, pool.ref, pool.name, networks, prefix)


async def _kvm_world(site: KvmSite, prefix: str) -> World:
    driver = await libvirt.LibvirtHypervisor.connect({HOST: site.uri})
    vm_ref = await asyncio.to_thread(site.create_vm, f"{prefix}-source")
    [inventory] = await driver.inventory()
    pool = inventory.pools[0]
    networks = [NetworkBinding(n.ref, n.name) for name in NETWORKS
                for n in inventory.networks if n.name == name]

    async def booted() -> None:
        await asyncio.to_thread(site.wait_for_console, f"{prefix}-source",
                                "snapdeploy-guest: ready")

    return World(driver, vm_ref, HOST, pool.ref, pool.name, networks, prefix, NETWORKS[0],
                 booted)


def _fake_world(prefix: str) -> World:
    driver = fake.FakeHypervisor.standard()
    vm_ref = driver.add_vm(f"{prefix}-source", "host-1", "pool-1", ["network-1"],
                           powered_on=True)
    networks = [NetworkBinding(n.ref, n.name, n.binding) for n in driver.networks.values()]
    return World(driver, vm_ref, "host-1", "pool-1", "pool0", networks, prefix)


@pytest.fixture(scope="session")
def second_vcsim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Another vCenter, with the same inventory as ``vcsim_server``'s (the same names and
    managed object ids)."""
    server = start_vcsim(tmp_path_factory.mktemp("vcsim2"), free_port(), "admin",
                         "vcsim-pass-2")
    yield server
    server.stop()


@pytest.fixture(params=DRIVERS)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    prefix = f"contract-{secrets.token_hex(3)}"
    site: KvmSite | None = None
    if request.param == "vmware":
        made = await _vmware_world(request.getfixturevalue("vcsim_server"), prefix)
    elif request.param == "vmware-scoped":
        made = await _vmware_world(request.getfixturevalue("second_vcsim_server"), prefix,
                                   SCOPE)
        assert made.vm_ref.startswith(f"{SCOPE}/") and made.host_ref.startswith(f"{SCOPE}/")
    elif request.param == "kvm":
        site = request.getfixturevalue("kvm_site")
        made = await _kvm_world(site, prefix)
    else:
        made = _fake_world(prefix)
    assert len(made.networks) == 2
    yield made
    await made.driver.close()
    if site is not None:  # guests left running would take the CPU from later tests
        await asyncio.to_thread(site.remove_all, prefix)


async def seeded_template(w: World, name: str) -> tuple[str, str]:
    snapshot_ref, _ = await w.driver.create_snapshot(w.vm_ref, f"{name}-snap", "", False, False)
    seeded = await w.driver.seed_template(w.vm_ref, snapshot_ref, w.pool_ref, name)
    return seeded.template_ref, seeded.base_snapshot_ref


def clone_request(w: World, name: str, template: tuple[str, str]) -> CloneRequest:
    return CloneRequest(name=name, template_ref=template[0], base_snapshot_ref=template[1],
                        host_ref=w.host_ref, pool_ref=w.pool_ref, linked=True, cpu_number=2,
                        cpu_mhz=2000, memory_mb=512, networks=w.networks)


async def test_the_kind_names_what_the_gateway_shows(world: World) -> None:
    kind: DriverKind = world.driver.kind
    assert kind.hypervisor and kind.manager and kind.template_format and kind.pool_type
    assert kind.full_clone_setting
    first = kind.volume_location(world.pool_name, "volume-a")
    assert world.pool_name in first and "volume-a" in first
    assert kind.volume_location(world.pool_name, "volume-b") != first
    uris = {kind.network_uri(n) for n in (await world.driver.inventory())[0].networks}
    assert all(u.startswith(f"{kind.name}://") for u in uris)


async def test_inventory_shows_the_source_vm_root_disk_first(world: World) -> None:
    [inventory] = await world.driver.inventory()
    assert inventory.datacenter_name in await world.driver.datacenters()
    vm = next(v for v in inventory.vms if v.ref == world.vm_ref)
    assert vm.name == f"{world.prefix}-source" and vm.powered_on and not vm.template
    assert vm.disks[0].pool_ref == world.pool_ref and vm.disks[0].size_bytes > 0
    assert [n.network_ref for n in vm.nics] == [
        next(n.ref for n in world.networks if n.name == world.source_network)]
    host = next(h for h in inventory.hosts if h.ref == world.host_ref)
    assert world.pool_ref in host.pool_refs
    assert await world.driver.find_vm(vm.name) == world.vm_ref
    assert await world.driver.find_vm(f"{world.prefix}-nothing") is None


async def test_seed_is_idempotent_by_name(world: World) -> None:
    name = f"{world.prefix}-seed"
    snapshot_ref, _ = await world.driver.create_snapshot(world.vm_ref, "s", "", False, False)
    first = await world.driver.seed_template(world.vm_ref, snapshot_ref, world.pool_ref, name)
    assert first.task_ids and first.install_path
    again = await world.driver.seed_template(world.vm_ref, snapshot_ref, world.pool_ref, name)
    assert (again.template_ref, again.base_snapshot_ref, again.task_ids) == \
        (first.template_ref, first.base_snapshot_ref, [])
    assert await world.driver.find_vm(name) == first.template_ref
    [inventory] = await world.driver.inventory()
    template = next(v for v in inventory.vms if v.ref == first.template_ref)
    assert template.template and not template.nics and len(template.disks) == 1
    assert template.disks[0].pool_ref == world.pool_ref


async def test_clone_runs_every_step_and_replaces_a_leftover(world: World) -> None:
    template = await seeded_template(world, f"{world.prefix}-t")
    name = f"{world.prefix}-clone"
    progress = CloneProgress()
    await world.driver.clone(clone_request(world, name, template), progress)
    assert list(progress.operations) == list(CLONE_STEPS)
    assert progress.operation_ids() == [progress.operations[s] for s in CLONE_STEPS]
    assert progress.vm_ref is not None and await world.driver.vm_powered_on(progress.vm_ref)
    assert [n.network_ref for n in progress.nics] == [n.ref for n in world.networks]
    assert len({n.key for n in progress.nics}) == len(world.networks)
    assert all(n.key for n in progress.nics)
    assert progress.root_disk is not None and progress.root_disk.pool_ref == world.pool_ref
    # The keys the clone reported are the ones the inventory reports for its VM.
    [inventory] = await world.driver.inventory()
    made = next(v for v in inventory.vms if v.ref == progress.vm_ref)
    assert [n.key for n in made.nics] == [n.key for n in progress.nics]
    assert made.disks[0].key == progress.root_disk.key

    # An earlier attempt's VM of that name is removed; one VM of the name remains.
    again = CloneProgress()
    await world.driver.clone(clone_request(world, name, template), again)
    assert again.vm_ref is not None and again.failed_step() == POWER_ON
    [inventory] = await world.driver.inventory()
    assert [v.ref for v in inventory.vms if v.name == name] == [again.vm_ref]


async def test_destroy_is_idempotent(world: World) -> None:
    template = await seeded_template(world, f"{world.prefix}-t")
    progress = CloneProgress()
    await world.driver.clone(clone_request(world, f"{world.prefix}-d", template), progress)
    assert progress.vm_ref is not None
    assert await world.driver.destroy_vm(progress.vm_ref)
    assert await world.driver.destroy_vm(progress.vm_ref) is None
    assert await world.driver.find_vm(f"{world.prefix}-d") is None


async def test_power_calls_are_idempotent_and_a_missing_vm_is_refused(world: World) -> None:
    d = world.driver
    assert await d.power_on(world.vm_ref) is None
    assert await d.power_off(world.vm_ref)
    assert not await d.vm_powered_on(world.vm_ref)
    assert await d.power_off(world.vm_ref) is None
    assert await d.power_on(world.vm_ref)
    assert await d.reboot(world.vm_ref)
    assert await d.vm_powered_on(world.vm_ref)
    template = await seeded_template(world, f"{world.prefix}-t")
    progress = CloneProgress()
    await d.clone(clone_request(world, f"{world.prefix}-gone", template), progress)
    assert progress.vm_ref is not None
    await d.destroy_vm(progress.vm_ref)
    for call in (d.power_on, d.power_off, d.vm_powered_on):
        with pytest.raises(HypervisorError) as refused:
            await call(progress.vm_ref)
        assert not refused.value.transient


async def test_a_powered_off_vm_is_reconfigured(world: World) -> None:
    """A changed compute offering: a powered-off VM gets its new CPUs and memory (what a
    snapshot of it freezes), once; a running or missing VM is refused, not transient."""
    d = world.driver
    template = await seeded_template(world, f"{world.prefix}-rt")
    progress = CloneProgress()
    await d.clone(clone_request(world, f"{world.prefix}-resized", template), progress)
    assert progress.vm_ref is not None
    ref = progress.vm_ref
    with pytest.raises(HypervisorError) as running:
        await d.reconfigure(ref, 2, 256)
    assert not running.value.transient
    await d.power_off(ref)
    assert await d.reconfigure(ref, 2, 256)
    assert await d.reconfigure(ref, 2, 256) is None
    snapshot, _ = await d.create_snapshot(ref, "resized", "", False, False)
    info = await d.snapshot_info(ref, snapshot)
    assert (info.cpu_number, info.memory_mb) == (2, 256)
    await d.destroy_vm(ref)
    with pytest.raises(HypervisorError) as missing:
        await d.reconfigure(ref, 1, 128)
    assert not missing.value.transient


async def test_snapshots_are_taken_reverted_and_removed(world: World) -> None:
    d = world.driver
    first, task = await d.create_snapshot(world.vm_ref, "one", "first [tag]", False, False)
    assert task
    second, _ = await d.create_snapshot(world.vm_ref, "two", "", False, False)
    info = await d.snapshot_info(world.vm_ref, second)
    assert (info.name, info.parent_ref, info.memory) == ("two", first, False)
    assert info.disks and info.disks[0].pool_ref == world.pool_ref
    assert (await d.snapshot_info(world.vm_ref, first)).description == "first [tag]"

    assert await d.revert_snapshot(first)
    assert await d.revert_snapshot(first)
    [inventory] = await d.inventory()
    vm = next(v for v in inventory.vms if v.ref == world.vm_ref)
    assert vm.current_snapshot_ref == first

    assert await d.remove_snapshot(second)
    with pytest.raises(HypervisorError) as missing:
        await d.snapshot_info(world.vm_ref, second)
    assert not missing.value.transient
    with pytest.raises(HypervisorError) as gone:
        await d.remove_snapshot(second)
    assert not gone.value.transient


async def test_volumes_are_made_attached_resized_detached_copied_and_deleted(
    world: World,
) -> None:
    d = world.driver
    if world.booted is not None:  # KVM: a disk leaves a running VM when its guest answers
        await world.booted()
    location = d.kind.volume_location(world.pool_name, f"{world.prefix}-vol")
    key, task = await d.attach_volume(world.vm_ref, location, create_bytes=2**30)
    assert task
    assert await d.attach_volume(world.vm_ref, location) == (key, None)
    [inventory] = await d.inventory()
    vm = next(v for v in inventory.vms if v.ref == world.vm_ref)
    assert [disk.key for disk in vm.disks if disk.path == location] == [key]
    assert key and len({disk.key for disk in vm.disks}) == len(vm.disks)
    assert vm.disks[0].path != location  # the root disk stays first

    assert await d.resize_volume(world.vm_ref, location, 2 * 2**30, world.pool_ref)
    assert await d.detach_volume(world.vm_ref, location)
    assert await d.detach_volume(world.vm_ref, location, missing_ok=True) is None
    with pytest.raises(HypervisorError) as not_attached:
        await d.detach_volume(world.vm_ref, location)
    assert not not_attached.value.transient
    assert await d.resize_volume(None, location, 3 * 2**30, world.pool_ref)

    copy = d.kind.volume_location(world.pool_name, f"{world.prefix}-copy")
    assert await d.copy_volume(location, world.pool_ref, copy)
    with pytest.raises(HypervisorError) as exists:
        await d.copy_volume(location, world.pool_ref, copy)
    assert not exists.value.transient

    for made in (location, copy):
        assert await d.delete_volume(made, world.pool_ref)
        assert await d.delete_volume(made, world.pool_ref) is None


async def test_a_volume_is_copied_from_a_snapshot_disk(world: World) -> None:
    d = world.driver
    if world.booted is not None:
        await world.booted()
    snapshot_ref, _ = await d.create_snapshot(world.vm_ref, "for-volume", "", False, False)
    source = (await d.snapshot_info(world.vm_ref, snapshot_ref)).disks[0].path
    dest = d.kind.volume_location(world.pool_name, f"{world.prefix}-from-snap")
    assert await d.copy_volume(source, world.pool_ref, dest)
    key, _ = await d.attach_volume(world.vm_ref, dest)
    assert await d.detach_volume(world.vm_ref, dest)
    assert isinstance(key, str) and key
    assert await d.delete_volume(dest, world.pool_ref)


def test_steps_name_where_a_clone_stopped() -> None:
    progress = CloneProgress()
    assert progress.failed_step() == CLONE
    progress.operations[CLONE] = "op-1"
    assert progress.failed_step() == RECONFIGURE
    progress.operations[RECONFIGURE] = "op-2"
    assert progress.failed_step() == POWER_ON
    assert progress.operation_ids() == ["op-1", "op-2"]


async def test_fake_failures_stop_a_clone_at_the_step_injected() -> None:
    driver = fake.FakeHypervisor.standard()
    vm_ref = next(iter(driver.vms))
    snapshot_ref, _ = await driver.create_snapshot(vm_ref, "s", "", False, False)
    seeded = await driver.seed_template(vm_ref, snapshot_ref, "pool-1", "t")
    request = CloneRequest(name="c", template_ref=seeded.template_ref,
                           base_snapshot_ref=seeded.base_snapshot_ref, host_ref="host-1",
                           pool_ref="pool-1", linked=True, cpu_number=1, cpu_mhz=100,
                           memory_mb=64, networks=[])
    driver.fail(POWER_ON, transient=True)
    progress = CloneProgress()
    with pytest.raises(HypervisorError) as failed:
        await driver.clone(request, progress)
    assert failed.value.transient and progress.failed_step() == POWER_ON
    assert progress.vm_ref is not None and not await driver.vm_powered_on(progress.vm_ref)
    driver.fail("power_on")
    with pytest.raises(HypervisorError) as refused:
        await driver.power_on(progress.vm_ref)
    assert not refused.value.transient


async def test_two_vcenters_are_synced_into_zones_whose_ids_do_not_collide(
    vcsim_server: Server, second_vcsim_server: Server,
) -> None:
    """Two vCenters with identical inventories: the first's refs (and so its ids) are
    vCenter's own, the second's are scoped by its name; both are imported, and no zone,
    host, pool, VM or volume of one has an id of the other's."""
    first = await vmware.VSphere.connect(vcsim_server.url, vcsim_server.user,
                                         vcsim_server.password, verify_tls=False,
                                         call_timeout=30)
    second = await vmware.VSphere.connect(second_vcsim_server.url, second_vcsim_server.user,
                                          second_vcsim_server.password, verify_tls=False,
                                          call_timeout=30, scope=SCOPE)
    hypervisors = Hypervisors([first, second])
    try:
        [a], [b] = await first.inventory(), await second.inventory()
        assert a.datacenter_name == b.datacenter_name == "DC0"
        assert b.datacenter_ref == f"{SCOPE}/{a.datacenter_ref}"
        assert all("/" not in r for r in [h.ref for h in a.hosts] + [p.ref for p in a.pools])
        assert {h.ref for h in b.hosts} == {f"{SCOPE}/{h.ref}" for h in a.hosts}

        store = MemoryEventStore()
        await sync(store, hypervisors)
        events = [r.event() for r in store.events]
        zones = {e.zone_id: e for e in events if isinstance(e, ZoneImported)}
        assert set(zones) == {zone_id(a.datacenter_ref), zone_id(b.datacenter_ref)}
        # The first vCenter's zone id is the one derived from vCenter's own id, as ever.
        vcsim = await asyncio.to_thread(Vcsim, vcsim_server.url, vcsim_server.user,
                                        vcsim_server.password)
        [(datacenter, _)] = await asyncio.to_thread(vcsim.props, vim.Datacenter, ["name"])
        assert zone_id(a.datacenter_ref) == stable_id("zone", datacenter._moId)
        for kind, ids in (("host", [e.host_id for e in events if isinstance(e, HostImported)]),
                          ("pool", [e.pool_id for e in events if isinstance(e, PoolImported)])):
            assert len(ids) == len(set(ids)) == 2 * len(getattr(a, f"{kind}s")), kind
        vms = [e for e in events if isinstance(e, VmImported)]
        in_zone = {z: {v.name for v in vms if v.zone_id == z} for z in zones}
        assert "DC0_H0_VM0" in in_zone[zone_id(a.datacenter_ref)]
        assert "DC0_H0_VM0" in in_zone[zone_id(b.datacenter_ref)]
        volumes = [d.volume_id for v in vms for d in v.disks]
        assert len(volumes) == len(set(volumes)) and len({v.vm_id for v in vms}) == len(vms)
        assert await hypervisors.for_zone(zone_id(b.datacenter_ref)) is second
        assert await hypervisors.for_zone(zone_id(a.datacenter_ref)) is first

        # A session acts on its own vCenter's objects only.
        vm_ref = next(v.ref for v in a.vms if v.name == "DC0_H0_VM0")
        with pytest.raises(HypervisorError) as foreign:
            await second.vm_powered_on(vm_ref)
        assert not foreign.value.transient
    finally:
        await hypervisors.close()
