"""Aggregates loaded from their streams, for handlers that decide on the write side."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence

from proto import streams
from proto.events import (
    LEGACY_DRIVER_KIND,
    AnyEvent,
    VmDeployRequested,
    VmImported,
    ZoneImported,
)
from shared.domain import accounts as _accounts
from shared.domain import capacity as _capacity
from shared.domain import created
from shared.domain import limits as _limits
from shared.domain import network as _network
from shared.domain import offerings as _offerings
from shared.domain import pool as _pool
from shared.domain import seed as _seed
from shared.domain import vm as _vm
from shared.domain import vmsnapshot as _vmsnapshot
from shared.domain import volume as _volume
from shared.domain.deploy import (
    DeployInputs,
    OfferingView,
    SnapshotView,
    TemplateView,
)
from shared.eventstore._store import RecordedEvent, Store


async def _none() -> None:
    return None


class SnapshotStreams:
    """The streams a deploy from a VM snapshot reads besides the snapshot's own, as learnt
    from each snapshot: its VM's and its root volume's. They are facts the snapshot was
    taken with, so a later deploy from it reads them with the snapshot's stream, in one
    round trip to the store where there were two; what it read is checked against the
    snapshot as read then, and what does not match is read again. The ``size`` snapshots
    deployed from last are kept."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._known: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def get(self, snapshot_id: str) -> tuple[str, str | None] | None:
        """The snapshot's VM and root volume (None for no root volume), if learnt."""
        known = self._known.get(snapshot_id)
        if known is not None:
            self._known.move_to_end(snapshot_id)
        return known

    def learn(self, snapshot_id: str, vm_id: str, root_volume_id: str | None) -> None:
        self._known[snapshot_id] = (vm_id, root_volume_id)
        self._known.move_to_end(snapshot_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)


def _of_snapshot(vm_id: str, root_volume_id: str | None) -> list[str]:
    """The streams a deploy from a snapshot of VM ``vm_id`` reads besides the snapshot's."""
    return [streams.vm(vm_id), *([streams.volume(root_volume_id)] if root_volume_id else [])]


