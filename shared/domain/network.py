"""A network as its stream ``network-<id>`` tells it: imported from the hypervisor, perhaps
gone; the IPv4 range its guest addresses come from, and which VM holds which address.

Addresses are decided on the write side: the planner reads the network as the store keeps
it once (``Store.network``: these rules, kept by the store as each event is appended), then
holds it and folds only the events appended to its stream since (``fold`` from ``start``,
``shared.eventstore.HeldNetworks``), picks the lowest free addresses of its range
(``allocate``) and appends them at the version it read, so two VMs never hold one
address (a concurrent allocation conflicts and decides again; and the store refuses an
address another VM holds, whatever the version: ``clashes``).

A busy network holds an address per VM deployed on it (tens of thousands on a /16), so the
addresses held are also kept as a set of integers (``Network.taken``), moved on with each
allocation and release: picking the lowest free ones then costs a set lookup per address
below them, not a text conversion of every address of the range."""

from __future__ import annotations

import ipaddress
import itertools
import socket
import zlib
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field, replace

from proto.events import (
    AddressesAllocated,
    AddressesReleased,
    AnyEvent,
    Event,
    InventoryObjectGone,
    NetworkImported,
    NetworkRangeSet,
)
from shared.drivers.base import NetworkBinding
from shared.errors import INSUFFICIENT_CAPACITY, PARAM_ERROR, ApiError

# The default ranges: a /24 of 10.0.0.0/8 per network, chosen by its id.
DEFAULT_PREFIX = 24

# The decision lock (``Store.decision_lock``) under which the planners allocate and release
# a network's addresses, and a network's range is set.
ADDRESS_DECISIONS = "planner"


def default_range(network_id: str) -> tuple[str, str]:
    """The range (CIDR, gateway) of a network no range was set for: a /24 of 10.0.0.0/8
    derived from its id (the same every time), its first address the gateway."""
    h = zlib.crc32(network_id.encode())
    net = ipaddress.IPv4Network((10 << 24 | (h & 0xFFFF) << 8, DEFAULT_PREFIX))
    return str(net), str(net.network_address + 1)


@dataclass(frozen=True)
class Network:
    id: str
    imported: NetworkImported | None = None
    gone: bool = False
    cidr: str | None = None  # set by updateNetwork; None: ``default_range``
    gateway: str | None = None
    held: dict[str, list[str]] = field(default_factory=dict)  # vm id -> its addresses
    version: int = 0
    # Every address of ``held`` as an integer: given by whoever changes ``held`` (``fold``),
    # made from ``held`` when not given.
    taken: frozenset[int] = field(default=frozenset(), compare=False, repr=False)
    # Every host address of the range below it is taken (0: not known): where the search
    # for free ones starts. Moved on by ``fold`` past what each allocation took, back to
    # what a release frees; 0 again when the range changes.
    low: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.taken and self.held:
            object.__setattr__(self, "taken", frozenset(
                _number(a) for addresses in self.held.values() for a in addresses))

    @property
    def binding(self) -> NetworkBinding | None:
        """What a clone attaches for it, unless it is unknown or gone."""
        if self.imported is None or self.gone:
            return None
        n = self.imported
        return NetworkBinding(n.ref, n.name, n.network_binding())

    @property
    def range(self) -> tuple[str, str]:
        """Its (CIDR, gateway): the one set, or its default."""
        if self.cidr is not None and self.gateway is not None:
            return self.cidr, self.gateway
        return default_range(self.id)


def evolve(network: Network, event: Event) -> Network:
    if isinstance(event, AddressesAllocated | AddressesReleased):
        return fold(network.id, [event], network)
    network = replace(network, version=network.version + 1)
    match event:
        case NetworkImported():
            return replace(network, imported=event, gone=False)
        case InventoryObjectGone():
            return replace(network, gone=True)
        case NetworkRangeSet():
            return replace(network, cidr=event.cidr, gateway=event.gateway, low=0)
    return network


def fold(network_id: str, events: Iterable[AnyEvent], start: Network | None = None) -> Network:
    """The network after ``events``, from ``start`` (what the stream's earlier events made
    of it) or from nothing; its holdings gathered in place: a busy network's stream holds
    an allocation per VM ever deployed on it."""
    network = start or Network(network_id)
    held: dict[str, list[str]] = dict(network.held)
    taken = set(network.taken)
    low = network.low
    for event in events:
        if isinstance(event, AddressesAllocated | AddressesReleased):
            # What the VM held is freed (an allocation then holds its new addresses).
            freed = [*map(_number, held.pop(event.vm_id, ()))]
            taken.difference_update(freed)
            low = min(low, *freed) if low and freed else low
            if isinstance(event, AddressesAllocated):
                held[event.vm_id] = list(event.addresses)
                taken.update(map(_number, event.addresses))
            network = replace(network, version=network.version + 1)
        else:
            network = evolve(network, event)
            low = network.low
    folded = replace(network, held=held, taken=frozenset(taken))
    return replace(folded, low=_first_free(folded, low))


