"""Aggregates loaded from their streams, for handlers that decide on the write side."""

from __future__ import annotations

from proto import streams
from proto.events import AnyEvent, VmDeployRequested, VmImported
from shared.domain import capacity as _capacity
from shared.domain import network as _network
from shared.domain import pool as _pool
from shared.domain import seed as _seed
from shared.domain import vm as _vm
from shared.domain import vmsnapshot as _vmsnapshot
from shared.domain import volume as _volume
from shared.eventstore._store import Store


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

    async def seed(self, vm_snapshot_id: str, pool_id: str,
                   up_to: int | None = None) -> _seed.Seed:
        return _seed.fold(await self.events(streams.seed(vm_snapshot_id, pool_id), up_to))

    async def vm(self, vm_id: str) -> _vm.Vm:
        return _vm.fold(vm_id, await self.events(streams.vm(vm_id)))

    async def host(self, host_id: str) -> _capacity.Host:
        return _capacity.fold(host_id, await self.events(streams.host(host_id)))

    async def pool(self, pool_id: str) -> _pool.Pool:
        return _pool.fold(pool_id, await self.events(streams.pool(pool_id)))

    async def network(self, network_id: str) -> _network.Network:
        return _network.fold(network_id, await self.events(streams.network(network_id)))

    async def vm_snapshot(self, snapshot_id: str) -> _vmsnapshot.VmSnapshot:
        return _vmsnapshot.fold(await self.events(streams.vm_snapshot(snapshot_id)))

    async def volume(self, volume_id: str) -> _volume.Volume:
        """The volume from its stream; for a disk of an imported VM, starting from the
        latest import of the VM that describes it (``Store.volume_origin``)."""
        start = None
        origin = await self.store.volume_origin(volume_id)
        if origin is not None:
            described = [e for e in await self.events(streams.vm(origin))
                         if isinstance(e, VmImported)
                         and any(d.volume_id == volume_id for d in e.disks)]
            if described:
                start = _volume.imported(volume_id, described[-1])
        return _volume.fold(volume_id, await self.events(streams.volume(volume_id)), start)
