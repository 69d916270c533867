from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import msgspec

from proto import streams
from proto.envelope import Metadata
from proto.events import (
    AccountCreated,
    AddressesAllocated,
    AnyEvent,
    Event,
    HostImported,
    InventoryObjectGone,
    NetworkImported,
    PoolImported,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedStarted,
    UserCreated,
    VmAssigned,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyRequested,
    VmExpunged,
    VmImported,
    VmReverted,
    VmServiceChanged,
    VmSnapshotDeleted,
    VmSnapshotTaken,
    VmStarted,
    VolumeAllocated,
    VolumeAttached,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
    ZoneImported,
)
from shared.domain import capacity
from shared.domain import network as _network
from shared.domain.deploy import HostView
from shared.domain.limits import Usage
from shared.domain.vm import VmState, state_after
from shared.eventstore._group import Group, Outcome
from shared.eventstore._store import (
    ANY_VERSION,
    Append,
    ConcurrencyError,
    Holding,
    NameTaken,
    NewEvent,
    RecordedEvent,
    VmEntry,
)

_encoder = msgspec.json.Encoder()


@dataclass
class _Volume:
    imported_with: str | None = None
    vm_id: str | None = None
    live: bool = True


@dataclass
class _Lookups:
    """The lookups of migration 0008, folded from every event in order by the same rules
    as its trigger."""

    vms: dict[str, VmEntry] = field(default_factory=dict)
    volumes: dict[str, _Volume] = field(default_factory=dict)
    snapshots: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # vm, ref, live
    objects: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    def apply(self, recorded: RecordedEvent) -> None:
        event = recorded.event()
        if recorded.stream_id.startswith("vm-"):
            self._vm(recorded.stream_id.removeprefix("vm-"), event)
        match event:
            case VolumeCreated():
                volume = self.volumes.setdefault(event.volume_id, _Volume())
                volume.vm_id, volume.live = event.vm_id, True
            case VolumeAttached():
                self.volumes.setdefault(event.volume_id, _Volume()).vm_id = event.vm_id
            case VolumeDetached() if event.volume_id in self.volumes:
                self.volumes[event.volume_id].vm_id = None
            case VolumeDeleted() if event.volume_id in self.volumes:
                self.volumes[event.volume_id].live = False
            case VmSnapshotTaken():
                self.snapshots[event.snapshot_id] = (event.vm_id, event.ref, True)
            case VmSnapshotDeleted() if event.snapshot_id in self.snapshots:
                vm_id, ref, _ = self.snapshots[event.snapshot_id]
                self.snapshots[event.snapshot_id] = (vm_id, ref, False)
            case ZoneImported() | HostImported() | PoolImported() | NetworkImported():
                kind = type(event).__name__.removesuffix("Imported").lower()
                self.objects[recorded.stream_id] = (kind, getattr(event, f"{kind}_id"), False)
            case InventoryObjectGone():
                kind, object_id, _ = self.objects.get(recorded.stream_id,
                                                      (event.kind, event.object_id, True))
                self.objects[recorded.stream_id] = (kind, object_id, True)

    def _vm(self, vm_id: str, event: AnyEvent) -> None:
        entry = self.vms.get(vm_id)
        if entry is not None:
            entry = replace(entry, destroying=isinstance(event, VmDestroyRequested))
        match event:
            case VmDeployRequested() if entry is None:
                entry = VmEntry(vm_id, event.instance_name, False, event.account_id, False,
                                False, False)
            case VmImported():
                entry = replace(entry, imported=True, ended=False) if entry else VmEntry(
                    vm_id, None, True, event.account_id, False, False, False)
                for disk in event.disks:
                    self.volumes[disk.volume_id] = _Volume(vm_id, vm_id, True)
            case VmStarted() if entry is not None:
                entry = replace(entry, started=True)
            case VmExpunged() | VmDeployFailed() if entry is not None:
                entry = replace(entry, ended=True)
            case VmAssigned() if entry is not None:
                entry = replace(entry, account_id=event.account_id)
        match event:
            case VmExpunged():
                for volume_id in event.volume_ids:
                    if volume_id in self.volumes:
                        self.volumes[volume_id].live = False
        if entry is not None:
            self.vms[vm_id] = entry


