"""Inventory sync: read vCenter, append what changed since the last sync."""

from __future__ import annotations

import logging

import asyncpg
import msgspec

from proto import EVENT_TYPES
from proto.envelope import Metadata
from shared.domain.accounts import ADMIN_ACCOUNT_ID
from shared.domain.inventory import DeployedVm, observed, vanished
from shared.drivers.base import Hypervisor
from shared.eventstore import Append, EventStore

log = logging.getLogger(__name__)

_OBJECT_TYPES = ["ZoneImported", "HostImported", "PoolImported", "NetworkImported"]
_IMPORT_TYPES = [*_OBJECT_TYPES, "VmImported", "VmSnapshotTaken"]


async def changes(store: EventStore, hypervisor: Hypervisor) -> list[Append]:
    """The appends that bring the store up to what vCenter shows now."""
    # Deployed VMs count as gone only if they were running before vCenter was read: one
    # that a deploy finishes meanwhile is simply not in this reading yet.
    async with store.pool.acquire() as conn:
        deployed_before = set(await _deployed(conn))
    inventories = await hypervisor.inventory()
    vm_names = {vm.name for inventory in inventories for vm in inventory.vms}
    async with store.pool.acquire() as conn:
        own_names = {r["name"] for r in await conn.fetch(
            "SELECT data ->> 'instance_name' AS name FROM events"
            " WHERE type = 'VmDeployRequested'")}
        owners = {r["id"]: r["account_id"] for r in await conn.fetch(
            "SELECT id::text AS id, account_id FROM vm_instances WHERE imported")}
        seen = [found for inventory in inventories
                for found in observed(inventory, ADMIN_ACCOUNT_ID, own_names, owners)]
        vms, snapshots, objects, gone = await _imported(conn)
        deployed = {vm_id: vm for vm_id, vm in (await _deployed(conn)).items()
                    if vm_id in deployed_before}
        seen += vanished(seen, vms, snapshots, objects, deployed=deployed, vm_names=vm_names)
        stream_ids = [stream for stream, _ in seen]
        versions = {r["stream_id"]: r["version"] for r in await conn.fetch(
            "SELECT stream_id, max(version) AS version FROM events"
            " WHERE stream_id = ANY($1) GROUP BY stream_id", stream_ids)}
        last = {(r["stream_id"], r["type"]): r["data"] for r in await conn.fetch(
            "SELECT DISTINCT ON (stream_id, type) stream_id, type, data FROM events"
            " WHERE stream_id = ANY($1) AND type = ANY($2)"
            " ORDER BY stream_id, type, version DESC", stream_ids, _IMPORT_TYPES)}
    out = []
    for stream_id, event in seen:
        kind = type(event)
        # Gone once, back now: imported again even if it looks as it did.
        before = None if stream_id in gone else last.get((stream_id, kind.__name__))
        now = msgspec.json.decode(msgspec.json.encode(event), type=kind)
        if before is not None and msgspec.json.decode(before, type=EVENT_TYPES[kind.__name__]) \
                == now:
            continue
        out.append(Append(stream_id, [now], versions.get(stream_id, 0)))
    return out


