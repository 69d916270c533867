"""Reads of the read models that the services' handlers make, as plain views (the gateway
reads through ``shared.projections.read``)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from proto import streams
from shared.domain.deploy import HostView
from shared.drivers.base import NetworkBinding

_decode = msgspec.json.decode


async def catalog_row(conn: asyncpg.Connection, kind: str, obj_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM catalog WHERE kind = $1 AND id = $2 AND removed IS NULL", kind, obj_id)
    if row is None:
        return None
    out = dict(row)
    out["data"] = _decode(out["data"])
    return out


# Placement's hot path: every host's capacity without its per-VM reservation map (one
# jsonb operation per row; extracting fields one by one costs a detoast each).
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


async def holds_capacity(conn: asyncpg.Connection, host_id: str,
                         vm_id: str) -> tuple[bool, int]:
    """Whether ``vm_id`` has capacity reserved on ``host_id``, and the host stream's version.

    Read from the event store itself, not the read models: a release must see a reservation
    committed a moment ago, and a second release must see the first.
    """
    stream = streams.host(host_id)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        last = await conn.fetchval(
            "SELECT type FROM events WHERE stream_id = $1 AND data ->> 'vm_id' = $2"
            " AND type IN ('CapacityReserved', 'CapacityReleased')"
            " ORDER BY version DESC LIMIT 1", stream, vm_id)
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream)
    return last == "CapacityReserved", int(version)


async def network_bindings(conn: asyncpg.Connection, ids: list[str]) -> list[NetworkBinding]:
    out = []
    for network_id in ids:
        row = await catalog_row(conn, "network", network_id)
        if row is None:
            raise LookupError(f"network {network_id} no longer exists")
        data = row["data"]
        out.append(NetworkBinding(data["ref"], row["name"], data.get("switch_uuid"),
                                  data.get("portgroup_key")))
    return out


async def ref_of(conn: asyncpg.Connection, kind: str, obj_id: str) -> str:
    """The hypervisor's id of a catalog object."""
    row = await catalog_row(conn, kind, obj_id)
    if row is None:
        raise LookupError(f"{kind} {obj_id} is unknown")
    return str(row["data"]["ref"])


async def full_clone(conn: asyncpg.Connection, pool_id: str) -> bool:
    """The pool's ``vmware.create.full.clone`` setting (false unless set)."""
    row = await catalog_row(conn, "pool", pool_id)
    settings = row["data"].get("settings", {}) if row else {}
    return str(settings.get("vmware.create.full.clone", "false")).lower() == "true"
