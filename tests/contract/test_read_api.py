"""The read side's query API on real PostgreSQL: typed views of what the projector folded,
every account's things visible to it and to administrators only, filters, pages with their
totals, and jobs read straight from the store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

import services.gateway.commands  # noqa: F401  (registers every command)
from proto import streams
from proto.envelope import Metadata
from proto.events import (
    AccountCreated,
    Disk,
    DiskOfferingCreated,
    Event,
    HostImported,
    JobCompleted,
    JobSubmitted,
    NetworkImported,
    Nic,
    NicCreated,
    PoolImported,
    ServiceOfferingCreated,
    TemplateRemoved,
    TemplateSeeded,
    UserCreated,
    VmDeployRequested,
    VmSnapshotDeleted,
    VmSnapshotTaken,
    VmStarted,
    VolumeCreated,
    ZoneImported,
)
from services.gateway.api import COMMANDS, Caller, Context, Params
from shared.domain.job import DEPLOY_VM_CMD, JobStatus
from shared.eventstore import EventStore, NewEvent
from shared.projections import ALL, Projector
from shared.projections._runner import CHECKPOINT
from shared.projections.read import Page, Paging, ReadModels, Viewer, Vm, template_from_stream

ALICE, BOB, ADMIN = "account-alice", "account-bob", "account-admin"
ZONE, HOST, POOL, NET = "zone-1", "host-1", "pool-1", "net-1"
OFFERING = "offering-1"
AS_ALICE, AS_BOB, AS_ADMIN = Viewer(ALICE, False), Viewer(BOB, False), Viewer(ADMIN, True)


def _id() -> str:
    return str(uuid.uuid4())


async def _append(store: EventStore, stream_id: str, *events: Event,
                  account_id: str | None = None) -> None:
    meta = Metadata(correlation_id=_id(), actor="test", account_id=account_id)
    await store.append(stream_id, [NewEvent(e, meta) for e in events])


def _deploy(vm_id: str, account_id: str, name: str, job_id: str) -> tuple[Event, ...]:
    return (
        VmDeployRequested(vm_id=vm_id, job_id=job_id, account_id=account_id, user_id="u",
                          name=name, display_name=f"{name} display", instance_name=f"i-{name}",
                          zone_id=ZONE, service_offering_id=OFFERING, cpu_number=2,
                          cpu_speed=1000, memory_mb=2048, pool_id=POOL, network_ids=[NET],
                          host_id=HOST),
        JobSubmitted(job_id=job_id, cmd=DEPLOY_VM_CMD, instance_type="VirtualMachine",
                     instance_id=vm_id, account_id=account_id, user_id="u"),
    )


class Cloud:
    """Two tenants' things, and one template whose VM snapshot nobody is known to own."""

    def __init__(self) -> None:
        self.alice_vm, self.bob_vm, self.alice_job = _id(), _id(), _id()
        self.snapshot, self.volume, self.root = _id(), _id(), _id()
        self.template = streams.seed_template_id(self.snapshot, POOL)
        self.orphan = streams.seed_template_id("unknown-snapshot", POOL)

    async def record(self, store: EventStore) -> None:
        for account_id, name, role in ((ALICE, "alice", "user"), (BOB, "bob", "user"),
                                       (ADMIN, "admin", "admin")):
            await _append(store, streams.account(account_id),
                          AccountCreated(account_id=account_id, name=name, role=role))
            await _append(store, streams.user(f"user-{name}"), UserCreated(
                user_id=f"user-{name}", account_id=account_id, username=name,
                email=f"{name}@example.org", firstname=name, lastname="Tester"))
        await _append(store, streams.zone(ZONE), ZoneImported(zone_id=ZONE, name="DC0", ref="z"))
        await _append(store, streams.host(HOST), HostImported(
            host_id=HOST, zone_id=ZONE, name="esx-1", ref="h", cluster="C0", cpu_cores=4,
            cpu_mhz=2000, memory_bytes=8 * 1024**3, pool_ids=[POOL]))
        await _append(store, streams.pool(POOL), PoolImported(
            pool_id=POOL, zone_id=ZONE, name="ds-1", ref="p", url="ds:///1", capacity_bytes=100,
            free_bytes=40, host_ids=[HOST]))
        await _append(store, streams.network(NET), NetworkImported(
            network_id=NET, zone_id=ZONE, name="VM Network", ref="n"))
        await _append(store, streams.service_offering(OFFERING), ServiceOfferingCreated(
            offering_id=OFFERING, name="Small", display_text="Small", cpu_number=2,
            cpu_speed=1000, memory_mb=2048))
        await _append(store, streams.disk_offering("disk-1"), DiskOfferingCreated(
            offering_id="disk-1", name="Data", display_text="Data", disk_size_gb=10))
        await _append(store, streams.vm(self.alice_vm),
                      *_deploy(self.alice_vm, ALICE, "web-1", self.alice_job), account_id=ALICE)
        await _append(store, streams.vm(self.alice_vm), NicCreated(
            vm_id=self.alice_vm, nic=Nic(nic_id="nic-1", network_id=NET, mac="00:50:56:00:00:01",
                                         device_key=4000), task_id="t"),
            VmStarted(vm_id=self.alice_vm, host_id=HOST, hypervisor_ref="vm-1"),
            JobCompleted(job_id=self.alice_job, succeeded=True), account_id=ALICE)
        await _append(store, streams.vm(self.bob_vm),
                      *_deploy(self.bob_vm, BOB, "db-1", _id()), account_id=BOB)
        await _append(store, streams.vm_snapshot(self.snapshot), VmSnapshotTaken(
            snapshot_id=self.snapshot, vm_id=self.alice_vm, account_id=ALICE, name="before",
            description="", ref="s", parent_id=None, created=datetime.now(UTC), memory=False,
            cpu_number=2, memory_mb=2048,
            disks=[Disk(volume_id=self.root, device_key=2000, path="[ds-1] web-1/web-1.vmdk",
                        pool_id=POOL, size_bytes=1024, root=True)],
            nics=[Nic(nic_id="nic-1", network_id=NET, mac="00:50:56:00:00:01",
                      device_key=4000)]), account_id=ALICE)
        for snapshot_id in (self.snapshot, "unknown-snapshot"):
            await _append(store, streams.seed(snapshot_id, POOL), TemplateSeeded(
                vm_snapshot_id=snapshot_id, pool_id=POOL,
                template_id=streams.seed_template_id(snapshot_id, POOL), template_ref="t",
                base_snapshot_ref="b", install_path="[ds-1] tpl", task_ids=[]))
        await _append(store, streams.volume(self.volume), VolumeCreated(
            volume_id=self.volume, account_id=ALICE, name="DATA-1", volume_type="DATADISK",
            pool_id=POOL, size_bytes=10 * 1024**3, path="[ds-1] data.vmdk"), account_id=ALICE)


