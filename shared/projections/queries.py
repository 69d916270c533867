"""Reads of the read models that services and the gateway share, as plain views."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from proto import streams
from shared.domain.deploy import HostView, OfferingView, SnapshotView, TemplateView
from shared.domain.limits import Usage
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


async def catalog_rows(conn: asyncpg.Connection, kind: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM catalog WHERE kind = $1 AND removed IS NULL ORDER BY name, id", kind)
    return [{**dict(r), "data": _decode(r["data"])} for r in rows]


async def snapshot_view(conn: asyncpg.Connection, snapshot_id: str) -> SnapshotView | None:
    row = await catalog_row(conn, "vmsnapshot", snapshot_id)
    if row is None:
        return None
    data = row["data"]
    vm = await conn.fetchrow("SELECT zone_id, template_id FROM vm_instances WHERE id = $1::uuid",
                             data["vm_id"])
    root = next((d for d in data["disks"] if d["root"]), None)
    disk_offering = None
    if root is not None:
        volume = await catalog_row(conn, "volume", root["volume_id"])
        disk_offering = volume["data"].get("disk_offering_id") if volume else None
    return SnapshotView(
        id=row["id"], vm_id=data["vm_id"], account_id=row["account_id"],
        zone_id=vm["zone_id"] if vm else "", cpu_number=data["cpu_number"],
        memory_mb=data["memory_mb"], root_pool_id=root["pool_id"] if root else None,
        root_template_id=vm["template_id"] if vm else None,
        root_disk_offering_id=disk_offering,
        network_ids=[n["network_id"] for n in data["nics"]],
    )


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


async def host_view(conn: asyncpg.Connection, host_id: str) -> HostView | None:
    row = await conn.fetchrow(_HOSTS + " AND id = $1", host_id)
    return None if row is None else _host(row)


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


async def offering_view(conn: asyncpg.Connection, offering_id: str) -> OfferingView | None:
    row = await catalog_row(conn, "serviceoffering", offering_id)
    if row is None:
        return None
    data = row["data"]
    return OfferingView(row["id"], row["name"], data["cpu_number"], data["cpu_speed"],
                        data["memory_mb"])


async def snapshot_owners(conn: asyncpg.Connection) -> dict[str, str | None]:
    """The owning account of every VM snapshot, deleted ones included (a template seeded
    from a deleted snapshot stays its owner's until it is collected)."""
    return {r["id"]: r["account_id"] for r in await conn.fetch(
        "SELECT id, account_id FROM catalog WHERE kind = 'vmsnapshot'")}


async def template_owner(conn: asyncpg.Connection, template: dict[str, Any]) -> str | None:
    """A seeded template's owner: the owner of the VM snapshot it was seeded from."""
    owner: str | None = await conn.fetchval(
        "SELECT account_id FROM catalog WHERE kind = 'vmsnapshot' AND id = $1",
        template["data"]["vm_snapshot_id"])
    return owner


async def template_view(conn: asyncpg.Connection, template_id: str) -> TemplateView | None:
    row = await catalog_row(conn, "template", template_id)
    if row is None:
        return None
    pool = await catalog_row(conn, "pool", row["data"]["pool_id"])
    return TemplateView(row["id"], await template_owner(conn, row),
                        pool["zone_id"] if pool else "", row["data"]["pool_id"])


async def network_ids(conn: asyncpg.Connection) -> set[str]:
    return {r["id"] for r in await catalog_rows(conn, "network")}


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


async def account_usage(conn: asyncpg.Connection, account_id: str) -> Usage:
    """What an account holds, as its resource limits count it: VMs that are not Error,
    Destroyed or gone (with their CPUs and memory); volumes that are not deleted or failed,
    plus the root volume of each VM still starting; templates seeded from its snapshots."""
    vms = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(cpu_number), 0) AS cpu,"
        " coalesce(sum(memory_mb), 0) AS memory,"
        " count(*) FILTER (WHERE state = 'Starting') AS starting"
        " FROM vm_instances WHERE account_id = $1 AND removed IS NULL"
        " AND state NOT IN ('Error', 'Destroyed', 'Expunging')", account_id)
    volumes = await conn.fetchval(
        "SELECT count(*) FROM catalog WHERE kind = 'volume' AND account_id = $1"
        " AND removed IS NULL AND state NOT IN ('Destroy', 'Expunged', 'Error')", account_id)
    templates = await conn.fetchval(
        "SELECT count(*) FROM catalog t JOIN catalog s ON s.kind = 'vmsnapshot'"
        " AND s.id = t.data ->> 'vm_snapshot_id'"
        " WHERE t.kind = 'template' AND t.removed IS NULL AND s.account_id = $1", account_id)
    return Usage(user_vm=vms["n"], volume=volumes + vms["starting"], template=templates,
                 cpu=vms["cpu"], memory=vms["memory"])


async def account_limits(conn: asyncpg.Connection, account_id: str) -> dict[str, int]:
    """The limits set for an account (resources not set take CloudStack's defaults)."""
    row = await catalog_row(conn, "account", account_id)
    limits: dict[str, int] = row["data"].get("limits", {}) if row else {}
    return limits
