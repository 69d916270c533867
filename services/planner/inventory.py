"""Inventory sync: read every hypervisor, append what changed since the last sync.

Every session (vCenter's datacenters, each KVM zone) is read at once, and each brings its
own changes: a session that does not answer leaves the zones it held at its last answer as
they were (nothing of them is taken for gone) while the others are synced, and the sync
says which did not answer. A session never read yet (its hypervisor has not answered since
the planner started) may hold any zone the store knows that no answering session holds: all
those are left as they were. Each zone's import records the driver kind of the session that
holds it.

What the store knows comes from its write-side lookups (``Store.vms``,
``attached_volumes``, ``vm_snapshots``, ``inventory_objects``), the streams of the objects
seen and those of the volumes attached to imported VMs that are not their own disks
(``Repository.attached_disks``: their disks are named by the volumes' ids), never from the
read models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from proto import streams
from proto.envelope import Metadata
from proto.events import Event, InventoryObjectGone, VmSnapshotDeleted
from shared.domain.accounts import ADMIN_ACCOUNT_ID
from shared.domain.inventory import (
    DeployedVm,
    current_form,
    object_id,
    observed,
    vanished,
    zone_id,
)
from shared.drivers.base import DriverKind, Inventory
from shared.drivers.zones import Hypervisors
from shared.eventstore import Append, Repository, Store, VmEntry

log = logging.getLogger(__name__)


def _running(vm: VmEntry) -> bool:
    """A VM snapdeploy deployed that started and is neither ended nor being destroyed (a
    destroy removes the VM in the hypervisor before it records the expunge)."""
    return (vm.instance_name is not None and not vm.imported and vm.started
            and not vm.ended and not vm.destroying)


def _disk_keys(inventories: list[tuple[DriverKind, Inventory]],
               vm_ids: list[str]) -> dict[str, set[str]]:
    """The keys of the disks of each of ``vm_ids`` that the hypervisors show now."""
    shown = {object_id("vm", vm.ref): vm for _, inventory in inventories
             for vm in inventory.vms}
    return {vm_id: {d.key for d in shown[vm_id].disks} for vm_id in vm_ids
            if vm_id in shown}


async def changes(store: Store, hypervisors: Hypervisors) -> list[Append]:
    """The appends that bring the store up to what the hypervisors show now.

    Raises:
        HypervisorError: a session did not answer (nothing is taken for gone).
    """
    return (await _changes(store, hypervisors, partial=False)).appends


async def sync_changes(store: Store, hypervisors: Hypervisors) -> Synced:
    """``changes`` of every session that answers: a session that does not leaves its zones
    as they were (nothing of them is taken for gone) and is named in ``unread``. Its zones
    are those it held at its last answer; for one never read (``Reading.unplaced``), every
    zone the store knows that no answering session holds."""
    return await _changes(store, hypervisors, partial=True)


@dataclass(frozen=True)
class Synced:
    """What a sync appends, and the sessions that did not answer and why ("" if none)."""

    appends: list[Append]
    unread: str = ""


async def _changes(store: Store, hypervisors: Hypervisors, *, partial: bool) -> Synced:
    # Only what the store knew before the hypervisors were read can be gone: a deploy
    # finished, a snapshot taken or an object imported meanwhile is simply not in this
    # reading yet. So deployed VMs count only if they were running before, and snapshots
    # and inventory objects only if they were recorded before.
    vms_before = await store.vms()
    running_before = {vm.id for vm in vms_before if _running(vm)}
    snapshots_before = {snapshot_id for found in (await store.vm_snapshots(
        [vm.id for vm in vms_before if not vm.ended])).values() for snapshot_id in found}
    objects_before = set(await store.inventory_objects())
    reading = await hypervisors.read()
    inventories = reading.inventories if partial else reading.whole()
    vm_names = {vm.name for _, inventory in inventories for vm in inventory.vms}
    vms = await store.vms()
    own_names = {vm.instance_name for vm in vms if vm.instance_name is not None}
    owners = {vm.id: vm.account_id for vm in vms if vm.imported}
    imported = [vm.id for vm in vms if vm.imported and not vm.ended]
    attached = await Repository(store).attached_disks(_disk_keys(inventories, imported))
    seen = [found for kind, inventory in inventories
            for found in observed(inventory, ADMIN_ACCOUNT_ID, own_names, owners,
                                  driver_kind=kind.name, attached=attached)]
    deployed = [vm for vm in vms if _running(vm) and vm.id in running_before]
    ids = [*imported, *(vm.id for vm in deployed)]
    volumes = await store.attached_volumes(ids)
    snapshots = {vm_id: [s for s in found if s in snapshots_before]
                 for vm_id, found in (await store.vm_snapshots(ids)).items()}
    objects = await store.inventory_objects()
    gone = {stream for stream, (_, _, is_gone) in objects.items() if is_gone}
    missing = vanished(
        seen, {vm_id: volumes.get(vm_id, []) for vm_id in imported},
        {snapshot_id: vm_id for vm_id in imported for snapshot_id in snapshots.get(vm_id, [])},
        {stream: (kind, object_id) for stream, (kind, object_id, is_gone) in objects.items()
         if not is_gone and stream in objects_before},
        deployed={vm.id: DeployedVm(vm.instance_name or "", volumes.get(vm.id, []),
                                    snapshots.get(vm.id, [])) for vm in deployed},
        vm_names=vm_names)
    unread_zones = set(reading.unread_zones)
    if reading.unplaced:
        read_zones = {zone_id(inventory.datacenter_ref) for _, inventory in inventories}
        unread_zones |= {object_id for kind, object_id, _ in objects.values()
                         if kind == "zone"} - read_zones
    if unread_zones:
        # Not read this time is not gone: only what the zones that were read no longer show.
        zones = await _zones_of(store, missing)
        missing = [(stream_id, event) for stream_id, event in missing
                   if zones[stream_id] not in unread_zones]
    out = []
    for stream_id, event in [*seen, *missing]:
        recorded = await store.read_stream(stream_id)
        kind = type(event)
        # Gone once, back now: imported again even if it looks as it did.
        before = None if stream_id in gone else next(
            (current_form(e.event()) for e in reversed(recorded) if e.type == kind.__name__),
            None)
        now: Event = msgspec.json.decode(msgspec.json.encode(event), type=kind)
        if before is not None and before == now:
            continue
        out.append(Append(stream_id, [now], recorded[-1].version if recorded else 0))
    return Synced(out, reading.unread_text())


async def _zones_of(store: Store, missing: list[tuple[str, Event]]) -> dict[str, str | None]:
    """The zone of each thing a sync found gone (by its stream): a zone's own id; else as
    the first event with a zone of its stream says (a snapshot's: its VM's), every stream
    read in one query; None if none does."""
    zones: dict[str, str | None] = {}
    sources: dict[str, str] = {}  # the stream that tells each one's zone
    for stream_id, event in missing:
        if isinstance(event, InventoryObjectGone) and event.kind == "zone":
            zones[stream_id] = event.object_id
        else:
            sources[stream_id] = streams.vm(event.vm_id) \
                if isinstance(event, VmSnapshotDeleted) else stream_id
    read = await store.read_streams(sorted(set(sources.values())))
    for stream_id, source in sources.items():
        zones[stream_id] = next((zone for r in read[source] if isinstance(
            zone := getattr(r.event(), "zone_id", None), str)), None)
    return zones


def describe(appends: list[Append]) -> str:
    counts: dict[str, int] = {}
    for append in appends:
        for event in append.events:
            counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
    return ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "no changes"


async def sync(store: Store, hypervisors: Hypervisors) -> str:
    """Sync now, appending in one transaction; returns what changed (``sync_changes``: a
    session that does not answer is named, and the zones that may be its left be)."""
    synced = await sync_changes(store, hypervisors)
    await store.commit(synced.appends,
                       Metadata(correlation_id="inventory-sync", actor="planner"))
    summary = describe(synced.appends)
    if synced.unread:
        log.warning("inventory sync: %s; %s: their zones were left as they were", summary,
                    synced.unread)
        return f"{summary}; {synced.unread}"
    log.info("inventory sync: %s", summary)
    return summary