@pytest.fixture
async def cloud(store: EventStore) -> Cloud:
    made = Cloud()
    await made.record(store)
    await Projector(store, ALL).catch_up()
    return made


async def test_vms_are_typed_and_each_account_sees_its_own(store: EventStore,
                                                           cloud: Cloud) -> None:
    read = ReadModels(store)
    mine = await read.vms(AS_ALICE)
    assert [vm.id for vm in mine.items] == [cloud.alice_vm] and mine.total == 1
    vm = mine.items[0]
    assert isinstance(vm, Vm)
    assert (vm.state, vm.host_id, vm.account_id, vm.cpu_number) == ("Running", HOST, ALICE, 2)
    assert [(n.id, n.network_id) for n in vm.nics] == [("nic-1", NET)]
    assert [v.id for v in (await read.vms(AS_BOB)).items] == [cloud.bob_vm]
    assert {v.id for v in (await read.vms(AS_ADMIN)).items} == {cloud.alice_vm, cloud.bob_vm}
    assert await read.vm(AS_BOB, cloud.alice_vm) is None
    assert (await read.vm(AS_ADMIN, cloud.alice_vm)) == vm


async def test_vm_filters_and_pages(store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)

    def ids(page: Page[Vm]) -> set[str]:
        return {v.id for v in page.items}

    assert ids(await read.vms(AS_ADMIN, name="WEB-1")) == {cloud.alice_vm}
    # within the display name, "web-1 display"
    assert ids(await read.vms(AS_ADMIN, keyword="eb-1 DISP")) == {cloud.alice_vm}
    assert ids(await read.vms(AS_ADMIN, state="starting")) == {cloud.bob_vm}
    assert ids(await read.vms(AS_ADMIN, account_id=BOB)) == {cloud.bob_vm}
    assert ids(await read.vms(AS_ADMIN, host_id=HOST, zone_id=ZONE)) == {cloud.alice_vm,
                                                                       cloud.bob_vm}
    assert ids(await read.vms(AS_ADMIN, zone_id="elsewhere")) == set()
    assert ids(await read.vms(AS_ADMIN, vm_id="not-a-uuid")) == set()
    assert ids(await read.vms(AS_ADMIN, name="web\x00")) == set()
    assert ids(await read.vms(AS_BOB, name="web-1")) == set()
    first = await read.vms(AS_ADMIN, paging=Paging(limit=1))
    second = await read.vms(AS_ADMIN, paging=Paging(limit=1, offset=1))
    beyond = await read.vms(AS_ADMIN, paging=Paging(limit=1, offset=5))
    assert (first.total, second.total, beyond.total) == (2, 2, 2)
    assert {first.items[0].id, second.items[0].id} == {cloud.alice_vm, cloud.bob_vm}
    assert beyond.items == []


