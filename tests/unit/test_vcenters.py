"""Several vCenters: the ``vcenters`` setting, one session each, and ids of their own."""

from __future__ import annotations

from typing import Any

import pytest

from proto.events import HostImported, InventoryObjectGone, ZoneImported
from services.planner.inventory import changes, describe, sync
from shared import config, drivers
from shared.domain.inventory import object_id, zone_id
from shared.drivers import vmware
from shared.drivers.base import CloneRequest, HypervisorError, NetworkBinding
from shared.drivers.fake import FakeHypervisor
from shared.drivers.zones import describe as describe_session
from shared.eventstore import MemoryEventStore
from tests.kit import sessions

PRIMARY = {"SNAPDEPLOY_VCENTER_URL": "https://vc0.example/sdk",
           "SNAPDEPLOY_VCENTER_USER": "admin", "SNAPDEPLOY_VCENTER_PASSWORD": "pw0",
           "SNAPDEPLOY_VCENTER_VERIFY_TLS": "false"}


def test_the_single_vcenter_settings_mean_what_they_did() -> None:
    settings = config.load(PRIMARY)
    assert config.vcenters(settings) == [
        config.VCenter("", "https://vc0.example/sdk", "admin", "pw0", False)]
    assert [c.name for c in drivers.connections(settings)] == ["vcenter"]
    assert config.vcenters(config.load({})) == []


def test_further_vcenters_are_read_in_order_with_their_credentials() -> None:
    settings = config.load({
        **PRIMARY,
        "SNAPDEPLOY_VCENTERS": " east = https://ops%40corp:p%3Bw%25@vc1.example:8443/sdk ;"
                               "west=https://vc2.example/sdk?verify_tls=true;",
    })
    assert config.vcenters(settings)[1:] == [
        config.VCenter("east", "https://vc1.example:8443/sdk", "ops@corp", "p;w%", False),
        config.VCenter("west", "https://vc2.example/sdk", "admin", "pw0", True),
    ]
    assert [c.name for c in drivers.connections(settings)] == [
        "vcenter", "vcenter east", "vcenter west"]
    assert "vcenters" in config.SECRET_FIELDS
    assert "p;w" not in repr(config.vcenters(settings))


def test_further_vcenters_alone_are_a_configuration() -> None:
    settings = config.load({"SNAPDEPLOY_VCENTERS": "east=https://u:p@vc1/sdk"})
    assert [v.name for v in config.vcenters(settings)] == ["east"]
    assert [c.name for c in drivers.connections(settings)] == ["vcenter east"]


@pytest.mark.parametrize(("text", "named"), [
    ("https://u:secret@vc1/sdk", "'https://u:***@vc1/sdk' does not start with a name"),
    ("east https://vc1/sdk", "'east https://vc1/sdk' does not start with a name"),
    ("my vc=https://vc1/sdk", "name 'my vc'"),
    ("east=vc1.example", "the URL of 'east' ('vc1.example') is not https://"),
    ("east=https://u:secret@vc1:port/sdk", "the URL of 'east' ('https://u:***@vc1:port/sdk')"
                                           " is not a URL"),
    ("east=https://vc1/sdk?verify=no", "'verify' in its query"),
    ("east=https://vc1/sdk?verify_tls=maybe", "verify_tls='maybe' of 'east'"),
    ("east=https://u@vc1/sdk", "a user without a password"),
    ("east=https://vc1/sdk; east=https://vc2/sdk", "vCenter 'east' is named twice"),
    ("east=https://VC0.example:443/sdk/", "'east' is the vCenter of SNAPDEPLOY_VCENTER_URL"),
    ("east=https://vc1/sdk; west=https://vc1:443/sdk", "'west' is the vCenter of 'east'"),
])
def test_vcenters_names_the_part_that_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError) as refused:
        config.vcenters(config.Settings(vcenter_url=PRIMARY["SNAPDEPLOY_VCENTER_URL"],
                                        vcenters=text))
    assert str(refused.value).startswith("vcenters: ")
    assert named in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_malformed_vcenters_setting_stops_the_process_at_load() -> None:
    with pytest.raises(SystemExit, match="vcenters: name 'my vc'"):
        config.load({**PRIMARY, "SNAPDEPLOY_VCENTERS": "my vc=https://vc1/sdk"})


class _Offline(vmware.VSphere):
    """A session's ref handling, without a vCenter."""

    def __init__(self, scope: str) -> None:  # no super(): nothing to log in to
        self._scope = scope
        self.scope = scope or None


