"""A network as its stream ``network-<id>`` tells it: imported from the hypervisor,
perhaps gone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto.events import AnyEvent, InventoryObjectGone, NetworkImported
from shared.drivers.base import NetworkBinding


@dataclass(frozen=True)
class Network:
    id: str
    imported: NetworkImported | None = None
    gone: bool = False

    @property
    def binding(self) -> NetworkBinding | None:
        """What a clone attaches for it, unless it is unknown or gone."""
        if self.imported is None or self.gone:
            return None
        n = self.imported
        return NetworkBinding(n.ref, n.name, n.network_binding())


def fold(network_id: str, events: Iterable[AnyEvent]) -> Network:
    network = Network(network_id)
    for event in events:
        match event:
            case NetworkImported():
                network = Network(network_id, event)
            case InventoryObjectGone():
                network = Network(network_id, network.imported, gone=True)
    return network
