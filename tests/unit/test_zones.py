"""Zones of several hypervisors in one process: which sessions the settings ask for, and
the router that hands each zone's work to the session that owns it (two in-memory fakes of
different kinds; the runtime's KVM sessions on libvirt's in-process test driver,
``test:///default``, which needs no daemon)."""

from __future__ import annotations

import asyncio

import pytest

from shared import drivers, runtime
from shared.config import Settings
from shared.domain.inventory import zone_id
from shared.drivers import fake, libvirt, zones
from shared.drivers.base import (
    Connection,
    Hypervisor,
    HypervisorError,
    Inventory,
    SessionLost,
)
from shared.drivers.fake import FakeHypervisor
from shared.drivers.zones import UNKNOWN_ZONE, Hypervisors
from shared.runtime import Runtime

VCENTER_ZONE = zone_id("datacenter-1")
KVM_ZONE = zone_id("KVM0")


class Counting(FakeHypervisor):
    """A fake that counts how often its inventory is read."""

    reads = 0

    async def inventory(self) -> list[Inventory]:
        self.reads += 1
        return await super().inventory()


def two_kinds() -> tuple[Counting, Counting, Hypervisors]:
    first = Counting.standard()
    second = Counting.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                               kind=fake.OTHER_KIND)
    assert isinstance(first, Counting) and isinstance(second, Counting)
    return first, second, Hypervisors([first, second])


async def test_inventory_merges_every_session_and_tells_each_zones_kind() -> None:
    first, second, hypervisors = two_kinds()
    read = await hypervisors.inventories()
    assert [(k.name, i.datacenter_name) for k, i in read] == [("fake", "DC0"), ("fake2", "KVM0")]
    assert [i.datacenter_ref for i in await hypervisors.inventory()] == ["datacenter-1", "KVM0"]
    assert hypervisors.zones() == {VCENTER_ZONE: first, KVM_ZONE: second}


async def test_a_zone_is_learned_once_from_the_sessions_inventories() -> None:
    first, second, hypervisors = two_kinds()
    assert await hypervisors.for_zone(KVM_ZONE) is second
    assert await hypervisors.for_zone(VCENTER_ZONE) is first
    assert await hypervisors.for_zone(KVM_ZONE) is second
    assert (first.reads, second.reads) == (1, 1)
    assert (await hypervisors.for_zone(KVM_ZONE)).kind.manager == "the second fake hypervisor"


async def test_a_zone_no_session_owns_is_a_refusal_naming_the_sessions() -> None:
    first, _, hypervisors = two_kinds()
    with pytest.raises(HypervisorError) as refused:
        await hypervisors.for_zone("zone-nowhere")
    assert not refused.value.transient and refused.value.fault == UNKNOWN_ZONE
    assert str(refused.value) == ("zone zone-nowhere is in no hypervisor snapdeploy is "
                                  "connected to (the fake hypervisor, the second fake "
                                  "hypervisor)")
    with pytest.raises(HypervisorError) as unknown:
        await hypervisors.for_zone(None)
    assert unknown.value.fault == UNKNOWN_ZONE and not unknown.value.transient
    # Asked again, every session is read again: a datacenter added since is found.
    first.datacenter_ref = "datacenter-9"
    assert await hypervisors.for_zone(zone_id("datacenter-9")) is first


