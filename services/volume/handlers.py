"""The volume service's handlers: volumes from VM snapshots, empty volumes made on first
attach; attach, detach, resize, delete.

Each loads the volume, its VM and its pool from the event store
(``shared.eventstore.Repository``), acts on the hypervisor and answers the events to
append (``shared.domain.volume``). The hypervisor is the session that owns the zone of the
volume's pool, or of its VM (``shared.drivers.zones.Hypervisors``); where a new volume lies
is that session's kind's choice.
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
from shared.bus import Handlers, HypervisorService
from shared.domain import job, volume
from shared.domain.vm import Vm
from shared.drivers.base import Hypervisor, HypervisorError
from shared.eventstore import Append

log = logging.getLogger(__name__)


class Volumes(HypervisorService):

    def handlers(self) -> Handlers:
        return (Handlers()
                .on(VolumeFromSnapshotRequested, self.from_snapshot)
                .on(VolumeAttachRequested, self.attach)
                .on(VolumeResizeRequested, self.resize)
                .on(VolumeDeleteRequested, self.delete))

    async def _pool(self, pool_id: str | None) -> tuple[str, Hypervisor] | None:
        """The hypervisor's id of a pool and the session of its zone (None if it was never
        imported)."""
        pool = await self.repo.pool(pool_id) if pool_id else None
        if pool is None or pool.imported is None:
            return None
        return pool.imported.ref, await self.hypervisors.for_zone(pool.imported.zone_id)

    async def from_snapshot(self, request: VolumeFromSnapshotRequested,
                            envelope: EventEnvelope) -> Sequence[Append]:
        pool = (await self.repo.pool(request.pool_id)).live
        if pool is None:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id,
                f"storage pool {request.pool_id} no longer exists"))]
        try:
            hypervisor = await self.hypervisors.for_zone(pool.zone_id)
            dest = hypervisor.kind.volume_location(pool.name, request.volume_id)
            log.info("creating volume %s from %s as of VM snapshot %s", request.volume_id,
                     request.source_path, request.vm_snapshot_id)
            task = await hypervisor.copy_volume(request.source_path, pool.ref, dest)
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
            hypervisor = await self.hypervisors.for_zone(machine.zone_id)
            if request.attach and disk.path is None:
                # An Allocated volume: made now, on the pool of the VM's root disk.
                created = await self._create_on(disk, machine, hypervisor)
                assert created.key is not None
                task = created.task_id
                done = [created, VolumeAttached(
                    volume_id=request.volume_id, vm_id=request.vm_id,
                    device_key=legacy_key(created.key), key=created.key,
                    task_id=created.task_id)]
            elif request.attach:
                assert disk.path is not None
                key, task = await hypervisor.attach_volume(machine.ref, disk.path)
                done = [VolumeAttached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       device_key=legacy_key(key), key=key, task_id=task)]
            else:
                if disk.path is None:
                    raise HypervisorError(f"volume {request.volume_id} has no disk to detach")
                task = await hypervisor.detach_volume(machine.ref, disk.path)
                done = [VolumeDetached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       task_id=task)]
        except HypervisorError as exc:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, str(exc), made=True))]
        log.info("%s volume %s %s VM %s, task %s", "attached" if request.attach else "detached",
                 request.volume_id, "to" if request.attach else "from", request.vm_id, task)
        return [Append(envelope.stream_id, [*done, job.succeeded(request.job_id)])]

    async def _create_on(self, disk: volume.Volume, machine: Vm,
                         hypervisor: Hypervisor) -> VolumeCreated:
        assert machine.ref is not None
        pool = (await self.repo.pool(machine.root_pool_id)).live \
            if machine.root_pool_id else None
        if pool is None or disk.account_id is None:
            raise HypervisorError(f"VM {machine.id} has no root volume to put the new volume "
                                  "beside")
        path = hypervisor.kind.volume_location(pool.name, disk.id)
        key, task = await hypervisor.attach_volume(machine.ref, path,
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
        pool = await self._pool(disk.pool_id) if disk.path else None
        task = await pool[1].delete_volume(disk.path, pool[0]) \
            if disk.path and pool else None
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
        try:
            pool = await self._pool(disk.pool_id) if disk.path else None
            # An Allocated volume has no disk yet: it will be made at the new size.
            task = await pool[1].resize_volume(vm_ref, disk.path, request.size_bytes,
                                               pool[0]) \
                if disk.path and pool else None
        except HypervisorError as exc:
            return [Append(envelope.stream_id, volume.failed(
                request.volume_id, request.job_id, str(exc), made=True))]
        return [Append(envelope.stream_id, [
            VolumeResized(volume_id=request.volume_id, size_bytes=request.size_bytes,
                          task_id=task),
            job.succeeded(request.job_id)])]