def _first_free(network: Network, low: int) -> int:
    """The lowest host address of the network's range at or above ``low`` that is neither
    its gateway nor taken (past the range's end if none is)."""
    cidr, gateway = network.range
    return next(_free_numbers(cidr, gateway, network.taken, low), _hosts(cidr)[1] + 1)


def _free_numbers(cidr: str, gateway: str, taken: Container[int], low: int) -> Iterator[int]:
    """The host addresses of ``cidr`` at or above ``low`` that are neither its gateway nor in
    ``taken``, lowest first, as integers."""
    skip = _number(gateway)
    first, last = _hosts(cidr)
    return (n for n in range(max(first, low), last + 1) if n != skip and n not in taken)


def _hosts(cidr: str) -> tuple[int, int]:
    """The first and last host address of ``cidr`` (neither its network nor its broadcast
    address), as integers."""
    net = ipaddress.IPv4Network(cidr)
    return int(net.network_address) + 1, int(net.broadcast_address) - 1


def _number(address: str) -> int:
    """An IPv4 address as an integer (``inet_aton`` in C: several times faster than
    ``ipaddress``; it also takes short forms such as ``10.1``, which no allocation holds);
    -1, in no range, for text that is no address."""
    try:
        return int.from_bytes(socket.inet_aton(address), "big")
    except (OSError, ValueError):
        return -1


def clashes(network: Network, allocated: AddressesAllocated) -> list[str]:
    """The addresses of an allocation that another VM holds on the network, or that it
    names twice: the store refuses such an allocation whatever version it is appended at
    (the key of ``network_addresses``, migration 0016)."""
    others = {a for vm_id, held in network.held.items() if vm_id != allocated.vm_id
              for a in held}
    seen: set[str] = set()
    out = []
    for address in allocated.addresses:
        if address in others or address in seen:
            out.append(address)
        seen.add(address)
    return out


def free_addresses(cidr: str, gateway: str, taken: Container[int], count: int,
                   low: int = 0) -> list[str]:
    """The ``count`` lowest addresses of ``cidr`` that are neither its network or broadcast
    address, nor the gateway, nor in ``taken`` (addresses as integers); fewer if the range
    has fewer. ``low``: every address below it is taken (searched from there)."""
    return [str(ipaddress.IPv4Address(n))
            for n in itertools.islice(_free_numbers(cidr, gateway, taken, low), count)]


def allocate(network: Network, vm_id: str, count: int) -> AddressesAllocated | None:
    """``count`` addresses for a VM's NICs on the network (None if it holds some already:
    a rerun decides nothing new).

    Raises:
        ApiError: 533 when the range has too few free addresses.
    """
    if vm_id in network.held or count < 1:
        return None
    cidr, gateway = network.range
    addresses = free_addresses(cidr, gateway, network.taken, count, network.low)
    if len(addresses) < count:
        raise ApiError(INSUFFICIENT_CAPACITY, f"network {network.id} has no free address left "
                       f"in {cidr} for VM {vm_id}")
    return AddressesAllocated(network_id=network.id, vm_id=vm_id, addresses=addresses,
                              cidr=cidr, gateway=gateway)


def release(network: Network, vm_id: str) -> AddressesReleased | None:
    """The VM's addresses on the network set free (None if it holds none)."""
    if vm_id not in network.held:
        return None
    return AddressesReleased(network_id=network.id, vm_id=vm_id)


def check_range(network: Network, cidr: str | None, gateway: str | None) -> NetworkRangeSet:
    """A new range for the network: ``cidr`` (default: the current one) and ``gateway``
    (default: the range's first address), a gateway inside it, and every address held now
    inside it too.

    Raises:
        ApiError: 431 naming ``cidr`` or ``gateway`` and why.
    """
    current_cidr, _ = network.range
    try:
        net = ipaddress.IPv4Network(cidr or current_cidr, strict=False)
    except ValueError:
        raise ApiError(PARAM_ERROR, f"invalid parameter cidr: {str(cidr)[:64]!r} is not an "
                       "IPv4 CIDR such as 10.1.1.0/24") from None
    if net.prefixlen > 30:
        raise ApiError(PARAM_ERROR, f"invalid parameter cidr: {net} holds no room for guests; "
                       "use a /30 or larger")
    try:
        gw = ipaddress.IPv4Address(gateway) if gateway else net.network_address + 1
    except ValueError:
        raise ApiError(PARAM_ERROR, f"invalid parameter gateway: {str(gateway)[:64]!r} is not "
                       "an IPv4 address") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise ApiError(PARAM_ERROR, f"invalid parameter gateway: {gw} is not a host address "
                       f"of {net}")
    outside = sorted(a for held in network.held.values() for a in held
                     if ipaddress.IPv4Address(a) not in net or ipaddress.IPv4Address(a) == gw)
    if outside:
        raise ApiError(PARAM_ERROR, f"invalid parameter cidr: addresses held by VMs now would "
                       f"fall outside {net} or on its gateway ({', '.join(outside[:5])})")
    return NetworkRangeSet(network_id=network.id, cidr=str(net), gateway=str(gw))
