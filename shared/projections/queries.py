"""The planner's old read of every host's capacity from the read models, kept for
``bench/placement.py``, which measures it. No handler reads the read models: they decide
from the event store (``shared.eventstore``), the gateway lists through
``shared.projections.read``."""

from __future__ import annotations

import asyncpg
import msgspec

from shared.domain.deploy import HostView

_decode = msgspec.json.decode

# Every host's capacity without its per-VM reservation map (one jsonb operation per row;
# extracting fields one by one costs a detoast each).
_HOSTS = ("SELECT id, name, zone_id, version, data - 'reservations' AS data FROM catalog"
          " WHERE kind = 'host' AND removed IS NULL")


def _host(row: asyncpg.Record) -> HostView:
    data = _decode(row["data"])
    return HostView(
        id=row["id"], name=row["name"], zone_id=row["zone_id"], pool_ids=data["pool_ids"],
        cpu_mhz_total=data["cpu_cores"] * data["cpu_mhz"],
        memory_mb_total=data["memory_bytes"] // (1024 * 1024),
        reserved_cpu_mhz=data.get("reserved_cpu_mhz", 0),
        reserved_memory_mb=data.get("reserved_memory_mb", 0), version=row["version"],
    )


async def host_views(conn: asyncpg.Connection) -> list[HostView]:
    """Every host's capacity."""
    return [_host(r) for r in await conn.fetch(_HOSTS + " ORDER BY id")]