class _Mo:
    def __init__(self, mo_id: str) -> None:
        self._moId = mo_id


def test_a_further_vcenters_refs_are_scoped_and_the_first_ones_are_not() -> None:
    first, east = _Offline(""), _Offline("east")
    assert first._ref(_Mo("host-21")) == "host-21"
    assert east._ref(_Mo("host-21")) == "east/host-21"
    assert east._raw("east/host-21") == "host-21" and first._raw("host-21") == "host-21"
    for foreign in ("host-21", "west/host-21"):
        with pytest.raises(HypervisorError, match="not an object of vCenter east"):
            east._raw(foreign)
    assert describe_session(east) == "vCenter east"
    assert describe_session(first) == "vCenter"


def test_a_clone_request_reaches_vcenter_with_its_own_ids() -> None:
    request = CloneRequest(
        name="i-1", template_ref="east/vm-9", base_snapshot_ref="east/snapshot-3",
        host_ref="east/host-21", pool_ref="east/datastore-17", linked=True, cpu_number=1,
        cpu_mhz=100, memory_mb=256,
        networks=[NetworkBinding("east/network-7", "VM Network"),
                  NetworkBinding("east/dvportgroup-11", "DC0_DVPG0", "dvs:pg@uuid")])
    raw: Any = _Offline("east")._unscoped(request)
    assert (raw.template_ref, raw.base_snapshot_ref, raw.host_ref, raw.pool_ref) == (
        "vm-9", "snapshot-3", "host-21", "datastore-17")
    assert [n.ref for n in raw.networks] == ["network-7", "dvportgroup-11"]
    assert raw.networks[1].binding == "dvs:pg@uuid"


def test_the_ids_of_a_further_vcenters_objects_are_its_own() -> None:
    # The first vCenter's ids are what they always were: derived from vCenter's refs.
    assert zone_id("datacenter-2") == object_id("zone", "datacenter-2")
    assert object_id("host", "host-21") != object_id("host", vmware.scoped("east", "host-21"))
    assert vmware.scoped("", "host-21") == "host-21"
    assert vmware.scoped("east", "") == ""


async def test_two_vcenters_are_synced_and_each_marks_gone_only_its_own() -> None:
    store = MemoryEventStore()
    first = FakeHypervisor.standard()  # the same datacenter, twice: one refs scoped
    east = FakeHypervisor.standard(datacenter_ref="east/datacenter-1", ref_prefix="east/")
    both = sessions(first, east)

    await sync(store, both)

    events = [r.event() for r in store.events]
    zones = {e.zone_id for e in events if isinstance(e, ZoneImported)}
    assert zones == {zone_id("datacenter-1"), zone_id("east/datacenter-1")}
    hosts = {e.host_id: e.zone_id for e in events if isinstance(e, HostImported)}
    assert len(hosts) == 4
    assert hosts[object_id("host", "east/host-1")] == zone_id("east/datacenter-1")
    assert hosts[object_id("host", "host-1")] == zone_id("datacenter-1")

    del east.hosts["east/host-2"]
    assert describe(await changes(store, both)) == "1 InventoryObjectGone"
    await sync(store, both)
    gone = [e for e in (r.event() for r in store.events) if isinstance(e, InventoryObjectGone)]
    assert [g.object_id for g in gone] == [object_id("host", "east/host-2")]

    # One vCenter does not answer: the other is synced (its host gone is marked so), and
    # nothing of the silent one is taken for gone, VM, hosts and zone alike.
    recorded = len(store.events)
    del first.hosts["host-2"]
    east.fail("inventory", transient=True)
    summary = await sync(store, both)
    assert summary.startswith("1 InventoryObjectGone; ") and "did not answer" in summary
    assert [r.event() for r in store.events[recorded:]] == [InventoryObjectGone(
        kind="host", object_id=object_id("host", "host-2"))]
    assert describe(await changes(store, both)) == "no changes"  # east answers again

    # A vCenter never read since the process started: any zone the store knows that the
    # answering one does not hold may be its, so nothing of those is taken for gone (east's
    # zone and hosts alike), while the answering one is synced.
    recorded = len(store.events)
    again = FakeHypervisor.standard(datacenter_ref="east/datacenter-1", ref_prefix="east/")
    again.fail("inventory", transient=True)
    del first.pools["pool-1"]
    summary = await sync(store, sessions(first, again))
    assert summary.startswith("1 InventoryObjectGone; ") and "did not answer" in summary
    assert [r.event() for r in store.events[recorded:]] == [InventoryObjectGone(
        kind="pool", object_id=object_id("pool", "pool-1"))]
