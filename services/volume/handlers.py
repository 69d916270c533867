"""The volume service's handlers: volumes from VM snapshots, empty volumes made on first
attach; attach, detach, resize, delete.

Each loads the volume, its VM and its pool from the event store
(``shared.eventstore.Repository``), acts on the hypervisor and answers the events to
append (``shared.domain.volume``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proto.envelope import EventEnvelope
from proto.events import (
    Event,
    VolumeAttached,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFromSnapshotRequested,
    VolumeResized,
    VolumeResizeRequested,
    legacy_key,
)
from shared.bus import Handlers
from shared.domain import job, volume
from shared.domain.vm import Vm
from shared.drivers.base import Hypervisor, HypervisorError
from shared.eventstore import Append, Repository, Store

log = logging.getLogger(__name__)


class Volumes:
    def __init__(self, store: Store, hypervisor: Hypervisor) -> None:
        self.store = store
        self.repo = Repository(store)
        self.hypervisor = hypervisor

    def handlers(self) -> Handlers:
        return (Handlers()
                .on(VolumeFromSnapshotRequested, self.from_snapshot)
                .on(VolumeAttachRequested, self.attach)
                .on(VolumeResizeRequested, self.resize)
                .on(VolumeDeleteRequested, self.delete))

    async def _pool_ref(self, pool_id: str | None) -> str | None:
        """The hypervisor's id of a pool (None if it was never imported)."""
        pool = await self.repo.pool(pool_id) if pool_id else None
        return pool.imported.ref if pool and pool.imported else None

    async def from_snapshot(self, request: VolumeFromSnapshotRequested,
                            envelope: EventEnvelope) -> Sequence[Append]:
        pool = (await self.repo.pool(request.pool_id)).live
        if pool is None:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id,
                f"storage pool {request.pool_id} no longer exists"))]
        dest = self.hypervisor.kind.volume_location(pool.name, request.volume_id)
        log.info("creating volume %s from %s as of VM snapshot %s", request.volume_id,
                 request.source_path, request.vm_snapshot_id)
        try:
            task = await self.hypervisor.copy_volume(request.source_path, pool.ref, dest)
        except HypervisorError as exc:
            log.error("volume %s from snapshot %s failed: %s", request.volume_id,
                      request.vm_snapshot_id, exc)
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id,
                f"copying {request.source_path} failed: {exc}"))]
        return [Append(envelope.stream_id, [
            VolumeCreated(volume_id=request.volume_id, account_id=request.account_id,
                          name=request.name, volume_type=volume.DATADISK,
                          pool_id=request.pool_id, size_bytes=request.size_bytes, path=dest,
                          task_id=task),
            job.succeeded(request.job_id),
        ])]

    async def attach(self, request: VolumeAttachRequested,
                     envelope: EventEnvelope) -> Sequence[Append]:
        disk = await self.repo.volume(request.volume_id)
        machine = await self.repo.vm(request.vm_id)
        if not disk.live or machine.ref is None or machine.expunged:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, "the volume or the VM no longer exists",
                made=True))]
        done: list[Event]
        try:
            if request.attach and disk.path is None:
                # An Allocated volume: made now, on the pool of the VM's root disk.
                created = await self._create_on(disk, machine)
                assert created.key is not None
                task = created.task_id
                done = [created, VolumeAttached(
                    volume_id=request.volume_id, vm_id=request.vm_id,
                    device_key=legacy_key(created.key), key=created.key,
                    task_id=created.task_id)]
            elif request.attach:
                assert disk.path is not None
                key, task = await self.hypervisor.attach_volume(machine.ref, disk.path)
                done = [VolumeAttached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       device_key=legacy_key(key), key=key, task_id=task)]
            else:
                if disk.path is None:
                    raise HypervisorError(f"volume {request.volume_id} has no disk to detach")
                task = await self.hypervisor.detach_volume(machine.ref, disk.path)
                done = [VolumeDetached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       task_id=task)]
        except HypervisorError as exc:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, str(exc), made=True))]
        log.info("%s volume %s %s VM %s, task %s", "attached" if request.attach else "detached",
                 request.volume_id, "to" if request.attach else "from", request.vm_id, task)
        return [Append(envelope.stream_id, [*done, job.succeeded(request.job_id)])]

    async def _create_on(self, disk: volume.Volume, machine: Vm) -> VolumeCreated:
        assert machine.ref is not None
        pool = (await self.repo.pool(machine.root_pool_id)).live \
            if machine.root_pool_id else None
        if pool is None or disk.account_id is None:
            raise HypervisorError(f"VM {machine.id} has no root volume to put the new volume "
                                  "beside")
        path = self.hypervisor.kind.volume_location(pool.name, disk.id)
        key, task = await self.hypervisor.attach_volume(machine.ref, path,
                                                        create_bytes=disk.size_bytes)
        log.info("created volume %s (%d GB) at %s for VM %s, task %s", disk.id,
                 disk.size_bytes // 2**30, path, machine.id, task)
        return VolumeCreated(volume_id=disk.id, account_id=disk.account_id, name=disk.name,
                             volume_type=volume.DATADISK, pool_id=pool.pool_id,
                             size_bytes=disk.size_bytes, path=path,
                             disk_offering_id=disk.disk_offering_id,
                             device_key=legacy_key(key), key=key, task_id=task)

    async def delete(self, request: VolumeDeleteRequested,
                     envelope: EventEnvelope) -> Sequence[Append]:
        disk = await self.repo.volume(request.volume_id)
        pool_ref = await self._pool_ref(disk.pool_id)
        task = await self.hypervisor.delete_volume(disk.path, pool_ref) \
            if disk.path and pool_ref else None
        log.info("deleted volume %s (%s), task %s", request.volume_id,
                 disk.path or "never made", task)
        return [Append(envelope.stream_id, [VolumeDeleted(volume_id=request.volume_id,
                                                          task_id=task)])]

    async def resize(self, request: VolumeResizeRequested,
                     envelope: EventEnvelope) -> Sequence[Append]:
        disk = await self.repo.volume(request.volume_id)
        if not disk.live:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, "the volume no longer exists", made=True))]
        vm_ref = (await self.repo.vm(disk.vm_id)).ref if disk.vm_id else None
        pool_ref = await self._pool_ref(disk.pool_id)
        try:
            # An Allocated volume has no disk yet: it will be made at the new size.
            task = await self.hypervisor.resize_volume(vm_ref, disk.path, request.size_bytes,
                                                       pool_ref) \
                if disk.path and pool_ref else None
        except HypervisorError as exc:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, str(exc), made=True))]
        return [Append(envelope.stream_id, [
            VolumeResized(volume_id=request.volume_id, size_bytes=request.size_bytes,
                          task_id=task),
            job.succeeded(request.job_id)])]
