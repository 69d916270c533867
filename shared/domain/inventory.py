"""What an inventory sync records: the events that describe the hypervisors (vCenter's
datacenters, KVM zones) as snapdeploy sees them.

Ids are derived from the hypervisor's own object ids, so syncing twice finds the same
objects; the planner appends only what changed since the last sync. Refs are unique
across hypervisors (``object_id``: a further vCenter's are scoped by its name), so
are ids. A zone's id is derived
from its datacenter's ref (``zone_id``); its import records the driver kind of the
hypervisor that holds it.

A disk's volume id is derived from its VM's id and its key too, unless the disk is a volume
snapdeploy attached (made through the API, or moved from another VM): that disk is named by
its volume's own id, wherever a VM's or a VM snapshot's disks are recorded (``disks_of``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from proto import streams
from proto.events import (
    LEGACY_DRIVER_KIND,
    Disk,
    Event,
    HostImported,
    InventoryObjectGone,
    NetworkImported,
    Nic,
    PoolImported,
    VmExpunged,
    VmImported,
    VmSnapshotDeleted,
    VmSnapshotRequested,
    VmSnapshotTaken,
    ZoneImported,
    legacy_key,
)
from proto.streams import stable_id
from shared.domain.seed import SEED_PREFIX
from shared.domain.vm import nic_id, volume_id
from shared.drivers.base import DiskInfo, Inventory, NicInfo, SnapshotInfo


def object_id(kind: str, ref: str) -> str:
    """The id of a hypervisor's object of ``kind`` ("zone", "host", "pool", "network",
    "vm", "snapshot") that the hypervisor calls ``ref``.

    Refs are unique across every session of a process: several vCenters hand out the same
    managed object ids, so the session of a further vCenter (``Settings.vcenters``)
    reports its refs scoped by its name ("east/host-21", ``vmware.scoped``) and its
    objects get ids of their own. The vCenter of ``vcenter_url`` reports vCenter's refs
    unchanged: its objects keep the ids they were imported with before there could be
    several vCenters (an existing install's zones, hosts, VMs and volumes stay what they
    are)."""
    return stable_id(kind, ref)


def zone_id(datacenter_ref: str) -> str:
    """The id snapdeploy gives the zone of a datacenter (``Inventory.datacenter_ref``)."""
    return object_id("zone", datacenter_ref)


def disks_of(vm_id: str, disks: list[DiskInfo],
             attached: Mapping[str, str] | None = None) -> list[Disk]:
    """The disks of a VM (or of its snapshot), the first its root. ``attached``: {disk key →
    volume id} of the volumes attached to the VM (``Repository.attached_disks``); a disk of
    such a key is that volume, any other is named by the id its VM and key derive."""
    named = attached or {}
    return [Disk(volume_id=named.get(d.key) or volume_id(vm_id, d.key),
                 device_key=legacy_key(d.key), key=d.key, path=d.path,
                 pool_id=object_id("pool", d.pool_ref), size_bytes=d.size_bytes, root=i == 0)
            for i, d in enumerate(disks)]


def nics_of(vm_id: str, nics: list[NicInfo]) -> list[Nic]:
    return [Nic(nic_id=nic_id(vm_id, n.key), network_id=object_id("network", n.network_ref),
                mac=n.mac, device_key=legacy_key(n.key), key=n.key) for n in nics]


def current_form(event: Event) -> Event:
    """An inventory event as a sync records it now, so that one recorded before disk and NIC
    keys were the driver's strings (``device_key`` alone), before network bindings were
    opaque (vSphere's ``switch_uuid`` and ``portgroup_key``) or before zones named their
    driver kind (all were vCenter's) equals the same observation made now, and a sync after
    the change finds nothing new."""
    match event:
        case ZoneImported(driver_kind=None):
            return msgspec.structs.replace(event, driver_kind=LEGACY_DRIVER_KIND)
        case NetworkImported(binding=None) if event.switch_uuid or event.portgroup_key:
            return msgspec.structs.replace(event, binding=event.network_binding(),
                                           switch_uuid=None, portgroup_key=None)
        case VmImported() | VmSnapshotTaken():
            return msgspec.structs.replace(
                event, disks=[d if d.key is not None else msgspec.structs.replace(
                    d, key=d.disk_key) for d in event.disks],
                nics=[n if n.key is not None else msgspec.structs.replace(
                    n, key=n.nic_key) for n in event.nics])
    return event


SNAPSHOT_TAG = re.compile(r"\[snapdeploy ([0-9a-f-]{36})\]")


def snapshot_description(description: str, snapshot_id: str) -> str:
    """The description a snapshot taken through snapdeploy carries in vCenter: the id in
    it lets a later sync recognise the snapshot instead of importing it twice."""
    return f"{description} [snapdeploy {snapshot_id}]".strip()


def snapshot_id_of(ref: str, description: str) -> str:
    tagged = SNAPSHOT_TAG.search(description)
    return tagged.group(1) if tagged else object_id("snapshot", ref)


def snapshot_taken(request: VmSnapshotRequested, account_id: str, info: SnapshotInfo,
                   parent_id: str | None,
                   attached: Mapping[str, str] | None = None) -> VmSnapshotTaken:
    """A snapshot taken through snapdeploy, as the hypervisor describes it. ``parent_id``
    is the snapshot snapdeploy knows by the parent's ref (None: derived from the ref, as an
    import would); ``attached`` names the volumes attached to the VM by their disk keys
    (``disks_of``)."""
    parent = parent_id or (object_id("snapshot", info.parent_ref) if info.parent_ref else None)
    return VmSnapshotTaken(
        snapshot_id=request.snapshot_id, vm_id=request.vm_id, account_id=account_id,
        name=request.name, description=request.description, ref=info.ref, parent_id=parent,
        created=info.created, memory=info.memory, cpu_number=info.cpu_number,
        memory_mb=info.memory_mb, disks=disks_of(request.vm_id, info.disks, attached),
        nics=nics_of(request.vm_id, info.nics), current=True)


def observed(inv: Inventory, account_id: str, own_vm_names: set[str],
             owners: dict[str, str] | None = None, *,
             driver_kind: str = LEGACY_DRIVER_KIND,
             attached: Mapping[str, Mapping[str, str]] | None = None,
             ) -> list[tuple[str, Event]]:
    """(stream id, event) for every object in ``inv``, read from a hypervisor of the driver
    kind ``driver_kind``. VMs named in ``own_vm_names`` (the VMs snapdeploy deploys) and
    templates, seeded ones included, are not imported. A VM's snapshots belong to its
    owner in ``owners`` (VM id → account), else to ``account_id``.

    ``attached`` maps a VM's id to {disk key → volume id} of the volumes snapdeploy
    attached to it (``Repository.attached_disks``): its snapshots name those disks by the
    volumes' ids, and its import leaves them out: an import describes the disks the sync
    finds, and each makes a volume of the VM's (its name, its owner, its origin), while
    these are volumes of their own already."""
    zone_id = object_id("zone", inv.datacenter_ref)
    out: list[tuple[str, Event]] = [
        (streams.zone(zone_id), ZoneImported(zone_id=zone_id, name=inv.datacenter_name,
                                             ref=inv.datacenter_ref,
                                             driver_kind=driver_kind))]
    for h in inv.hosts:
        host_id = object_id("host", h.ref)
        out.append((streams.host(host_id), HostImported(
            host_id=host_id, zone_id=zone_id, name=h.name, ref=h.ref, cluster=h.cluster,
            cpu_cores=h.cpu_cores, cpu_mhz=h.cpu_mhz, memory_bytes=h.memory_bytes,
            pool_ids=[object_id("pool", p) for p in h.pool_refs])))
    for p in inv.pools:
        pool_id = object_id("pool", p.ref)
        out.append((streams.pool(pool_id), PoolImported(
            pool_id=pool_id, zone_id=zone_id, name=p.name, ref=p.ref, url=p.url,
            capacity_bytes=p.capacity_bytes, free_bytes=p.free_bytes,
            host_ids=[object_id("host", h) for h in p.host_refs])))
    for n in inv.networks:
        network_id = object_id("network", n.ref)
        out.append((streams.network(network_id), NetworkImported(
            network_id=network_id, zone_id=zone_id, name=n.name, ref=n.ref,
            binding=n.binding)))
    for vm in inv.vms:
        if vm.template or vm.name in own_vm_names or vm.name.startswith(SEED_PREFIX) \
                or not vm.disks:
            continue
        vm_id = object_id("vm", vm.ref)
        owner = (owners or {}).get(vm_id, account_id)
        volumes = (attached or {}).get(vm_id, {})
        out.append((streams.vm(vm_id), VmImported(
            vm_id=vm_id, zone_id=zone_id, account_id=account_id, name=vm.name, ref=vm.ref,
            host_id=object_id("host", vm.host_ref or ""), cpu_number=vm.cpu_number,
            memory_mb=vm.memory_mb, powered_on=vm.powered_on,
            disks=[d for d in disks_of(vm_id, vm.disks) if d.key not in volumes],
            nics=nics_of(vm_id, vm.nics))))
        ids = {s.ref: snapshot_id_of(s.ref, s.description) for s in vm.snapshots}
        for snap in vm.snapshots:
            snapshot_id = ids[snap.ref]
            out.append((streams.vm_snapshot(snapshot_id), VmSnapshotTaken(
                snapshot_id=snapshot_id, vm_id=vm_id, account_id=owner, name=snap.name,
                description=snap.description, ref=snap.ref,
                parent_id=ids.get(snap.parent_ref) if snap.parent_ref else None,
                created=snap.created, memory=snap.memory, cpu_number=snap.cpu_number,
                memory_mb=snap.memory_mb, disks=disks_of(vm_id, snap.disks, volumes),
                nics=nics_of(vm_id, snap.nics), current=snap.ref == vm.current_snapshot_ref)))
    return out


@dataclass(frozen=True)
class DeployedVm:
    """A VM snapdeploy deployed, started and not expunged, as the store knows it."""

    instance_name: str
    volume_ids: list[str] = field(default_factory=list)
    snapshot_ids: list[str] = field(default_factory=list)  # its snapshots not deleted


def vanished(seen: Sequence[tuple[str, Event]], imported: dict[str, list[str]],
             snapshots: dict[str, str],
             objects: dict[str, tuple[str, str]] | None = None, *,
             deployed: Mapping[str, DeployedVm] | None = None,
             vm_names: Collection[str] = ()) -> list[tuple[str, Event]]:
    """(stream id, event) for what vCenter no longer shows of what snapdeploy knows.

    ``imported`` maps each imported VM not yet gone to its volume ids; ``snapshots`` maps
    each snapshot of those VMs not yet deleted to its VM; ``objects`` maps the stream of
    each zone, host, pool and network not yet gone to its (kind, id); ``deployed`` maps
    each VM snapdeploy deployed to what the store knows of it, and ``vm_names`` are the
    names of every VM and template vCenter shows now.

    A VM gone is expunged with its volumes, imported or deployed alike (its disks went with
    it in vCenter, so there is nothing left to start again); a snapshot gone, or whose VM is
    gone, is deleted; any other object gone is marked so (no longer listed, placed on or
    deployed to). A deployed VM is found by its instance name, the name snapdeploy gave it
    in vCenter, not by its object id: a vCenter that restarted with a fresh inventory hands
    out the same ids again to other VMs. The snapshots of a deployed VM that is still there
    are left alone (``seen`` does not describe deployed VMs).
    """
    present = {stream for stream, _ in seen}
    out: list[tuple[str, Event]] = [
        (stream, InventoryObjectGone(kind=kind, object_id=object_id))
        for stream, (kind, object_id) in sorted((objects or {}).items())
        if stream not in present]
    for snapshot_id, vm_id in sorted(snapshots.items()):
        if streams.vm_snapshot(snapshot_id) not in present:
            out.append((streams.vm_snapshot(snapshot_id),
                        VmSnapshotDeleted(snapshot_id=snapshot_id, vm_id=vm_id)))
    for vm_id, volume_ids in sorted(imported.items()):
        if streams.vm(vm_id) not in present:
            out.append((streams.vm(vm_id), VmExpunged(vm_id=vm_id, volume_ids=volume_ids)))
    names = set(vm_names)
    for vm_id, vm in sorted((deployed or {}).items()):
        if vm.instance_name in names:
            continue
        out += [(streams.vm_snapshot(snapshot_id),
                 VmSnapshotDeleted(snapshot_id=snapshot_id, vm_id=vm_id))
                for snapshot_id in sorted(vm.snapshot_ids)]
        out.append((streams.vm(vm_id),
                    VmExpunged(vm_id=vm_id, volume_ids=sorted(vm.volume_ids))))
    return out
