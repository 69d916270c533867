"""The guest address rules (shared.domain.network): ranges, allocation, release, a new range
and the planner deciding from the store."""

from __future__ import annotations

import random

import pytest

from proto.events import AddressesAllocated, AddressesReleased, NetworkImported, NetworkRangeSet
from shared.domain import network
from shared.errors import ApiError

IMPORTED = NetworkImported(network_id="n1", zone_id="z", name="guest0", ref="net-1")


def held(*events: object) -> network.Network:
    return network.fold("n1", [IMPORTED, *events])  # type: ignore[list-item]


def test_a_default_range_is_a_slash_24_of_ten_the_same_every_time() -> None:
    cidr, gateway = network.default_range("n1")
    assert cidr.startswith("10.") and cidr.endswith(".0/24") and gateway.endswith(".1")
    assert network.default_range("n1") == (cidr, gateway)
    assert network.default_range("n2") != (cidr, gateway)


def test_the_lowest_free_addresses_skip_the_gateway_and_those_held() -> None:
    state = held(NetworkRangeSet(network_id="n1", cidr="192.168.5.0/29",
                                 gateway="192.168.5.1"))
    first = network.allocate(state, "vm-a", 2)
    assert first is not None and first.addresses == ["192.168.5.2", "192.168.5.3"]
    state = network.fold("n1", [IMPORTED, NetworkRangeSet(
        network_id="n1", cidr="192.168.5.0/29", gateway="192.168.5.1"), first])
    second = network.allocate(state, "vm-b", 1)
    assert second is not None and second.addresses == ["192.168.5.4"]
    assert second.cidr == "192.168.5.0/29" and second.gateway == "192.168.5.1"
    # A rerun for a VM that holds addresses decides nothing new.
    assert network.allocate(state, "vm-a", 2) is None


def test_a_full_range_refuses_and_a_release_frees() -> None:
    events: list[object] = [NetworkRangeSet(network_id="n1", cidr="10.9.9.0/30",
                                            gateway="10.9.9.1")]
    got = network.allocate(held(*events), "vm-a", 1)
    assert got is not None and got.addresses == ["10.9.9.2"]
    events.append(got)
    with pytest.raises(ApiError) as full:
        network.allocate(held(*events), "vm-b", 1)
    assert full.value.code == 533 and "no free address" in full.value.text
    released = network.release(held(*events), "vm-a")
    assert released == AddressesReleased(network_id="n1", vm_id="vm-a")
    events.append(released)
    assert network.release(held(*events), "vm-a") is None
    again = network.allocate(held(*events), "vm-b", 1)
    assert again is not None and again.addresses == ["10.9.9.2"]


def test_the_version_counts_every_event_of_the_stream() -> None:
    allocated = AddressesAllocated(network_id="n1", vm_id="v", addresses=["10.0.0.2"],
                                   cidr="10.0.0.0/24", gateway="10.0.0.1")
    state = held(allocated, AddressesReleased(network_id="n1", vm_id="v"), allocated)
    assert state.version == 4 and state.held == {"v": ["10.0.0.2"]}


def test_a_new_range_must_hold_the_gateway_and_every_address_held() -> None:
    allocated = AddressesAllocated(network_id="n1", vm_id="v", addresses=["10.0.0.7"],
                                   cidr="10.0.0.0/24", gateway="10.0.0.1")
    state = held(allocated)
    assert network.check_range(state, "10.0.0.0/25", None) == NetworkRangeSet(
        network_id="n1", cidr="10.0.0.0/25", gateway="10.0.0.1")
    for cidr, gateway, param in (("10.1.0.0/24", None, "cidr"), ("nonsense", None, "cidr"),
                                 ("10.0.0.0/24", "10.0.1.1", "gateway"),
                                 ("10.0.0.0/24", "10.0.0.7", "cidr"),
                                 ("10.0.0.0/31", None, "cidr")):
        with pytest.raises(ApiError) as refused:
            network.check_range(state, cidr, gateway)
        assert refused.value.text.startswith(f"invalid parameter {param}:"), refused.value.text


def test_the_addresses_taken_follow_every_allocation_and_release() -> None:
    first = AddressesAllocated(network_id="n1", vm_id="a", addresses=["10.0.0.2", "10.0.0.3"],
                               cidr="10.0.0.0/24", gateway="10.0.0.1")
    again = AddressesAllocated(network_id="n1", vm_id="a", addresses=["10.0.0.9"],
                               cidr="10.0.0.0/24", gateway="10.0.0.1")
    second = AddressesAllocated(network_id="n1", vm_id="b", addresses=["10.0.0.4"],
                                cidr="10.0.0.0/24", gateway="10.0.0.1")
    gone = AddressesReleased(network_id="n1", vm_id="a")
    for events in ([first], [first, second], [first, again], [first, second, gone],
                   [first, gone, second]):
        folded = held(*events)
        evolved = network.Network("n1")
        for event in [IMPORTED, *events]:
            evolved = network.evolve(evolved, event)
        made = network.Network("n1", held=folded.held)  # as the store reads it
        for state in (folded, evolved, made):
            assert state.taken == {network._number(a) for addresses in folded.held.values()
                                   for a in addresses}, events
        assert evolved.version == folded.version == len(events) + 1


def test_on_a_busy_slash_16_the_lowest_free_are_a_gap_then_the_end() -> None:
    # 20,000 VMs on one network, the addresses of one VM gone from the middle.
    base = 10 << 24 | 128 << 16
    held_now = {f"vm-{i}": [f"10.128.{(i + 2) >> 8}.{(i + 2) & 255}"] for i in range(20_000)}
    del held_now["vm-700"]
    state = network.Network("n1", cidr="10.128.0.0/16", gateway="10.128.0.1", held=held_now)
    got = network.allocate(state, "new", 2)
    assert got is not None
    assert got.addresses == ["10.128.2.190", "10.128.78.34"]
    assert [network._number(a) - base for a in got.addresses] == [702, 20_002]


def test_text_held_that_is_no_address_takes_none() -> None:
    state = network.Network("n1", cidr="10.0.0.0/29", gateway="10.0.0.1",
                            held={"a": ["10.0.0.2"], "b": ["not an address", "10.0.0.3\x00"]})
    got = network.allocate(state, "c", 2)
    assert got is not None and got.addresses == ["10.0.0.3", "10.0.0.4"]


def test_the_search_from_the_low_mark_finds_what_a_search_from_the_start_finds() -> None:
    rng = random.Random(16)
    for _ in range(20):
        events: list[object] = [NetworkRangeSet(network_id="n1", cidr="10.7.0.0/27",
                                                gateway=f"10.7.0.{rng.randrange(1, 31)}")]
        state = held(*events)
        holders: list[str] = []
        for step in range(60):
            if holders and rng.random() < 0.4:
                vm_id = holders.pop(rng.randrange(len(holders)))
                event: AddressesAllocated | AddressesReleased | None = \
                    network.release(state, vm_id)
            else:
                vm_id = f"vm-{step}"
                count = rng.choice((1, 1, 2))
                try:
                    event = network.allocate(state, vm_id, count)
                except ApiError:
                    event = None
                # Exactly what a search of the whole range from its start finds.
                unhinted = network.free_addresses(*state.range, state.taken, count)
                assert (event.addresses if isinstance(event, AddressesAllocated) else []) == \
                    (unhinted if len(unhinted) == count else []), (step, state.low)
                if event is not None:
                    holders.append(vm_id)
            if event is not None:
                events.append(event)
                state = network.fold("n1", [event], state)
        # Folded in one go, from nothing, the same mark.
        assert held(*events).low == state.low