async def test_templates_belong_to_their_snapshots_owner_and_lie_in_their_pools_zone(
        store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)
    [template] = (await read.templates(AS_ALICE)).items
    assert (template.id, template.account_id, template.zone_id) == (cloud.template, ALICE, ZONE)
    assert (await read.templates(AS_ALICE, zone_id=ZONE)).items == [template]
    assert (await read.templates(AS_ALICE, zone_id="elsewhere")).items == []
    assert (await read.templates(AS_BOB)).items == []
    assert await read.template(AS_BOB, cloud.template) is None
    # A template of a snapshot nobody is known to own: administrators only.
    assert await read.template(AS_ALICE, cloud.orphan) is None
    orphan = await read.template(AS_ADMIN, cloud.orphan)
    assert orphan is not None and orphan.account_id is None
    assert (await read.templates(AS_ADMIN)).total == 2
    folded = template_from_stream(
        await store.read_stream(streams.seed(cloud.snapshot, POOL)), cloud.template,
        owner=ALICE, zone_id=ZONE)
    assert folded == template


ZONE2, POOL2 = "6f1c2d4e-0000-4000-8000-00000000002a", "pool-2"


async def _second_zone_template(store: EventStore, cloud: Cloud) -> tuple[str, str]:
    """A second zone with its own pool, and a template seeded there from a snapshot of
    Alice's VM whose disk lies on that pool: (the snapshot, the template)."""
    await _append(store, streams.zone(ZONE2), ZoneImported(zone_id=ZONE2, name="KVM0",
                                                           ref="z2", driver_kind="kvm"))
    await _append(store, streams.pool(POOL2), PoolImported(
        pool_id=POOL2, zone_id=ZONE2, name="default", ref="p2", url="file:///2",
        capacity_bytes=100, free_bytes=50, host_ids=[]))
    snapshot = _id()
    await _append(store, streams.vm_snapshot(snapshot), VmSnapshotTaken(
        snapshot_id=snapshot, vm_id=cloud.alice_vm, account_id=ALICE, name="elsewhere",
        description="on the second pool", ref="s2", parent_id=cloud.snapshot,
        created=datetime.now(UTC), memory=False, cpu_number=2, memory_mb=2048,
        disks=[Disk(volume_id=cloud.root, device_key=2000, path="/2/web-1.qcow2",
                    pool_id=POOL2, size_bytes=1024, root=True)], nics=[]), account_id=ALICE)
    await _append(store, streams.seed(snapshot, POOL2), TemplateSeeded(
        vm_snapshot_id=snapshot, pool_id=POOL2,
        template_id=streams.seed_template_id(snapshot, POOL2), template_ref="t2",
        base_snapshot_ref="b2", install_path="/2/tpl.qcow2", task_ids=[]))
    await Projector(store, ALL).catch_up()
    return snapshot, streams.seed_template_id(snapshot, POOL2)


async def test_a_templates_zone_is_its_pools_with_two_zones(store: EventStore,
                                                            cloud: Cloud) -> None:
    """The template rows record no zone of their own: ``zone_id`` narrows by the zone of
    each template's pool, so each zone lists its own template and no other."""
    read = ReadModels(store)
    _, elsewhere = await _second_zone_template(store, cloud)
    assert [t.id for t in (await read.templates(AS_ALICE, zone_id=ZONE)).items] == \
        [cloud.template]
    in_second = (await read.templates(AS_ALICE, zone_id=ZONE2)).items
    assert [(t.id, t.zone_id, t.zone_kind) for t in in_second] == \
        [(elsewhere, ZONE2, "kvm")]
    both = await read.templates(AS_ALICE)
    assert {t.id for t in both.items} == {cloud.template, elsewhere} and both.total == 2
    async with store.pool.acquire() as conn:
        recorded = await conn.fetch("SELECT zone_id FROM catalog WHERE kind = 'template'")
    assert {r["zone_id"] for r in recorded} == {None}  # what the filter must not read