class Repository:
    """Loads each aggregate by folding its stream (``shared.domain``), never from the read
    models, so a decision sees every event committed before it started."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def events(self, stream_id: str, up_to: int | None = None) -> list[AnyEvent]:
        """A stream's events, oldest first; with ``up_to``, only those up to that version
        (the state as a handled event left it)."""
        return [e.event() for e in await self.store.read_stream(stream_id)
                if up_to is None or e.version <= up_to]

    async def deploy_request(self, vm_id: str) -> VmDeployRequested | None:
        """The request a VM's stream starts with (None for an imported VM)."""
        return _vm.deploy_request((await self.events(streams.vm(vm_id)))[:1])

    async def source_snapshot(self, vm_id: str) -> str | None:
        """The VM snapshot a deployed VM's disk comes from: the one it was deployed from, or
        the one its seeded template was seeded from (None for an imported VM, or one
        deployed from a template snapdeploy did not seed)."""
        request = await self.deploy_request(vm_id)
        if request is None:
            return None
        if request.vm_snapshot_id is not None:
            return request.vm_snapshot_id
        seeded = await self.store.template_seed(request.template_id) \
            if request.template_id else None
        return seeded[0] if seeded else None

    async def seed(self, vm_snapshot_id: str, pool_id: str,
                   up_to: int | None = None) -> _seed.Seed:
        return _seed.fold(await self.events(streams.seed(vm_snapshot_id, pool_id), up_to))

    async def vm(self, vm_id: str) -> _vm.Vm:
        return _vm.fold(vm_id, await self.events(streams.vm(vm_id)))

    async def host(self, host_id: str, *, reservations: bool = True) -> _capacity.Host:
        """The host as the store keeps it (``Store.host``), its stream not folded: a busy
        host's stream holds a reservation and a release per VM ever placed on it."""
        return await self.store.host(host_id, reservations=reservations)

    async def pool(self, pool_id: str) -> _pool.Pool:
        return _pool.fold(pool_id, await self.events(streams.pool(pool_id)))

    async def clone_targets(self, pool_id: str, host_id: str, network_ids: Sequence[str]
                            ) -> tuple[_pool.Pool, _capacity.Host, list[_network.Network]]:
        """The pool, the host and the networks a clone lands on, read at once
        (``Store.clone_targets``): the host without its reservations and the networks
        without their addresses (all a clone needs is their refs and bindings)."""
        pool, host, networks = await self.store.clone_targets(streams.pool(pool_id), host_id,
                                                              network_ids)
        return _pool.fold(pool_id, [e.event() for e in pool]), host, networks

    async def network(self, network_id: str, *, addresses: bool = True) -> _network.Network:
        """The network as the store keeps it (``Store.network``), its stream not folded: a
        busy network's stream holds an allocation per VM ever deployed on it."""
        return await self.store.network(network_id, addresses=addresses)

    async def vm_snapshot(self, snapshot_id: str) -> _vmsnapshot.VmSnapshot:
        return _vmsnapshot.fold(await self.events(streams.vm_snapshot(snapshot_id)))

    async def volume(self, volume_id: str) -> _volume.Volume:
        """The volume from its stream; for a disk of an imported VM, starting from the
        latest import of the VM that describes it (``Store.volume_origin``)."""
        origin = await self.store.volume_origin(volume_id)
        # The importing VM's stream and the volume's own, in one read.
        wanted = [streams.volume(volume_id)]
        if origin is not None:
            wanted.append(streams.vm(origin))
        return _volume_of(volume_id, origin, await self.store.read_streams(wanted))

    async def attached_disks(
            self, disk_keys: Mapping[str, Collection[str]]) -> dict[str, dict[str, str]]:
        """For each VM of ``disk_keys`` (its id → the keys of the disks the hypervisor shows
        on it), {disk key → volume id} of the volumes attached to it now that are not named
        by the id its key derives (``shared.domain.vm.volume_id``): those made through the
        API, or moved from another VM. A VM with none is left out.

        Only those volumes are folded: ``Store.attached_volumes`` names every volume
        attached, and one whose id is derived from the VM and a key it shows is that disk
        already (an imported disk, a deployed VM's root volume)."""
        out: dict[str, dict[str, str]] = {}
        for vm_id, volume_ids in (await self.store.attached_volumes(list(disk_keys))).items():
            derived = {_vm.volume_id(vm_id, key) for key in disk_keys[vm_id]}
            keys = _volume.attached_keys(vm_id, [await self.volume(volume_id)
                                                 for volume_id in volume_ids
                                                 if volume_id not in derived])
            if keys:
                out[vm_id] = keys
        return out

    async def vm_snapshot_owner(self, snapshot_id: str) -> str | None:
        """The account a VM snapshot belongs to now (``shared.domain.vmsnapshot.owner``)."""
        own, vm_records = await self._vm_snapshot_records(snapshot_id)
        return _vmsnapshot.owner(snapshot_id, (
            e.event() for e in sorted([*own, *vm_records], key=lambda e: e.position)))

    async def _vm_snapshot_records(
            self, snapshot_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
        """A VM snapshot's stream and its VM's ([] for the VM if it was never taken)."""
        own = await self.store.read_stream(streams.vm_snapshot(snapshot_id))
        taken = _vmsnapshot.fold(e.event() for e in own).taken
        if taken is None:
            return own, []
        return own, await self.store.read_stream(streams.vm(taken.vm_id))

    async def snapshot_source(self, snapshot_id: str) -> SnapshotView | None:
        """A VM snapshot not deleted, as a deploy or a seed starts from it: its owner, its
        VM's zone and template, its configuration, its root disk's pool and offering."""
        return await self._snapshot_source(
            snapshot_id, await self.store.read_stream(streams.vm_snapshot(snapshot_id)))

    async def _snapshot_source(
            self, snapshot_id: str, own: list[RecordedEvent],
            ahead: Mapping[str, list[RecordedEvent]] = {},
            origins: Mapping[str, str | None] = {},
            known: SnapshotStreams | None = None) -> SnapshotView | None:
        """``snapshot_source``, from the snapshot's stream ``own`` read already, and the
        streams and volume origins read with it (``ahead``, ``origins``: those
        ``SnapshotStreams`` knew of), which it learns in ``known``."""
        taken = _vmsnapshot.fold(e.event() for e in own).live
        if taken is None:
            return None
        root = next((d for d in taken.disks if d.root), None)
        volume_id = root.volume_id if root is not None else None
        if known is not None:
            known.learn(snapshot_id, taken.vm_id, volume_id)
        # The VM's stream and the root volume's in one read, beside the volume's origin
        # (most often that VM, whose stream is then read already); unless they were read
        # with the snapshot's.
        wanted = _of_snapshot(taken.vm_id, volume_id)
        read: dict[str, list[RecordedEvent]]
        origin: str | None
        if all(s in ahead for s in wanted) and (volume_id is None or volume_id in origins):
            read = {s: ahead[s] for s in wanted}
            origin = origins[volume_id] if volume_id is not None else None
        else:
            read, origin = await asyncio.gather(
                self.store.read_streams(wanted),
                self.store.volume_origin(volume_id) if volume_id is not None else _none())
        if origin is not None and streams.vm(origin) not in read:
            read.update(await self.store.read_streams([streams.vm(origin)]))
        vm_records = read[streams.vm(taken.vm_id)]
        root_volume = _volume_of(root.volume_id, origin, read) if root is not None else None
        vm = _vm.fold(taken.vm_id, (e.event() for e in vm_records))
        owner = _vmsnapshot.owner(snapshot_id, (
            e.event() for e in sorted([*own, *vm_records], key=lambda e: e.position)))
        disk_offering = root_volume.disk_offering_id if root_volume is not None else None
        return SnapshotView(
            id=snapshot_id, vm_id=taken.vm_id, account_id=owner, zone_id=vm.zone_id or "",
            cpu_number=taken.cpu_number, memory_mb=taken.memory_mb,
            root_pool_id=root.pool_id if root else None, root_template_id=vm.template_id,
            root_disk_offering_id=disk_offering,
            network_ids=[n.network_id for n in taken.nics])

    async def template_source(self, template_id: str) -> TemplateView | None:
        """A seeded template not removed: its snapshot's owner, its pool's zone ("" if the
        pool is gone)."""
        seeded = await self.store.template_seed(template_id)
        if seeded is None:
            return None
        snapshot_id, pool_id = seeded
        if (await self.seed(snapshot_id, pool_id)).status != _seed.READY:
            return None
        pool = (await self.pool(pool_id)).live
        return TemplateView(template_id, await self.vm_snapshot_owner(snapshot_id),
                            pool.zone_id if pool else "", pool_id)

    async def service_offering(self, offering_id: str) -> OfferingView | None:
        return _offerings.service_offering(
            await self.events(streams.service_offering(offering_id)))

    async def disk_offering(self, offering_id: str) -> _offerings.DiskOfferingView | None:
        return _offerings.disk_offering(await self.events(streams.disk_offering(offering_id)))

    async def zone_kind(self, zone_id: str) -> str:
        """The driver kind of a zone, as its last import recorded it (a zone imported before
        kinds were recorded is a vCenter datacenter)."""
        imported = created(await self.events(streams.zone(zone_id)), ZoneImported)
        return imported.kind if imported else LEGACY_DRIVER_KIND

    async def zones(self) -> list[str]:
        """The ids of the zones an inventory sync imported and that are not gone, sorted."""
        return sorted(object_id for kind, object_id, gone
                      in (await self.store.inventory_objects()).values()
                      if kind == "zone" and not gone)

    async def account(self, account_id: str) -> _accounts.Account | None:
        return _accounts.account(await self.events(streams.account(account_id)))

    async def user(self, user_id: str) -> _accounts.User | None:
        return _accounts.user(await self.events(streams.user(user_id)))

    async def account_limits(self, account_id: str) -> dict[str, int]:
        """The resource limits set for an account (``shared.domain.limits``)."""
        return _limits.account_limits(await self.events(streams.account(account_id)))

    async def deploy_inputs(self, *, snapshot_id: str | None, template_id: str | None,
                            offering_id: str, host_id: str | None,
                            network_ids: Sequence[str] = (),
                            known: SnapshotStreams | None = None) -> DeployInputs:
        """What a deploy request names, from the store alone: the snapshot or template,
        the offering, the host (placeable: imported and not gone, with its capacity) and
        the networks not gone: those of ``network_ids`` if it names any, else all (the
        source's own or the zone's default are then chosen from them). With ``known``, a
        snapshot deployed from before has all its streams read at once."""
        # One query: the offering's stream and the snapshot's (with those of its VM and root
        # volume when they are known; else they follow), the networks named (or every
        # inventory object) and the root volume's origin; a requested host and a template's
        # seed beside it.
        wanted = [streams.service_offering(offering_id)]
        ahead = known.get(snapshot_id) if known is not None and snapshot_id else None
        if snapshot_id:
            wanted.append(streams.vm_snapshot(snapshot_id))
        if ahead is not None:
            wanted += _of_snapshot(*ahead)
        hosts, template, (read, objects, origin) = await asyncio.gather(
            self.store.hosts() if host_id is not None else _none(),
            self.template_source(template_id) if template_id else _none(),
            self.store.deploy_reads(wanted, [streams.network(n) for n in network_ids]
                                    if network_ids else None,
                                    ahead[1] if ahead is not None else None))
        offering = _offerings.service_offering(
            [e.event() for e in read[streams.service_offering(offering_id)]])
        snapshot = await self._snapshot_source(
            snapshot_id, read[streams.vm_snapshot(snapshot_id)], read,
            {ahead[1]: origin} if ahead is not None and ahead[1] else {},
            known) if snapshot_id else None
        host = next((h for h in hosts or [] if h.id == host_id), None)
        networks = {object_id for kind, object_id, gone in objects.values()
                    if kind == "network" and not gone}
        return DeployInputs(
            snapshot=snapshot, template=template, offering=offering, host=host,
            known_networks=networks)


class HeldNetworks:
    """The networks one decider allocates addresses on, held in memory between its reads.

    Each read brings the held network up to date from the events appended to its stream
    since (most often none, or those another copy of the decider appended), where
    ``Store.network`` reads every address held on it: one per VM deployed on it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: dict[str, _network.Network] = {}

    async def network(self, network_id: str) -> _network.Network:
        """The network as of its stream's last committed append (see ``Store.network``)."""
        held = self._held.get(network_id)
        if held is None:
            found = await self.store.network(network_id)
            self._held[network_id] = found
            return found
        return self.moved_on(network_id, await self.store.read_stream(
            streams.network(network_id), held.version + 1))

    def unread(self, network_ids: Collection[str]) -> dict[str, int]:
        """The version from which each of ``network_ids`` held is read again (the one after
        its held version), by its stream: ``moved_on`` takes what was read."""
        return {streams.network(n): self._held[n].version + 1
                for n in network_ids if n in self._held}

    def moved_on(self, network_id: str, new: Sequence[RecordedEvent]) -> _network.Network:
        """The network held, moved on by the events appended to its stream since (read
        from the version ``unread`` gave; those another read moved it past meanwhile are
        skipped)."""
        held = self._held[network_id]
        new = [e for e in new if e.version > held.version]
        found = _network.fold(network_id, (e.event() for e in new), held) if new else held
        self._held[network_id] = found
        return found


def _volume_of(volume_id: str, origin: str | None,
               read: Mapping[str, list[RecordedEvent]]) -> _volume.Volume:
    """The volume from its stream in ``read``, starting from the latest import that
    describes it of its ``origin`` VM (whose stream ``read`` holds too)."""
    imports = read[streams.vm(origin)] if origin is not None else []
    described = [e for e in (r.event() for r in imports) if isinstance(e, VmImported)
                 and any(d.volume_id == volume_id for d in e.disks)]
    start = _volume.imported(volume_id, described[-1]) if described else None
    return _volume.fold(volume_id, [e.event() for e in read[streams.volume(volume_id)]], start)
