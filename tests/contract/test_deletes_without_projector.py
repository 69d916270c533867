"""deleteServiceOffering, deleteDiskOffering, deleteAccount and assignVirtualMachine by
account name decide from the event store alone (no projector runs): each finds its target
in its stream, refuses with CloudStack's code and a reason, and appends at the version it
checked. Real PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg

from proto import streams
from proto.events import (
    AccountCreated,
    AccountDeleted,
    DiskOfferingCreated,
    DiskOfferingDeleted,
    JobCompleted,
    ServiceOfferingDeleted,
    UserCreated,
    VmAssigned,
    VolumeAllocated,
)
from shared import passwords
from shared.domain.accounts import ADMIN_ACCOUNT_ID, ROOT_DOMAIN_ID
from shared.eventstore import EventStore
from tests.contract.test_commands_without_projector import Unprojected, refused, run
from tests.contract.test_placement_without_projector import (
    ADMIN,
    ALICE,
    LARGE,
    ROOT,
    SNAPSHOT,
    VM,
    record_cloud,
)
from tests.kit import given


async def test_deleted_offerings_are_no_longer_offered(store: EventStore) -> None:
    await record_cloud(store)
    ctx = Unprojected(store)
    disk = str(uuid.uuid4())
    await given(store, streams.disk_offering(disk), DiskOfferingCreated(
        offering_id=disk, name="Tiny", display_text="Tiny", disk_size_gb=1))

    user = await refused(ctx, ALICE, "deleteServiceOffering", id=LARGE)
    assert user.code == 531
    assert await run(ctx, ADMIN, "deleteServiceOffering", id=LARGE) == {"success": True}
    recorded = await store.read_stream(streams.service_offering(LARGE))
    assert [(r.version, r.event()) for r in recorded[1:]] == [
        (2, ServiceOfferingDeleted(offering_id=LARGE))]
    again = await refused(ctx, ADMIN, "deleteServiceOffering", id=LARGE)
    assert (again.code, again.text) == (431, f"invalid parameter id: no service offering "
                                        f"{LARGE} exists")
    # Not deployable any more.
    deploy = await refused(ctx, ALICE, "deployVirtualMachine", serviceofferingid=LARGE,
                           vmsnapshotid=SNAPSHOT)
    assert deploy.code == 431 and "serviceofferingid" in deploy.text

    await run(ctx, ADMIN, "deleteDiskOffering", id=disk)
    assert (await store.read_stream(streams.disk_offering(disk)))[-1].event() == \
        DiskOfferingDeleted(offering_id=disk)
    volume = await refused(ctx, ALICE, "createVolume", diskofferingid=disk)
    assert volume.code == 431 and "diskofferingid" in volume.text


async def test_an_account_is_deleted_once_it_holds_nothing(store: EventStore,
                                                            pool: asyncpg.Pool) -> None:
    await record_cloud(store)
    ctx = Unprojected(store)
    gina = str(uuid.uuid4())
    await given(store, streams.account(gina), AccountCreated(account_id=gina, name="gina",
                                                             role="user"))
    await given(store, streams.volume(str(uuid.uuid4())), VolumeAllocated(
        volume_id=str(uuid.uuid4()), job_id="j", account_id=gina, user_id="u", name="d",
        zone_id="zone-1", disk_offering_id="disk-1", size_bytes=2**30))
    holds = await refused(ctx, ADMIN, "deleteAccount", id=gina)
    assert (holds.code, holds.text) == (536, (
        f"account 'gina' ({gina}) still holds 1 volume(s); expunge its VMs and delete its "
        "volumes and templates first"))
    await given(store, streams.account(ADMIN_ACCOUNT_ID), AccountCreated(
        account_id=ADMIN_ACCOUNT_ID, name="admin", role="admin"))
    builtin = await refused(ctx, ADMIN, "deleteAccount", id=ADMIN_ACCOUNT_ID)
    assert (builtin.code, builtin.text) == (431, (
        "invalid parameter id: account 'admin' is the built-in admin account and cannot be "
        "deleted"))

    erin, erin_user = str(uuid.uuid4()), str(uuid.uuid4())
    await given(store, streams.account(erin), AccountCreated(account_id=erin, name="erin",
                                                             role="user"))
    await given(store, streams.user(erin_user), UserCreated(
        user_id=erin_user, account_id=erin, username="erin", email="e@example.com",
        firstname="E", lastname="R"))
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO api_keys (api_key, secret_sealed, account_id, account_name, user_id,"
            " user_name, role) VALUES ('erin-key', '\\x00', $1, 'erin', $2, 'erin', 'user')",
            erin, erin_user)
        login = passwords.Login(erin_user, "erin", erin, "erin", "user")
        await passwords.set_password(conn, login, "erin's password")
        session = await passwords.open_session(conn, login)
    answer = await run(ctx, ADMIN, "deleteAccount", id=erin)
    recorded = [r.event() for r in await store.read_stream(streams.account(erin))]
    assert isinstance(recorded[1], AccountDeleted) and recorded[1].name == "erin"
    assert recorded[-1] == JobCompleted(job_id=answer["jobid"], succeeded=True)
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT revoked IS NOT NULL FROM api_keys WHERE api_key = 'erin-key'")
        # Her session ends and her password is forgotten: she can no longer log in.
        assert await passwords.resume_session(conn, session.session_id,
                                              session.session_key) is None
        assert await passwords.check_login(conn, "erin", "erin's password") is None
    gone = await refused(ctx, ADMIN, "deleteAccount", id=erin)
    assert (gone.code, gone.text) == (431, f"invalid parameter id: no account {erin} exists")
    # Its name no longer finds an account to act for.
    assign = await refused(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM,
                           account="erin", domainid=ROOT_DOMAIN_ID)
    assert (assign.code, assign.text) == (431, "invalid parameter account: no account "
                                          "'erin' is visible to your account")


async def test_a_vm_is_assigned_by_account_name_and_domain(store: EventStore) -> None:
    await record_cloud(store)
    ctx = Unprojected(store)
    frank = str(uuid.uuid4())
    await given(store, streams.account(frank), AccountCreated(account_id=frank, name="Frank",
                                                              role="user"))
    no_domain = await refused(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM,
                              account="frank")
    assert no_domain.text.startswith("missing parameter domainid")
    nothing = await refused(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM)
    assert nothing.text.startswith("missing parameter account")
    await run(ctx, ADMIN, "assignVirtualMachine", virtualmachineid=VM, account="frank",
              domainid=ROOT_DOMAIN_ID)
    assert (await store.read_stream(streams.vm(VM)))[-1].event() == VmAssigned(
        vm_id=VM, account_id=frank, volume_ids=[ROOT], snapshot_ids=[SNAPSHOT])