_NOT_HELD: dict[str, set[str]] = {"vm": {VmState.ERROR, VmState.DESTROYED, VmState.EXPUNGING},
             "volume": {"Error", "Destroy", "Expunged"}, "template": set()}


@dataclass
class _Held:
    account_id: str = ""
    state: str = ""
    cpu_number: int = 0
    memory_mb: int = 0
    vm_snapshot_id: str | None = None
    pool_id: str | None = None
    gone: bool = False


@dataclass
class _Holdings:
    """The ``account_holdings`` of migration 0009, folded from every event in order by the
    same rules as its trigger."""

    rows: dict[tuple[str, str], _Held] = field(default_factory=dict)

    def _row(self, kind: str, obj_id: str, account_id: str = "", state: str = "") -> _Held:
        return self.rows.setdefault((kind, obj_id), _Held(account_id, state))

    def apply(self, recorded: RecordedEvent) -> None:
        event = recorded.event()
        if recorded.stream_id.startswith("vm-"):
            self._vm(recorded.stream_id.removeprefix("vm-"), event)
        match event:
            case (VolumeFromSnapshotRequested() | VolumeAllocated() | VolumeCreated()
                  | VolumeDeleteRequested() | VolumeDeleted() | VolumeFailed()):
                volume = self._row("volume", event.volume_id, state="Ready")
                match event:
                    case VolumeFromSnapshotRequested() | VolumeAllocated():
                        volume.account_id, volume.state = event.account_id, "Allocated"
                    case VolumeCreated():
                        volume.account_id, volume.state = event.account_id, "Ready"
                    case VolumeDeleteRequested():
                        volume.state = "Destroy"
                    case VolumeDeleted():
                        volume.state, volume.gone = "Expunged", True
                    case VolumeFailed():
                        volume.state = "Error"
            case VmSnapshotTaken():
                self._row("vmsnapshot", event.snapshot_id).account_id = event.account_id
            case TemplateSeeded():
                template = self._row("template", event.template_id)
                template.vm_snapshot_id, template.pool_id = event.vm_snapshot_id, event.pool_id
                template.gone = False
            case TemplateRemoved():
                for (kind, _), row in self.rows.items():
                    if kind == "template" and (row.vm_snapshot_id, row.pool_id) == (
                            event.vm_snapshot_id, event.pool_id):
                        row.gone = True

    def _vm(self, vm_id: str, event: AnyEvent) -> None:
        match event:
            case VmDeployRequested():
                self.rows["vm", vm_id] = _Held(event.account_id, VmState.STARTING,
                                               event.cpu_number, event.memory_mb)
            case VmImported():
                vm = self._row("vm", vm_id, account_id=event.account_id)
                vm.cpu_number, vm.memory_mb, vm.gone = event.cpu_number, event.memory_mb, False
                vm.state = VmState.RUNNING if event.powered_on else VmState.STOPPED
                for disk in event.disks:
                    self._row("volume", disk.volume_id, state="Ready").account_id = \
                        event.account_id
            case VmAssigned():
                if ("vm", vm_id) in self.rows:
                    self.rows["vm", vm_id].account_id = event.account_id
                for volume_id in event.volume_ids:
                    self._row("volume", volume_id, state="Ready").account_id = event.account_id
                for snapshot_id in event.snapshot_ids:
                    self._row("vmsnapshot", snapshot_id).account_id = event.account_id
            case VmServiceChanged() if ("vm", vm_id) in self.rows:
                vm = self.rows["vm", vm_id]
                vm.cpu_number, vm.memory_mb = event.cpu_number, event.memory_mb
            case VmExpunged():
                if ("vm", vm_id) in self.rows:
                    self.rows["vm", vm_id].gone = True
                for volume_id in event.volume_ids:
                    volume = self._row("volume", volume_id)
                    volume.state, volume.gone = "Destroy", True
        state = state_after(event)
        if isinstance(event, VmReverted):
            state = VmState.RUNNING if event.powered_on else VmState.STOPPED
        if state is not None and ("vm", vm_id) in self.rows:
            self.rows["vm", vm_id].state = state

    def held(self, kind: str, account_id: str) -> list[_Held]:
        return [row for (of, _), row in sorted(self.rows.items())
                if of == kind and row.account_id == account_id and not row.gone
                and row.state not in _NOT_HELD[kind]]

    def usage(self, account_id: str) -> Usage:
        vms = self.held("vm", account_id)
        snapshots = {obj_id for (kind, obj_id), row in self.rows.items()
                     if kind == "vmsnapshot" and row.account_id == account_id}
        templates = [row for (kind, _), row in self.rows.items()
                     if kind == "template" and not row.gone and row.vm_snapshot_id in snapshots]
        starting = [vm for vm in vms if vm.state == VmState.STARTING]
        return Usage(user_vm=len(vms), volume=len(self.held("volume", account_id)) + len(starting),
                     template=len(templates), cpu=sum(vm.cpu_number for vm in vms),
                     memory=sum(vm.memory_mb for vm in vms))