async def _imported(conn: asyncpg.Connection) -> tuple[
        dict[str, list[str]], dict[str, str], dict[str, tuple[str, str]], set[str]]:
    """From the store itself: imported VMs not expunged (→ their volume ids), their
    snapshots not deleted (→ their VM), zones, hosts, pools and networks not gone
    (stream → (kind, id)), and the streams of those that are gone."""
    vms = {r["vm_id"]: [d["volume_id"] for d in msgspec.json.decode(r["disks"])]
           for r in await conn.fetch(
               "SELECT DISTINCT ON (stream_id) data ->> 'vm_id' AS vm_id,"
               " (data -> 'disks')::text AS disks FROM events WHERE type = 'VmImported'"
               " AND stream_id NOT IN (SELECT stream_id FROM events WHERE type = 'VmExpunged')"
               " ORDER BY stream_id, version DESC")}
    snapshots = {r["snapshot_id"]: r["vm_id"] for r in await conn.fetch(
        "SELECT DISTINCT data ->> 'snapshot_id' AS snapshot_id, data ->> 'vm_id' AS vm_id"
        " FROM events WHERE type = 'VmSnapshotTaken' AND data ->> 'vm_id' = ANY($1::text[])"
        " AND stream_id NOT IN (SELECT stream_id FROM events WHERE type = 'VmSnapshotDeleted')",
        list(vms))}
    latest = await conn.fetch(
        "SELECT DISTINCT ON (stream_id) stream_id, type, coalesce(data ->> 'host_id',"
        " data ->> 'pool_id', data ->> 'network_id', data ->> 'zone_id') AS object_id"
        " FROM events WHERE type = ANY($1::text[]) ORDER BY stream_id, version DESC",
        [*_OBJECT_TYPES, "InventoryObjectGone"])
    objects = {r["stream_id"]: (r["type"].removesuffix("Imported").lower(), r["object_id"])
               for r in latest if r["type"] != "InventoryObjectGone"}
    gone = {r["stream_id"] for r in latest if r["type"] == "InventoryObjectGone"}
    return vms, snapshots, objects, gone


async def _deployed(conn: asyncpg.Connection) -> dict[str, DeployedVm]:
    """VMs snapdeploy deployed that started and are neither expunged nor being destroyed
    (a destroy removes the VM in vCenter before it records the expunge), with their
    volumes and their snapshots not deleted."""
    rows = await conn.fetch(
        "SELECT data ->> 'vm_id' AS vm_id, data ->> 'instance_name' AS name FROM events e"
        " WHERE type = 'VmDeployRequested'"
        " AND stream_id IN (SELECT stream_id FROM events WHERE type = 'VmStarted')"
        " AND stream_id NOT IN (SELECT stream_id FROM events"
        "                       WHERE type IN ('VmExpunged', 'VmDeployFailed'))"
        " AND (SELECT type FROM events last WHERE last.stream_id = e.stream_id"
        "      ORDER BY version DESC LIMIT 1) <> 'VmDestroyRequested'")
    if not rows:
        return {}
    ids = [r["vm_id"] for r in rows]
    volumes: dict[str, list[str]] = {}
    for r in await conn.fetch(
            "SELECT id, data ->> 'vm_id' AS vm_id FROM catalog WHERE kind = 'volume'"
            " AND removed IS NULL AND data ->> 'vm_id' = ANY($1::text[])", ids):
        volumes.setdefault(r["vm_id"], []).append(r["id"])
    snapshots: dict[str, list[str]] = {}
    for r in await conn.fetch(
            "SELECT DISTINCT data ->> 'snapshot_id' AS snapshot_id, data ->> 'vm_id' AS vm_id"
            " FROM events WHERE type = 'VmSnapshotTaken' AND data ->> 'vm_id' = ANY($1::text[])"
            " AND stream_id NOT IN (SELECT stream_id FROM events"
            "                       WHERE type = 'VmSnapshotDeleted')", ids):
        snapshots.setdefault(r["vm_id"], []).append(r["snapshot_id"])
    return {r["vm_id"]: DeployedVm(r["name"], sorted(volumes.get(r["vm_id"], [])),
                                   sorted(snapshots.get(r["vm_id"], [])))
            for r in rows}


def describe(appends: list[Append]) -> str:
    counts: dict[str, int] = {}
    for append in appends:
        for event in append.events:
            counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
    return ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "no changes"


async def sync(store: EventStore, hypervisor: Hypervisor) -> str:
    """Sync now, appending in one transaction; returns what changed."""
    appends = await changes(store, hypervisor)
    await store.commit(appends, Metadata(correlation_id="inventory-sync", actor="planner"))
    summary = describe(appends)
    log.info("inventory sync: %s", summary)
    return summary