async def test_a_session_that_does_not_answer_fails_the_lookup_transiently(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, hypervisors = two_kinds()
    second.fail("inventory", transient=True)
    with pytest.raises(HypervisorError) as unanswered:
        await hypervisors.for_zone(KVM_ZONE)
    assert unanswered.value.transient and unanswered.value.fault == "Injected"
    # Asked again at once: refused with the same error, the sessions not read again.
    with pytest.raises(HypervisorError) as again:
        await hypervisors.for_zone(KVM_ZONE)
    assert str(again.value) == str(unanswered.value) and again.value.transient
    assert (first.reads, second.reads) == (1, 1)
    second.fail("inventory", transient=True)
    with pytest.raises(HypervisorError):  # the sync reads no zone of a session it missed
        await hypervisors.inventory()
    monkeypatch.setattr(zones, "REREAD_S", 0.0)  # time enough since
    assert await hypervisors.for_zone(KVM_ZONE) is second


async def test_a_hypervisor_that_does_not_answer_at_start_does_not_hold_back_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = FakeHypervisor.standard()
    late = FakeHypervisor.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                                   kind=fake.OTHER_KIND)
    attempts = 0

    async def open_first() -> Hypervisor:
        return first

    async def open_late() -> Hypervisor:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise HypervisorError("connection refused", transient=True)
        return late

    monkeypatch.setattr(drivers, "connections", lambda _settings: [
        Connection("vcenter", open_first, fake.KIND),
        Connection("libvirt KVM0", open_late, fake.OTHER_KIND, "KVM0")])
    rt = Runtime("cloner", Settings())
    hypervisors = await rt.hypervisors()  # at once: the first answered
    try:
        assert await hypervisors.for_zone(VCENTER_ZONE) is first
        with pytest.raises(HypervisorError) as waiting:
            await hypervisors.for_zone(KVM_ZONE)
        assert waiting.value.transient and str(waiting.value) == (
            "the second fake hypervisor KVM0 has not answered since snapdeploy started "
            "(connection refused)")
        reading = await hypervisors.read()  # the zones it may hold cannot be told yet
        assert reading.unplaced and [i.datacenter_ref for _, i in reading.inventories] == [
            "datacenter-1"]
        assert str(rt.checks["libvirt KVM0"]).startswith("unreachable: HypervisorError")

        opened = asyncio.Event()

        async def told() -> None:
            opened.set()

        hypervisors.when_opened(told)
        async with asyncio.timeout(10):  # retried with backoff, in the background
            await opened.wait()
        assert await hypervisors.for_zone(KVM_ZONE) is late and attempts == 3
        assert rt.checks["libvirt KVM0"] is None and not hypervisors.pending()
    finally:
        for close in reversed(rt._closers):
            await close()


async def test_a_first_login_slower_than_the_wait_at_start_is_not_made_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slow = FakeHypervisor.standard()
    logins = 0
    answer = asyncio.Event()

    async def open_slow() -> Hypervisor:
        nonlocal logins
        logins += 1
        await answer.wait()
        return slow

    monkeypatch.setattr(runtime, "FIRST_ATTEMPT_S", 0.1)
    monkeypatch.setattr(drivers, "connections", lambda _settings: [
        Connection("vcenter", open_slow, fake.KIND)])
    rt = Runtime("seeder", Settings())
    hypervisors = await rt.hypervisors()  # served without it meanwhile
    try:
        assert len(hypervisors.pending()) == 1
        assert rt.checks["vcenter"] == "unreachable: TimeoutError: no answer within 0.1s"
        opened = asyncio.Event()

        async def told() -> None:
            opened.set()

        hypervisors.when_opened(told)
        answer.set()  # the first login ends: it is the session, no second one is made
        async with asyncio.timeout(5):
            await opened.wait()
        assert await hypervisors.for_zone(VCENTER_ZONE) is slow and logins == 1
        assert rt.checks["vcenter"] is None
    finally:
        for close in reversed(rt._closers):
            await close()


async def test_a_silent_sessions_own_error_is_told_as_it_is() -> None:
    class Lost(FakeHypervisor):
        async def inventory(self) -> list[Inventory]:
            raise SessionLost("refused", hypervisor="libvirt")

    lost = Lost.standard("KVM0", datacenter_ref="KVM0", ref_prefix="kvm-",
                         kind=fake.OTHER_KIND)
    hypervisors = Hypervisors([FakeHypervisor.standard(), lost])
    for _ in range(2):  # read, then told again from that reading
        with pytest.raises(HypervisorError) as refused:
            await hypervisors.for_zone(KVM_ZONE)
        assert str(refused.value) == "libvirt session lost; logging in again failed: refused"
        assert refused.value.transient and isinstance(refused.value.__cause__, SessionLost)


async def test_two_sessions_holding_one_zone_is_an_error() -> None:
    hypervisors = Hypervisors([FakeHypervisor.standard(),
                               FakeHypervisor.standard(ref_prefix="b-", kind=fake.OTHER_KIND)])
    with pytest.raises(HypervisorError, match=r"zone DC0 .* is held by two hypervisors, the "
                       r"fake hypervisor and the second fake hypervisor"):
        await hypervisors.inventory()