async def test_list_templates_by_zone_and_filter_through_the_gateway(store: EventStore,
                                                                     cloud: Cloud) -> None:
    """listTemplates as a client calls it: zoneid narrows to the zone's own template,
    templatefilter scopes by owner (self for Alice is hers; for the administrator, the
    administrator's own: none; all: every account's), and featured lists none."""
    _, elsewhere = await _second_zone_template(store, cloud)
    ctx = Context(store=store)
    alice = Caller(ALICE, "alice", "user-alice", "alice", "user")
    admin = Caller(ADMIN, "admin", "user-admin", "admin", "admin")

    async def listed(caller: Caller, **values: str) -> list[str]:
        body = await COMMANDS["listtemplates"].run(ctx, Params("listTemplates", values),
                                                   caller)
        return sorted(t["id"] for t in body.get("template", []))

    assert await listed(alice, templatefilter="executable", zoneid=ZONE2) == [elsewhere]
    assert await listed(alice, templatefilter="selfexecutable") == \
        sorted([cloud.template, elsewhere])
    assert await listed(alice, templatefilter="featured") == []
    assert await listed(admin, templatefilter="self") == []
    assert await listed(admin, templatefilter="all") == \
        sorted([cloud.template, cloud.orphan, elsewhere])
    assert await listed(admin, templatefilter="all", zoneid=ZONE2) == [elsewhere]
    assert await listed(admin, templatefilter="self", id=elsewhere) == [elsewhere]


async def test_a_template_outlives_its_deleted_vm_snapshot(store: EventStore,
                                                           cloud: Cloud) -> None:
    """Deleting the VM snapshot leaves its seeded template (until the template itself is
    removed) listed as its owner's, live and rebuilt alike."""
    read = ReadModels(store)
    before = await read.template(AS_ALICE, cloud.template)
    await _append(store, streams.vm(cloud.alice_vm), VmSnapshotDeleted(
        snapshot_id=cloud.snapshot, vm_id=cloud.alice_vm), account_id=ALICE)
    await Projector(store, ALL).catch_up()
    assert await read.vm_snapshot(AS_ALICE, cloud.snapshot) is None
    assert await read.template(AS_ALICE, cloud.template) == before is not None
    assert [t.id for t in (await read.templates(AS_ALICE, owner_id=ALICE)).items] == \
        [cloud.template]
    assert await read.template(AS_BOB, cloud.template) is None
    async with store.pool.acquire() as conn:
        live = [dict(r) for r in await conn.fetch("SELECT * FROM catalog ORDER BY kind, id")]
        for projection in ALL:  # rebuilt from the first event
            await conn.execute(f"DELETE FROM {projection.table.name}")
        await conn.execute("DELETE FROM checkpoints WHERE name = $1", CHECKPOINT)
    await Projector(store, ALL).catch_up()
    async with store.pool.acquire() as conn:
        rebuilt = [dict(r) for r in await conn.fetch("SELECT * FROM catalog ORDER BY kind, id")]
    assert rebuilt == live
    assert await read.template(AS_ALICE, cloud.template) == before
    # Removed at last: gone from the list.
    await _append(store, streams.seed(cloud.snapshot, POOL),
                  TemplateRemoved(vm_snapshot_id=cloud.snapshot, pool_id=POOL))
    await Projector(store, ALL).catch_up()
    assert await read.template(AS_ALICE, cloud.template) is None


