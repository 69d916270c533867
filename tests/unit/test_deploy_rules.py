"""The checks before a deploy and the choice of host: pure rules, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.deploy import (
    HostView,
    OfferingView,
    Rejected,
    SnapshotView,
    TemplateView,
    check_deploy,
    choose_host,
)

SNAP = SnapshotView(id="s1", vm_id="vm1", account_id="alice", zone_id="z1", cpu_number=2,
                    memory_mb=2048, root_pool_id="p1", root_template_id="t0",
                    root_disk_offering_id="do1", network_ids=["n1", "n2"])
TWO_CPUS = OfferingView("o2", "Large", 2, 1000, 2048)
H1 = HostView("h1", "host-1", "z1", ["p1"], 4000, 4096)
H2 = HostView("h2", "host-2", "z1", ["p2"], 4000, 4096)


def check(**overrides: Any) -> Any:
    args: dict[str, Any] = dict(
        account_id="alice", is_admin=False, vm_snapshot_id="s1", template_id=None,
        snapshot=SNAP, template=None, offering=TWO_CPUS, offering_id="o2", host_id=None,
        host=None, network_ids=[], known_networks={"n1", "n2", "n3"}, name="web-1")
    args.update(overrides)
    return check_deploy(**args)


def rejected(**overrides: Any) -> str:
    with pytest.raises(Rejected) as caught:
        check(**overrides)
    assert caught.value.code == 431
    return caught.value.text


def test_a_valid_request_inherits_from_the_original() -> None:
    source = check()
    assert source.pool_id == "p1" and source.zone_id == "z1"
    assert source.network_ids == ["n1", "n2"]  # none asked for: the original's networks
    assert (source.root_template_id, source.disk_offering_id) == ("t0", "do1")
    assert check(network_ids=["n3"]).network_ids == ["n3"]


def test_exactly_one_source() -> None:
    assert "template ID or VM snapshot ID" in rejected(template_id="t1")
    assert rejected(vm_snapshot_id=None).startswith("missing parameter vmsnapshotid or "
                                                    "templateid")


def test_snapshot_must_be_visible_to_the_caller() -> None:
    assert "vmsnapshotid" in rejected(snapshot=None)
    assert "vmsnapshotid" in rejected(account_id="bob")
    assert check(account_id="bob", is_admin=True).pool_id == "p1"


def test_offering_cpus_must_match_the_snapshot() -> None:
    text = rejected(offering=OfferingView("o1", "Small", 1, 500, 512))
    assert text.startswith("invalid parameter serviceofferingid")
    assert "2 virtual CPU(s)" in text and "Small" in text
    assert "serviceofferingid" in rejected(offering=None)


def test_host_must_reach_the_root_pool() -> None:
    assert "hostid" in rejected(host_id="h9", host=None)
    text = rejected(host_id="h2", host=H2)
    assert "cannot reach" in text and "p1" in text
    assert check(host_id="h1", host=H1).pool_id == "p1"


def test_networks_and_name() -> None:
    assert "networkids" in rejected(network_ids=["n9"])
    assert "name" in rejected(name="1-starts-with-a-digit")
    assert "name" in rejected(name="has space")


def test_a_seeded_template_is_a_source_too() -> None:
    template = TemplateView("t1", "alice", "z1", "p1")
    source = check(vm_snapshot_id=None, snapshot=None, template_id="t1", template=template)
    assert source.root_template_id == "t1" and source.source_vm_id is None
    assert "templateid" in rejected(vm_snapshot_id=None, snapshot=None, template_id="t1")


def test_a_template_is_its_snapshot_owners_alone() -> None:
    """Another account's template, or one whose owner is unknown, is refused exactly as an
    id that does not exist; an admin may use either."""
    missing = rejected(vm_snapshot_id=None, snapshot=None, template_id="t1", template=None)
    for owner in ("bob", None):
        template = TemplateView("t1", owner, "z1", "p1")
        assert rejected(vm_snapshot_id=None, snapshot=None, template_id="t1",
                        template=template) == missing
        assert check(vm_snapshot_id=None, snapshot=None, template_id="t1", template=template,
                     is_admin=True).pool_id == "p1"


def test_a_snapshot_with_no_owner_is_nobodys() -> None:
    orphan = SnapshotView(**{**SNAP.__dict__, "account_id": None})
    assert rejected(snapshot=orphan) == rejected(snapshot=None)


def test_choose_host_prefers_the_most_free_memory_among_those_that_reach() -> None:
    busy = HostView("h0", "busy", "z1", ["p1"], 4000, 4096, 1000, 3000)
    assert choose_host([busy, H1, H2], "p1", 1000, 512).id == "h1"
    assert choose_host([busy, H1], "p1", 1000, 512, wanted="h0").id == "h0"
    twin = HostView("h3", "twin", "z1", ["p1"], 4000, 4096)
    assert choose_host([twin, H1], "p1", 1000, 512).id == "h1"  # ties: by id


def test_spreading_picks_among_the_roomiest_by_the_vms_id() -> None:
    hosts = [HostView(f"h{i}", f"host-{i}", "z1", ["p1"], 4000, 4096 - i) for i in range(6)]
    picks = {choose_host(hosts, "p1", 10, 10, spread_key=f"vm-{n}").id for n in range(50)}
    assert picks == {"h0", "h1", "h2", "h3"}  # the four roomiest, never the others
    assert choose_host(hosts, "p1", 10, 10, spread_key="vm-7").id == \
        choose_host(hosts, "p1", 10, 10, spread_key="vm-7").id


def test_no_host_is_a_533_that_says_why() -> None:
    with pytest.raises(Rejected) as none_reach:
        choose_host([H2], "p1", 100, 100)
    assert none_reach.value.code == 533 and "reach" in none_reach.value.text
    full = HostView("h1", "full", "z1", ["p1"], 1000, 1024, 900, 1000)
    with pytest.raises(Rejected) as no_room:
        choose_host([full], "p1", 500, 512)
    assert no_room.value.code == 533 and "full with 100 MHz and 24 MB" in no_room.value.text