async def test_messages_name_the_manager_of_the_zone_or_of_the_one_kind() -> None:
    _, _, hypervisors = two_kinds()
    assert await hypervisors.manager(KVM_ZONE) == "the second fake hypervisor"
    assert await hypervisors.manager(VCENTER_ZONE) == "the fake hypervisor"
    assert await hypervisors.manager(None) == "the hypervisor"
    assert await Hypervisors([FakeHypervisor.standard()]).manager(None) == \
        "the fake hypervisor"


def test_the_settings_ask_for_vcenter_and_each_kvm_zone() -> None:
    both = Settings(vcenter_url="https://vc/sdk",
                    kvm_zones="KVM0: kvm0=qemu:///system; KVM1: kvm1=qemu+ssh://h/system")
    assert [c.name for c in drivers.connections(both)] == ["vcenter", "libvirt KVM0",
                                                          "libvirt KVM1"]
    assert [c.name for c in drivers.connections(Settings(vcenter_url="https://vc/sdk"))] == [
        "vcenter"]
    assert [c.name for c in drivers.connections(Settings(kvm_zones="Z: h=qemu:///system"))] == [
        "libvirt Z"]
    with pytest.raises(drivers.NoHypervisor, match=r"SNAPDEPLOY_VCENTER_URL .* "
                       r"SNAPDEPLOY_KVM_ZONES"):
        drivers.connections(Settings())


async def test_a_process_without_a_hypervisor_does_not_start() -> None:
    with pytest.raises(SystemExit, match="cloner: no hypervisor is configured"):
        await Runtime("cloner", Settings()).hypervisors()


async def test_the_runtime_connects_each_kvm_zone_with_a_health_check_of_its_own() -> None:
    rt = Runtime("volume", Settings(kvm_zones="KVM0: h0=test:///default; "
                                              "KVM1: h1=test:///default"))
    hypervisors = await rt.hypervisors()
    try:
        # Connected, not yet started: a service is up once it takes work.
        assert rt.checks == {"started": "starting", "libvirt KVM0": None, "libvirt KVM1": None}
        assert [(s.kind.name, getattr(s, "zone", None)) for s in hypervisors.sessions] == [
            ("kvm", "KVM0"), ("kvm", "KVM1")]
        kvm1 = await hypervisors.for_zone(zone_id("KVM1"))
        assert getattr(kvm1, "zone", None) == "KVM1"
        [inventory] = await kvm1.inventory()
        assert [h.name for h in inventory.hosts] == ["h1"]
    finally:
        for close in reversed(rt._closers):
            await close()


async def test_libvirt_connect_opens_one_session_per_zone() -> None:
    sessions = await libvirt.connect(Settings(kvm_zones="A: a=test:///default; "
                                                        "B: b=test:///default"))
    try:
        assert [s.zone for s in sessions] == ["A", "B"]
        assert [await s.datacenters() for s in sessions] == [["A"], ["B"]]
    finally:
        for session in sessions:
            await session.close()
    assert await libvirt.connect(Settings()) == []


def test_the_gateway_renders_a_zone_by_the_kind_its_import_recorded() -> None:
    assert drivers.for_zone("kvm").hypervisor == "KVM"
    assert drivers.for_zone("kvm").template_format == "QCOW2"
    assert drivers.for_zone("vmware").pool_type == "VMFS"
    assert drivers.for_zone(None) is drivers.kind("vmware")  # recorded before kinds were
    assert drivers.for_zone("fake2") is fake.OTHER_KIND
    with pytest.raises(ValueError, match="'xen'"):
        drivers.for_zone("xen")


def test_the_registry_names_each_kind_and_a_zone_of_none_is_a_vcenter_datacenter() -> None:
    from shared.drivers import vmware

    assert drivers.kinds() == {"vmware": vmware.KIND, "kvm": libvirt.KIND}
    assert drivers.for_zone(None) is vmware.KIND is drivers.kind(drivers.LEGACY_KIND)
    assert drivers.for_zone(fake.KIND.name) is fake.KIND
    with pytest.raises(ValueError, match="known: kvm, vmware"):
        drivers.for_zone("xen")
