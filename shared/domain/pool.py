"""A primary storage pool as its stream ``pool-<id>`` tells it: imported from the
hypervisor, its settings (updateConfiguration), perhaps gone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from proto.events import AnyEvent, InventoryObjectGone, PoolImported, PoolSettingChanged


@dataclass(frozen=True)
class Pool:
    id: str
    imported: PoolImported | None = None
    settings: dict[str, str] = field(default_factory=dict)
    gone: bool = False

    @property
    def live(self) -> PoolImported | None:
        """The pool as last imported, unless it is gone since."""
        return None if self.gone else self.imported

    def setting(self, name: str) -> bool:
        """A true/false setting (false unless set)."""
        return self.settings.get(name, "false").lower() == "true"


def fold(pool_id: str, events: Iterable[AnyEvent]) -> Pool:
    pool = Pool(pool_id)
    for event in events:
        match event:
            case PoolImported():
                pool = replace(pool, imported=event, gone=False)
            case PoolSettingChanged():
                pool = replace(pool, settings={**pool.settings, event.name: event.value})
            case InventoryObjectGone():
                pool = replace(pool, gone=True)
    return pool