def _named(event: object) -> tuple[str, str, tuple[str, str]] | None:
    """(kind, lowercased name, (account id, its own id)) of an event that names an account
    or a user (the ``account_names`` of migration 0010)."""
    match event:
        case AccountCreated():
            return "account", event.name.lower(), (event.account_id, event.account_id)
        case UserCreated():
            return "user", event.username.lower(), (event.account_id, event.user_id)
    return None


class MemoryEventStore:
    """An event store in memory, for running handlers in process at unit speed.

    It keeps the promises of ``shared.eventstore.Store`` as PostgreSQL's ``EventStore``
    does: versions checked per stream, a commit all or nothing, the inbox, global order.
    Nothing is shared between instances and nothing survives the process.
    """

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[uuid.UUID, RecordedEvent] = {}
        self._inbox: set[tuple[str, str]] = set()
        self._lookups = _Lookups()
        self._holdings = _Holdings()
        # (kind, lowercased name) -> (account id, the account's or user's id)
        self._names: dict[tuple[str, str], tuple[str, str]] = {}
        self._decisions: dict[str, asyncio.Lock] = {}
        # network id -> the network as its stream tells it (migration 0016's tables)
        self._networks: dict[str, _network.Network] = {}

    async def append(self, stream_id: str, events: Sequence[NewEvent],
                     expected_version: int = ANY_VERSION) -> list[RecordedEvent]:
        self._check({stream_id: len(self._streams.get(stream_id, []))}, stream_id,
                    expected_version)
        self._check_addresses({}, stream_id, [e.data for e in events], expected_version)
        return self._write(stream_id, events)

    async def commit(self, appends: Sequence[Append], metadata: Metadata, *,
                     inbox: tuple[str, str] | None = None) -> int | None:
        if inbox is not None:
            inbox = (inbox[0], str(uuid.UUID(inbox[1])))
            if inbox in self._inbox:
                return None
        # Check every batch against the versions the earlier batches leave, and the names
        # they give accounts and users against those taken, then write.
        versions: dict[str, int] = {}
        names = dict(self._names)
        networks: dict[str, _network.Network] = {}
        for append in appends:
            for event in append.events:
                name = _named(event)
                if name is not None:
                    if name[:2] in names:
                        raise NameTaken(append.stream_id, name[1])
                    names[name[:2]] = name[2]
            current = versions.get(append.stream_id,
                                   len(self._streams.get(append.stream_id, [])))
            self._check({append.stream_id: current}, append.stream_id,
                        append.expected_version)
            self._check_addresses(networks, append.stream_id, append.events,
                                  append.expected_version)
            versions[append.stream_id] = current + len(append.events)
        if inbox is not None:
            self._inbox.add(inbox)
        last = 0
        for append in appends:
            recorded = self._write(append.stream_id,
                                   [NewEvent(e, metadata) for e in append.events])
            last = max([last, *(r.position for r in recorded)])
        return last

    async def commit_all(self, groups: Sequence[Group]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for group in groups:
            try:
                outcomes.append(await self.commit(group.appends, group.metadata,
                                                  inbox=group.inbox))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    @staticmethod
    def _check(versions: dict[str, int], stream_id: str, expected: int) -> None:
        actual = versions[stream_id]
        if expected != ANY_VERSION and actual != expected:
            raise ConcurrencyError(stream_id, expected, actual)

    def _check_addresses(self, pending: dict[str, _network.Network], stream_id: str,
                         events: Sequence[Event], expected: int) -> None:
        """Refuse an allocation of an address another VM holds on the network, as the key
        of ``network_addresses`` does (migration 0016); ``pending`` carries the networks
        as the commit's earlier batches leave them."""
        if not stream_id.startswith("network-"):
            return
        network_id = stream_id.removeprefix("network-")
        state = pending.get(network_id) or self._networks.get(network_id) \
            or _network.Network(network_id)
        for event in events:
            if isinstance(event, AddressesAllocated) and _network.clashes(state, event):
                raise ConcurrencyError(stream_id, expected, state.version)
            state = _network.evolve(state, event)
        pending[network_id] = state

    def _write(self, stream_id: str, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        stream = self._streams.setdefault(stream_id, [])
        out = []
        for new in events:
            recorded = RecordedEvent(
                position=len(self.events) + 1, event_id=new.event_id, stream_id=stream_id,
                version=len(stream) + 1, type=type(new.data).__name__, schema=new.data.SCHEMA,
                data=_encoder.encode(new.data), metadata=_encoder.encode(new.metadata),
                recorded_at=datetime.now(UTC),
            )
            self.events.append(recorded)
            stream.append(recorded)
            self._by_id[recorded.event_id] = recorded
            self._lookups.apply(recorded)
            name = _named(new.data)
            if name is not None:
                self._names.setdefault(name[:2], name[2])
            self._holdings.apply(recorded)
            if stream_id.startswith("network-"):
                network_id = stream_id.removeprefix("network-")
                self._networks[network_id] = _network.evolve(
                    self._networks.get(network_id) or _network.Network(network_id), new.data)
            out.append(recorded)
        return out

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        return list(self._streams.get(stream_id, [])[max(from_version, 1) - 1:])

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        return {stream_id: list(self._streams.get(stream_id, [])) for stream_id in stream_ids}

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self.events[after:after + limit]

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, []))

    async def head(self) -> int:
        return len(self.events)

    async def stored(self, event_id: str, consumer: str) -> tuple[RecordedEvent | None, bool]:
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            return None, False
        recorded = self._by_id.get(key)
        if recorded is None:
            return None, False
        return recorded, (consumer, str(key)) in self._inbox

    async def deploy_reads(self, stream_ids: Sequence[str], objects: Sequence[str] | None,
                           volume_id: str | None
                           ) -> tuple[dict[str, list[RecordedEvent]],
                                      dict[str, tuple[str, str, bool]], str | None]:
        return (await self.read_streams(stream_ids), await self.inventory_objects(objects),
                None if volume_id is None else await self.volume_origin(volume_id))

    async def placement_reads(self, from_versions: Mapping[str, int]
                              ) -> tuple[list[HostView], dict[str, list[RecordedEvent]]]:
        return await self.hosts(), {stream_id: await self.read_stream(stream_id, version)
                                    for stream_id, version in from_versions.items()}

    async def clone_targets(self, pool_stream: str, host_id: str, network_ids: Sequence[str]
                            ) -> tuple[list[RecordedEvent], capacity.Host,
                                       list[_network.Network]]:
        return (await self.read_stream(pool_stream), await self.host(host_id, reservations=False),
                [await self.network(n, addresses=False) for n in network_ids])

    async def stored_with_stream(self, event_id: str, consumer: str
                                 ) -> tuple[RecordedEvent | None, bool, list[RecordedEvent]]:
        recorded, seen = await self.stored(event_id, consumer)
        if recorded is None:
            return None, False, []
        return recorded, seen, list(self._streams.get(recorded.stream_id, []))

    async def hosts(self) -> list[HostView]:
        hosts = [capacity.fold(stream_id.removeprefix("host-"), [e.event() for e in events])
                 for stream_id, events in sorted(self._streams.items())
                 if stream_id.startswith("host-")]
        return [host.view() for host in hosts if capacity.placeable(host)]

    async def host(self, host_id: str, *, reservations: bool = True) -> capacity.Host:
        found = capacity.fold(host_id, [e.event() for e in
                                        self._streams.get(streams.host(host_id), [])])
        return found if reservations else replace(found, reservations={})

    async def network(self, network_id: str, *, addresses: bool = True) -> _network.Network:
        found = self._networks.get(network_id) or _network.Network(network_id)
        return replace(found, held={vm_id: list(held) for vm_id, held in found.held.items()}
                       if addresses else {})

    async def snapshot_uses(self, vm_snapshot_id: str) -> tuple[list[str], list[str]]:
        vms: set[str] = set()
        expunged: set[str] = set()
        pools: set[str] = set()
        seeded_from: dict[str, str] = {}  # template -> the VM snapshot it was seeded from
        for recorded in self.events:
            match recorded.event():
                case VmDeployRequested() as request:
                    # From the snapshot, or from a template seeded from it.
                    source = request.vm_snapshot_id or seeded_from.get(request.template_id or "")
                    if source == vm_snapshot_id:
                        vms.add(request.vm_id)
                case VmExpunged() as gone:
                    expunged.add(gone.vm_id)
                case TemplateSeedStarted() as started:
                    seeded_from[started.template_id] = started.vm_snapshot_id
                    if started.vm_snapshot_id == vm_snapshot_id:
                        pools.add(started.pool_id)
        return sorted(vms - expunged), sorted(pools)

    async def template_seed(self, template_id: str) -> tuple[str, str] | None:
        for recorded in self.events:
            event = recorded.event()
            if isinstance(event, TemplateSeedStarted) and event.template_id == template_id:
                return event.vm_snapshot_id, event.pool_id
        return None

    async def vms(self) -> list[VmEntry]:
        return [self._lookups.vms[vm_id] for vm_id in sorted(self._lookups.vms)]

    async def attached_volumes(self, vm_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for volume_id, volume in sorted(self._lookups.volumes.items()):
            if volume.live and volume.vm_id is not None and volume.vm_id in vm_ids:
                out.setdefault(volume.vm_id, []).append(volume_id)
        return out

    async def volume_origin(self, volume_id: str) -> str | None:
        volume = self._lookups.volumes.get(volume_id)
        return None if volume is None else volume.imported_with

    async def vm_snapshots(self, vm_ids: Sequence[str], *,
                           deleted: bool = False) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for snapshot_id, (vm_id, _, live) in sorted(self._lookups.snapshots.items()):
            if (live or deleted) and vm_id in vm_ids:
                out.setdefault(vm_id, []).append(snapshot_id)
        return out

    async def snapshot_by_ref(self, vm_id: str, ref: str) -> str | None:
        found = sorted((not live, snapshot_id)
                       for snapshot_id, (of, at, live) in self._lookups.snapshots.items()
                       if of == vm_id and at == ref)
        return found[0][1] if found else None

    async def inventory_objects(self, stream_ids: Sequence[str] | None = None
                                ) -> dict[str, tuple[str, str, bool]]:
        objects = self._lookups.objects
        if stream_ids is None:
            return dict(objects)
        return {s: objects[s] for s in stream_ids if s in objects}

    async def name_taken(self, account_name: str, username: str) -> bool:
        return any(name == account_name.lower() or (kind, name) == ("user", username.lower())
                   for kind, name in self._names)

    async def account_named(self, name: str) -> str | None:
        found = self._names.get(("account", name.lower()))
        return None if found is None else found[1]

    async def account_users(self, account_id: str) -> list[str]:
        return sorted(user_id for (kind, _), (of, user_id) in self._names.items()
                      if kind == "user" and of == account_id)

    async def holding(self, kind: str, obj_id: str) -> Holding | None:
        row = self._holdings.rows.get((kind, obj_id))
        return None if row is None else Holding(row.account_id, row.state, row.gone)

    async def holdings(self, account_id: str) -> Usage:
        return self._holdings.usage(account_id)

    @contextlib.asynccontextmanager
    async def account_decision(self, account_id: str) -> AsyncIterator[Usage]:
        async with self._decisions.setdefault(account_id, asyncio.Lock()):
            yield self._holdings.usage(account_id)

    @contextlib.asynccontextmanager
    async def decision_lock(self, name: str) -> AsyncIterator[None]:
        async with self._decisions.setdefault(f"decision:{name}", asyncio.Lock()):
            yield
