"""The volume service's handlers: volumes from VM snapshots, empty volumes made on first
attach; attach, detach, resize, delete."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from proto.envelope import EventEnvelope
from proto.events import (
    Event,
    JobCompleted,
    VolumeAttached,
    VolumeAttachRequested,
    VolumeCreated,
    VolumeDeleted,
    VolumeDeleteRequested,
    VolumeDetached,
    VolumeFailed,
    VolumeFromSnapshotRequested,
    VolumeResized,
    VolumeResizeRequested,
)
from shared.bus import Handler
from shared.drivers.base import Hypervisor, HypervisorError
from shared.eventstore import Append, EventStore
from shared.projections import queries

log = logging.getLogger(__name__)


class Volumes:
    def __init__(self, store: EventStore, hypervisor: Hypervisor) -> None:
        self.store = store
        self.hypervisor = hypervisor

    def handlers(self) -> dict[str, Handler]:
        return {
            "VolumeFromSnapshotRequested": self.from_snapshot,
            "VolumeAttachRequested": self.attach,
            "VolumeResizeRequested": self.resize,
            "VolumeDeleteRequested": self.delete,
        }

    def _failed(self, stream_id: str, volume_id: str, job_id: str, reason: str,
                created: bool = False) -> list[Append]:
        events = [] if created else [VolumeFailed(volume_id=volume_id, reason=reason)]
        return [Append(stream_id, [*events, JobCompleted(
            job_id=job_id, succeeded=False, error_code=530, error_text=reason)])]

    async def from_snapshot(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VolumeFromSnapshotRequested)
        async with self.store.pool.acquire() as conn:
            pool = await queries.catalog_row(conn, "pool", request.pool_id)
        if pool is None:
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                f"storage pool {request.pool_id} no longer exists")
        dest = self.hypervisor.kind.volume_location(pool["name"], request.volume_id)
        log.info("creating volume %s from %s as of VM snapshot %s", request.volume_id,
                 request.source_path, request.vm_snapshot_id)
        try:
            task = await self.hypervisor.copy_volume(request.source_path, pool["data"]["ref"],
                                                     dest)
        except HypervisorError as exc:
            log.error("volume %s from snapshot %s failed: %s", request.volume_id,
                      request.vm_snapshot_id, exc)
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                f"copying {request.source_path} failed: {exc}")
        return [Append(envelope.stream_id, [
            VolumeCreated(volume_id=request.volume_id, account_id=request.account_id,
                          name=request.name, volume_type="DATADISK", pool_id=request.pool_id,
                          size_bytes=request.size_bytes, path=dest, task_id=task),
            JobCompleted(job_id=request.job_id, succeeded=True),
        ])]

    async def attach(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VolumeAttachRequested)
        async with self.store.pool.acquire() as conn:
            volume = await queries.catalog_row(conn, "volume", request.volume_id)
            vm_ref = await conn.fetchval("SELECT hypervisor_ref FROM vm_instances"
                                         " WHERE id = $1::uuid", request.vm_id)
        if volume is None or vm_ref is None:
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                "the volume or the VM no longer exists", created=True)
        path = volume["data"]["path"]
        done: list[Event] = []
        try:
            if request.attach and path is None:
                # An Allocated volume: made now, on the pool of the VM's root disk.
                created = await self._create_on(volume, request.vm_id, vm_ref)
                assert created.device_key is not None
                task = created.task_id
                done = [created, VolumeAttached(
                    volume_id=request.volume_id, vm_id=request.vm_id,
                    device_key=created.device_key, task_id=created.task_id)]
            elif request.attach:
                key, task = await self.hypervisor.attach_volume(vm_ref, path)
                done = [VolumeAttached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       device_key=key, task_id=task)]
            else:
                task = await self.hypervisor.detach_volume(vm_ref, path)
                done = [VolumeDetached(volume_id=request.volume_id, vm_id=request.vm_id,
                                       task_id=task)]
        except HypervisorError as exc:
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                str(exc), created=True)
        log.info("%s volume %s %s VM %s, task %s", "attached" if request.attach else "detached",
                 request.volume_id, "to" if request.attach else "from", request.vm_id, task)
        return [Append(envelope.stream_id, [*done,
                                            JobCompleted(job_id=request.job_id, succeeded=True)])]

    async def _create_on(self, volume: dict[str, Any], vm_id: str, vm_ref: str) -> VolumeCreated:
        async with self.store.pool.acquire() as conn:
            pool = await conn.fetchrow(
                "SELECT p.id, p.name FROM catalog v JOIN catalog p ON p.kind = 'pool'"
                " AND p.id = v.data ->> 'pool_id' WHERE v.kind = 'volume' AND v.removed IS NULL"
                " AND v.data ->> 'vm_id' = $1 AND v.data ->> 'volume_type' = 'ROOT'", vm_id)
        if pool is None:
            raise HypervisorError(f"VM {vm_id} has no root volume to put the new volume beside")
        path = self.hypervisor.kind.volume_location(pool["name"], volume["id"])
        size = volume["data"]["size_bytes"]
        key, task = await self.hypervisor.attach_volume(vm_ref, path, create_bytes=size)
        log.info("created volume %s (%d GB) at %s for VM %s, task %s", volume["id"],
                 size // 2**30, path, vm_id, task)
        return VolumeCreated(volume_id=volume["id"], account_id=volume["account_id"],
                             name=volume["name"], volume_type="DATADISK", pool_id=pool["id"],
                             size_bytes=size, path=path,
                             disk_offering_id=volume["data"].get("disk_offering_id"),
                             device_key=key, task_id=task)

    @staticmethod
    async def _disk(conn: asyncpg.Connection, volume_id: str) -> tuple[
            dict[str, Any] | None, str | None, str | None]:
        """A volume's catalog row, and its disk's path and pool ref (None before it is made)."""
        volume = await queries.catalog_row(conn, "volume", volume_id)
        path = volume["data"].get("path") if volume else None
        if volume is None or path is None:
            return volume, None, None
        return volume, path, await queries.ref_of(conn, "pool", volume["data"]["pool_id"])

    async def delete(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VolumeDeleteRequested)
        async with self.store.pool.acquire() as conn:
            _, path, pool_ref = await self._disk(conn, request.volume_id)
        task = await self.hypervisor.delete_volume(path, pool_ref) if path and pool_ref else None
        log.info("deleted volume %s (%s), task %s", request.volume_id, path or "never made",
                 task)
        return [Append(envelope.stream_id, [VolumeDeleted(volume_id=request.volume_id,
                                                          task_id=task)])]

    async def resize(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VolumeResizeRequested)
        async with self.store.pool.acquire() as conn:
            volume, path, pool_ref = await self._disk(conn, request.volume_id)
            vm_id = volume["data"].get("vm_id") if volume else None
            vm_ref = await conn.fetchval("SELECT hypervisor_ref FROM vm_instances"
                                         " WHERE id = $1::uuid", vm_id) if vm_id else None
        if volume is None:
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                "the volume no longer exists", created=True)
        try:
            # An Allocated volume has no disk yet: it will be made at the new size.
            task = await self.hypervisor.resize_volume(vm_ref, path, request.size_bytes,
                                                       pool_ref) if path and pool_ref else None
        except HypervisorError as exc:
            return self._failed(envelope.stream_id, request.volume_id, request.job_id,
                                str(exc), created=True)
        return [Append(envelope.stream_id, [
            VolumeResized(volume_id=request.volume_id, size_bytes=request.size_bytes,
                          task_id=task),
            JobCompleted(job_id=request.job_id, succeeded=True)])]