async def test_ids_owner_state_and_keyword_narrow_before_the_page(store: EventStore,
                                                                  cloud: Cloud) -> None:
    read = ReadModels(store)
    second, elsewhere = await _second_zone_template(store, cloud)
    # ids: one of them; with id, both apply; a name that is no UUID names nothing.
    templates = await read.templates(AS_ADMIN, ids=[cloud.template, cloud.orphan, "x"])
    assert {t.id for t in templates.items} == {cloud.template, cloud.orphan}
    assert (await read.templates(AS_ADMIN, ids=[cloud.template],
                                 template_id=elsewhere)).items == []
    assert {t.id for t in (await read.templates(AS_ADMIN, owner_id=ALICE)).items} == \
        {cloud.template, elsewhere}
    assert (await read.templates(AS_ADMIN, owner_id=ADMIN)).items == []
    page = await read.templates(AS_ADMIN, ids=[cloud.template, elsewhere, cloud.orphan],
                                paging=Paging(limit=1, offset=1))
    assert len(page.items) == 1 and page.total == 3
    assert {v.id for v in (await read.vms(AS_ADMIN, ids=[cloud.alice_vm, "x"])).items} == \
        {cloud.alice_vm}
    assert (await read.vms(AS_BOB, ids=[cloud.alice_vm])).items == []
    assert [v.id for v in (await read.volumes(AS_ALICE, ids=[cloud.volume])).items] == \
        [cloud.volume]
    assert [z.id for z in (await read.zones(ids=[ZONE2, "zone-9"])).items] == [ZONE2]
    # VM snapshots: ids, state in any case, keyword within the name or description.
    assert {s.id for s in (await read.vm_snapshots(AS_ALICE, ids=[cloud.snapshot,
                                                                   second])).items} == \
        {cloud.snapshot, second}
    assert (await read.vm_snapshots(AS_ALICE, state="ready")).total == 2
    assert (await read.vm_snapshots(AS_ALICE, state="Expunging")).total == 0
    assert [s.id for s in (await read.vm_snapshots(AS_ALICE, keyword="SECOND POOL")).items] \
        == [second]
    assert [s.id for s in (await read.vm_snapshots(AS_ALICE, name="BEFORE")).items] == \
        [cloud.snapshot]
    paged = await read.vm_snapshots(AS_ALICE, paging=Paging(limit=1))
    assert len(paged.items) == 1 and paged.total == 2
    assert (await read.vm_snapshots(AS_BOB, ids=[second])).total == 0


async def test_snapshots_volumes_and_the_catalog(store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)
    snapshot = await read.vm_snapshot(AS_ALICE, cloud.snapshot)
    assert snapshot is not None and snapshot.vm_id == cloud.alice_vm and snapshot.current
    assert [d.volume_id for d in snapshot.disks if d.root] == [cloud.root]
    assert snapshot.network_ids == [NET]
    assert await read.vm_snapshot(AS_BOB, cloud.snapshot) is None
    assert await read.vm_snapshot_count(cloud.alice_vm) == 1
    assert await read.vm_parts(cloud.alice_vm) == ([], [cloud.snapshot])
    volume = await read.volume(AS_ALICE, cloud.volume)
    assert volume is not None and volume.volume_type == "DATADISK" and volume.vm_id is None
    assert await read.volume(AS_BOB, cloud.volume) is None
    assert (await read.volumes(AS_ALICE, volume_type="datadisk")).total == 1
    assert (await read.volumes(AS_ALICE, volume_type="ROOT")).total == 0
    [host] = (await read.hosts(zone_id=ZONE)).items
    assert (host.cpu_cores, host.pool_ids) == (4, [POOL])
    pool = await read.pool(POOL)
    assert pool is not None and pool.free_bytes == 40 and pool.settings == {}
    assert [z.name for z in (await read.zones(keyword="dc")).items] == ["DC0"]
    assert [n.id for n in (await read.networks(name="vm network")).items] == [NET]
    offering = await read.service_offering(OFFERING)
    assert offering is not None and offering.memory_mb == 2048
    assert (await read.disk_offering("disk-1")) is not None
    assert await read.disk_offering("nothing") is None


async def test_accounts_and_users(store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)
    [alice] = await read.accounts(AS_ALICE)
    assert (alice.id, alice.role, [u.name for u in alice.users]) == (ALICE, "user", ["alice"])
    assert {a.name for a in await read.accounts(AS_ADMIN)} == {"alice", "bob", "admin"}
    assert await read.account(AS_ALICE, BOB) is None
    assert [a.id for a in await read.accounts(AS_ADMIN, name="BOB")] == [BOB]
    assert await read.user(AS_ALICE, "user-bob") is None
    user = await read.user(AS_ADMIN, "user-bob")
    assert user is not None and user.email == "bob@example.org"
    assert await read.name_taken("Alice", "someone-new")
    assert await read.name_taken("someone-new", "BOB")
    assert not await read.name_taken("carol", "carol")
    # keyword before the page; the total is every match.
    page = await read.accounts_page(AS_ADMIN, keyword="B", paging=Paging(limit=1, offset=0))
    assert ([a.name for a in page.items], page.total) == (["bob"], 1)
    page = await read.accounts_page(AS_ADMIN, paging=Paging(limit=2, offset=2))
    assert ([a.name for a in page.items], page.total) == (["bob"], 3)
    assert (await read.accounts_page(AS_ALICE, keyword="bob")).total == 0


