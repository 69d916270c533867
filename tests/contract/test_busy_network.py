"""updateNetwork on a network whose VMs keep taking and freeing addresses, against a real
PostgreSQL: the range is decided in the planners' turn (the lock they allocate and release
addresses under), so the addresses freed meanwhile do not move the network's stream on
between its read and its commit, attempt after attempt."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg

import services.gateway.commands  # noqa: F401  (registers every command)
from proto import streams
from proto.envelope import Metadata
from proto.events import AddressesAllocated, AddressesReleased, NetworkImported, NetworkRangeSet
from services.gateway.api import COMMANDS, Caller, Context, Params
from shared.domain.network import ADDRESS_DECISIONS
from shared.domain.network import Network as NetworkState
from shared.eventstore import ANY_VERSION, Append, EventStore
from shared.projections import ALL, Projector

META = Metadata(correlation_id="busy", actor="test")
ADMIN = Caller("acct-admin", "admin", "user-admin", "admin", "admin")
NETWORK = str(uuid.uuid4())
VMS = [str(uuid.uuid4()) for _ in range(40)]


class Busy(EventStore):
    """A store whose every read of the network lets the planner free one more VM's address
    (under its lock, as the planner does) before the reader goes on."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.freed = 0
        self.releases: list[asyncio.Future[None]] = []

    async def network(self, network_id: str, *, addresses: bool = True) -> NetworkState:
        found = await super().network(network_id, addresses=addresses)
        if self.freed < len(VMS):
            release = asyncio.ensure_future(self._free(VMS[self.freed]))
            self.releases.append(release)
            self.freed += 1
            with contextlib.suppress(TimeoutError):  # held by the reader: it waits its turn
                async with asyncio.timeout(0.2):
                    await asyncio.shield(release)
        return found

    async def _free(self, vm_id: str) -> None:
        async with self.decision_lock(ADDRESS_DECISIONS):
            await self.commit([Append(streams.network(NETWORK), [AddressesReleased(
                network_id=NETWORK, vm_id=vm_id)], ANY_VERSION)], META)


async def test_a_range_is_set_while_the_networks_addresses_are_being_freed(
        store: EventStore) -> None:
    busy = Busy(store.pool)
    await busy.commit([Append(streams.network(NETWORK), [
        NetworkImported(network_id=NETWORK, zone_id="z1", name="guests", ref="net-1"),
        *(AddressesAllocated(network_id=NETWORK, vm_id=vm, addresses=[f"10.1.0.{i + 10}"],
                             cidr="10.1.0.0/24", gateway="10.1.0.1")
          for i, vm in enumerate(VMS))], 0)], META)
    projector = asyncio.ensure_future(Projector(busy, ALL).run())
    try:
        answer = await COMMANDS["updatenetwork"].run(
            Context(store=busy), Params("updateNetwork", {"id": NETWORK,
                                                          "cidr": "10.1.0.0/16"}), ADMIN)
    finally:
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
    await asyncio.gather(*busy.releases)  # each freed once the range was set
    assert answer["network"]["cidr"] == "10.1.0.0/16"
    recorded = [r.event() for r in await busy.read_stream(streams.network(NETWORK))]
    assert [e for e in recorded if isinstance(e, NetworkRangeSet)] == [NetworkRangeSet(
        network_id=NETWORK, cidr="10.1.0.0/16", gateway="10.1.0.1")]
    assert any(isinstance(e, AddressesReleased) for e in recorded)