async def test_a_job_is_read_from_the_store_whatever_the_projectors_lag(
        store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)
    done = await read.job(AS_ALICE, cloud.alice_job)
    assert done is not None and done.job.status == JobStatus.SUCCEEDED
    assert isinstance(done.result, Vm) and done.result.state == "Running"
    assert await read.job(AS_BOB, cloud.alice_job) is None
    vm_id, job_id = _id(), _id()
    await _append(store, streams.vm(vm_id), *_deploy(vm_id, BOB, "late-1", job_id),
                  account_id=BOB)  # the projector has not run since
    fresh = await read.job(AS_BOB, job_id)
    assert fresh is not None and fresh.job.status == JobStatus.PENDING and fresh.result is None
    assert fresh.position == await store.head()
    assert not await read.reach(fresh.position, within=0.05)
    assert job_id not in [j.id for j in (await read.jobs(AS_BOB)).items]
    await Projector(store, ALL).catch_up()
    assert await read.reach(fresh.position, within=0.05)
    assert job_id in [j.id for j in (await read.jobs(AS_BOB)).items]
    assert await read.job(AS_BOB, "no-such-job") is None


async def test_audit_events_of_the_viewers_account(store: EventStore, cloud: Cloud) -> None:
    read = ReadModels(store)
    types = ["VmDeployRequested", "VmStarted"]
    alices = (await read.audit_events(AS_ALICE, types, paging=Paging(limit=10))).items
    assert [(e.type, e.account_id) for e in alices] == [("VmStarted", ALICE),
                                                       ("VmDeployRequested", ALICE)]
    assert alices[1].data["vm_id"] == cloud.alice_vm
    assert (await read.audit_events(AS_ADMIN, types)).total == 3
    page = await read.audit_events(AS_ADMIN, types, paging=Paging(limit=1, offset=1))
    assert (len(page.items), page.total) == (1, 3)


async def test_audit_events_filter_before_the_page(store: EventStore, cloud: Cloud) -> None:
    """Type, id and keyword narrow the query itself: a page past the first holds matches
    and the total counts them all."""
    read = ReadModels(store)
    every = (await read.audit_events(AS_ADMIN, ["VmDeployRequested"])).items
    assert len(every) == 2
    second = await read.audit_events(AS_ADMIN, ["VmDeployRequested"],
                                     paging=Paging(limit=1, offset=1))
    assert [e.id for e in second.items] == [every[1].id] and second.total == 2
    one = await read.audit_events(AS_ADMIN, ["VmDeployRequested", "VmStarted"],
                                  event_id=every[0].id)
    assert [e.id for e in one.items] == [every[0].id] and one.total == 1
    by_data = await read.audit_events(AS_ADMIN, ["VmDeployRequested", "VmStarted"],
                                      keyword=cloud.bob_vm.upper())
    assert {e.data["vm_id"] for e in by_data.items} == {cloud.bob_vm}
    by_type = await read.audit_events(AS_ADMIN, ["VmDeployRequested", "VmStarted"],
                                      keyword="vm.st", keyword_types=["VmStarted"])
    assert {e.type for e in by_type.items} == {"VmStarted"}
    assert (await read.audit_events(AS_BOB, ["VmStarted"], event_id=every[0].id)).total == 0


async def test_audit_events_carry_the_requests_user_and_parent(store: EventStore) -> None:
    """A service's events in a request's work name the request's user and, as their
    parent, the first shown event the request appended."""
    read = ReadModels(store)
    vm_id, job_id, request = _id(), _id(), _id()
    asked = Metadata(correlation_id=request, causation_id=request, actor="acme/alice",
                     account_id=ALICE)
    await store.append(streams.vm(vm_id), [
        NewEvent(e, asked) for e in _deploy(vm_id, ALICE, "web", job_id)])
    carried = Metadata(correlation_id=request, causation_id=_id(), actor="cloner",
                       account_id=ALICE)
    await store.append(streams.vm(vm_id), [NewEvent(
        VmStarted(vm_id=vm_id, host_id=HOST, hypervisor_ref="vm-1"), carried)])
    found = (await read.audit_events(AS_ALICE, ["VmDeployRequested", "VmStarted"],
                                     keyword=vm_id, parent_types=["VmDeployRequested"])).items
    started, requested = found
    assert (started.type, started.actor, started.origin_actor) == \
        ("VmStarted", "cloner", "acme/alice")
    assert started.parent_id == requested.id
    assert requested.origin_actor == "acme/alice" and requested.parent_id is None
