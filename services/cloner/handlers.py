"""The cloner's handlers: turn a VM's seeded template into a running VM, and change VMs
on the hypervisor (snapshots, revert) for the API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    Event,
    JobCompleted,
    Nic,
    NicCreated,
    VmCreated,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyed,
    VmDestroyRequested,
    VmExpunged,
    VmPlaced,
    VmPowerRequested,
    VmRebooted,
    VmReverted,
    VmRevertRequested,
    VmSnapshotDeleted,
    VmSnapshotDeleteRequested,
    VmSnapshotFailed,
    VmSnapshotRequested,
    VmSnapshotTaken,
    VmSourceReady,
    VmStarted,
    VmStopped,
    VolumeCreated,
    VolumeDetached,
)
from proto.streams import stable_id
from shared.bus import Handler
from shared.domain.inventory import disks_of, nics_of, object_id, snapshot_description
from shared.domain.vm import deploy_failure, deploy_request, volume_id
from shared.drivers.base import (
    CLONE,
    RECONFIGURE,
    CloneProgress,
    CloneRequest,
    Hypervisor,
    HypervisorError,
    SnapshotInfo,
)
from shared.eventstore import NO_STREAM, Append, EventStore
from shared.projections import queries

log = logging.getLogger(__name__)


def job_failed(stream_id: str, job_id: str, error: Exception) -> list[Append]:
    return [Append(stream_id, [JobCompleted(job_id=job_id, succeeded=False, error_code=530,
                                            error_text=str(error))])]


def pool_setting(pool: dict[str, Any] | None, name: str) -> str:
    """A per-pool setting as set with updateConfiguration (``false`` unless set)."""
    settings = pool["data"].get("settings", {}) if pool else {}
    return str(settings.get(name, "false")).lower()


class Cloner:
    def __init__(self, store: EventStore, hypervisor: Hypervisor) -> None:
        self.store = store
        self.hypervisor = hypervisor

    def handlers(self) -> dict[str, Handler]:
        return {
            "VmSourceReady": self.deploy,
            "VmDeployFailed": self.remove_leftover,
            "VmSnapshotRequested": self.snapshot,
            "VmSnapshotDeleteRequested": self.delete_snapshot,
            "VmRevertRequested": self.revert,
            "VmDestroyRequested": self.destroy,
            "VmPowerRequested": self.power,
        }

    async def power(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmPowerRequested)
        done: list[Event]
        try:
            ref, _, _ = await self._vm(request.vm_id)
            async with self.store.pool.acquire() as conn:
                host = await conn.fetchval("SELECT host_id FROM vm_instances WHERE id = $1::uuid",
                                           request.vm_id)
            if request.action == "stop":
                task = await self.hypervisor.power_off(ref)
                done = [VmStopped(vm_id=request.vm_id)]
            elif request.action == "start":
                task = await self.hypervisor.power_on(ref)
                done = [VmStarted(vm_id=request.vm_id, host_id=host, hypervisor_ref=ref,
                                  task_ids=[task] if task else [])]
            else:
                task = await self.hypervisor.reboot(ref)
                done = [VmRebooted(vm_id=request.vm_id, task_id=task)]
        except HypervisorError as exc:
            log.error("%s of VM %s failed: %s", request.action, request.vm_id, exc)
            return job_failed(envelope.stream_id, request.job_id, exc)
        log.info("%s of VM %s done, task %s", request.action, request.vm_id, task)
        return [Append(envelope.stream_id,
                       [*done, JobCompleted(job_id=request.job_id, succeeded=True)])]

    async def destroy(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmDestroyRequested)
        async with self.store.pool.acquire() as conn:
            ref = await conn.fetchval("SELECT hypervisor_ref FROM vm_instances"
                                      " WHERE id = $1::uuid", request.vm_id)
            disks = await conn.fetch(
                "SELECT id, data ->> 'volume_type' AS type, data ->> 'path' AS path FROM catalog"
                " WHERE kind = 'volume' AND removed IS NULL AND data ->> 'vm_id' = $1",
                request.vm_id)
        out: list[Append] = []
        events: list[Event] = []
        try:
            if ref is not None and request.expunge:
                # Like CloudStack: data disks are detached and kept; the root disk goes
                # with the VM.
                for disk in disks:
                    if disk["type"] != "DATADISK":
                        continue
                    task = await self.hypervisor.detach_volume(ref, disk["path"],
                                                               missing_ok=True)
                    log.info("detached volume %s from VM %s before expunging it, task %s",
                             disk["id"], request.vm_id, task)
                    out.append(Append(streams.volume(disk["id"]), [VolumeDetached(
                        volume_id=disk["id"], vm_id=request.vm_id, task_id=task)]))
                task = await self.hypervisor.destroy_vm(ref)
                log.info("expunged VM %s (%s), task %s", request.vm_id, ref, task)
            elif ref is not None:
                task = await self.hypervisor.power_off(ref)
                log.info("destroyed VM %s (%s): powered off, task %s", request.vm_id, ref, task)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, request.job_id, exc)
        events.append(VmDestroyed(vm_id=request.vm_id))
        if request.expunge:
            kept = {a.stream_id for a in out}
            events.append(VmExpunged(vm_id=request.vm_id, volume_ids=sorted(
                d["id"] for d in disks if streams.volume(d["id"]) not in kept)))
        events.append(JobCompleted(job_id=request.job_id, succeeded=True))
        return [*out, Append(envelope.stream_id, events)]

    async def deploy(self, envelope: EventEnvelope) -> Sequence[Append]:
        ready = envelope.data
        assert isinstance(ready, VmSourceReady)
        recorded = await self.store.read_stream(envelope.stream_id)
        history = [e.event() for e in recorded]
        request = history[0]
        placed = next(e for e in reversed(history) if isinstance(e, VmPlaced))
        assert isinstance(request, VmDeployRequested)
        if any(isinstance(e, VmStarted | VmDeployFailed) for e in history):
            # Already settled (a redelivery, or failed meanwhile): make sure a failed VM
            # left nothing behind, and do nothing else.
            if any(isinstance(e, VmDeployFailed) for e in history):
                await self._cleanup(request.instance_name, CloneProgress())
            return []
        async with self.store.pool.acquire() as conn:
            host_ref = await queries.ref_of(conn, "host", placed.host_id)
            pool_ref = await queries.ref_of(conn, "pool", placed.pool_id)
            networks = await queries.network_bindings(conn, request.network_ids)
            pool = await queries.catalog_row(conn, "pool", placed.pool_id)
        full = pool_setting(pool, self.hypervisor.kind.full_clone_setting) == "true"
        clone = CloneRequest(
            name=request.instance_name, template_ref=ready.template_ref,
            base_snapshot_ref=ready.base_snapshot_ref, host_ref=host_ref, pool_ref=pool_ref,
            linked=not full, cpu_number=placed.cpu_number,
            cpu_mhz=placed.cpu_number * placed.cpu_speed, memory_mb=placed.memory_mb,
            networks=networks,
        )
        progress = CloneProgress()
        log.info("cloning VM %s as %s on host %s, pool %s (%s clone of %s)", request.vm_id,
                 clone.name, host_ref, pool_ref, "full" if full else "linked",
                 ready.template_ref)
        try:
            await self.hypervisor.clone(clone, progress)
        except HypervisorError as exc:
            step = progress.failed_step()
            if exc.transient:
                # Safe to run again: a new attempt first removes what this one left.
                log.warning("deploy of VM %s: no answer from %s at %s (%s); retrying",
                            request.vm_id, self.hypervisor.kind.manager, step, exc)
                raise
            log.error("deploy of VM %s failed at %s: %s; removing what was created",
                      request.vm_id, step, exc)
            await self._cleanup(clone.name, progress)
            return [Append(envelope.stream_id, deploy_failure(request, step, str(exc)),
                           recorded[-1].version)]
        return self._deployed(envelope, request, placed, ready, clone, progress,
                              recorded[-1].version)

    async def remove_leftover(self, envelope: EventEnvelope) -> Sequence[Append]:
        """A failed deploy leaves no VM behind, whoever failed it and however it died
        (a failure on the last delivery attempt, a crash mid-clone): remove any by its name."""
        failed = envelope.data
        assert isinstance(failed, VmDeployFailed)
        request = deploy_request([e.event() for e in
                                  (await self.store.read_stream(envelope.stream_id))[:1]])
        if request is not None:
            await self._cleanup(request.instance_name, CloneProgress())
        return []

    async def _cleanup(self, name: str, progress: CloneProgress) -> None:
        ref = progress.vm_ref or await self.hypervisor.find_vm(name)
        if ref is not None:
            task = await self.hypervisor.destroy_vm(ref)
            log.info("removed the half-made VM %s (%s, task %s)", name, ref, task)

    def _deployed(self, envelope: EventEnvelope, request: VmDeployRequested, placed: VmPlaced,
                  ready: VmSourceReady, clone: CloneRequest,
                  progress: CloneProgress, version: int) -> list[Append]:
        assert progress.vm_ref
        cloned, reconfigured = progress.operations[CLONE], progress.operations[RECONFIGURE]
        vm_events: list[Event] = [VmCreated(
            vm_id=request.vm_id, ref=progress.vm_ref, host_id=placed.host_id,
            pool_id=placed.pool_id, linked=clone.linked, task_id=cloned)]
        for nic, network_id in zip(progress.nics, request.network_ids, strict=False):
            vm_events.append(NicCreated(vm_id=request.vm_id, task_id=reconfigured,
                                        nic=Nic(nic_id=stable_id("nic", request.vm_id,
                                                                 str(nic.device_key)),
                                                network_id=network_id, mac=nic.mac,
                                                device_key=nic.device_key)))
        tasks = progress.operation_ids()
        vm_events.append(VmStarted(vm_id=request.vm_id, host_id=placed.host_id,
                                   hypervisor_ref=progress.vm_ref, task_ids=tasks))
        vm_events.append(JobCompleted(job_id=request.job_id, succeeded=True))
        log.info("VM %s (%s) is running on %s; operations %s", request.vm_id, clone.name,
                 clone.host_ref, ", ".join(tasks))
        # At the version read: if the deploy was failed meanwhile, this conflicts and the
        # rerun sees the failure and removes the VM just made.
        out = [Append(envelope.stream_id, vm_events, version)]
        root = progress.root_disk
        if root is not None:
            root_id = volume_id(request.vm_id, root.device_key)
            out.append(Append(streams.volume(root_id), [VolumeCreated(
                volume_id=root_id, account_id=request.account_id, name=f"ROOT-{request.name}",
                volume_type="ROOT", pool_id=ready.pool_id, size_bytes=root.size_bytes,
                path=root.path, vm_id=request.vm_id, template_id=request.root_template_id,
                disk_offering_id=request.disk_offering_id or request.service_offering_id,
                device_key=root.device_key, task_id=cloned)], NO_STREAM))
        return out

    # ---- VM snapshots ----------------------------------------------------------------

    async def _vm(self, vm_id: str) -> tuple[str, str, str]:
        async with self.store.pool.acquire() as conn:
            vm = await conn.fetchrow(
                "SELECT hypervisor_ref, account_id, zone_id FROM vm_instances"
                " WHERE id = $1::uuid", vm_id)
        if vm is None or vm["hypervisor_ref"] is None:
            raise HypervisorError(f"VM {vm_id} has no VM in {self.hypervisor.kind.manager}")
        return vm["hypervisor_ref"], vm["account_id"], vm["zone_id"]

    async def snapshot(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmSnapshotRequested)
        job = request.job_id
        try:
            vm_ref, account_id, _ = await self._vm(request.vm_id)
            ref, task = await self.hypervisor.create_snapshot(
                vm_ref, request.name, snapshot_description(request.description,
                                                           request.snapshot_id),
                request.memory, request.quiesce)
            info = await self.hypervisor.snapshot_info(vm_ref, ref)
        except HypervisorError as exc:
            log.error("snapshot %s of VM %s failed: %s", request.name, request.vm_id, exc)
            return [Append(envelope.stream_id, [
                VmSnapshotFailed(snapshot_id=request.snapshot_id, vm_id=request.vm_id,
                                 reason=str(exc)),
                JobCompleted(job_id=job, succeeded=False, error_code=530, error_text=str(exc))])]
        log.info("took snapshot %s (%s) of VM %s, task %s", request.name, ref, request.vm_id,
                 task)
        taken = await self._taken(request, account_id, info)
        return [Append(streams.vm_snapshot(request.snapshot_id), [taken], NO_STREAM),
                Append(envelope.stream_id, [JobCompleted(job_id=job, succeeded=True)])]

    async def _taken(self, request: VmSnapshotRequested, account_id: str,
                     info: SnapshotInfo) -> VmSnapshotTaken:
        parent = None
        if info.parent_ref is not None:
            async with self.store.pool.acquire() as conn:
                parent = await conn.fetchval(
                    "SELECT id FROM catalog WHERE kind = 'vmsnapshot' AND data ->> 'ref' = $1"
                    " AND data ->> 'vm_id' = $2", info.parent_ref, request.vm_id)
        return VmSnapshotTaken(
            snapshot_id=request.snapshot_id, vm_id=request.vm_id, account_id=account_id,
            name=request.name, description=request.description, ref=info.ref,
            parent_id=parent or (object_id("snapshot", info.parent_ref)
                                 if info.parent_ref else None),
            created=info.created, memory=info.memory, cpu_number=info.cpu_number,
            memory_mb=info.memory_mb, disks=disks_of(request.vm_id, info.disks),
            nics=nics_of(request.vm_id, info.nics), current=True)

    async def delete_snapshot(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmSnapshotDeleteRequested)
        job = request.job_id
        async with self.store.pool.acquire() as conn:
            ref = await queries.ref_of(conn, "vmsnapshot", request.snapshot_id)
        try:
            task = await self.hypervisor.remove_snapshot(ref)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, job, exc)
        log.info("deleted snapshot %s (%s) of VM %s, task %s", request.snapshot_id, ref,
                 request.vm_id, task)
        deleted = VmSnapshotDeleted(snapshot_id=request.snapshot_id, vm_id=request.vm_id)
        return [Append(streams.vm_snapshot(request.snapshot_id), [deleted]),
                Append(envelope.stream_id, [JobCompleted(job_id=job, succeeded=True)])]

    async def revert(self, envelope: EventEnvelope) -> Sequence[Append]:
        request = envelope.data
        assert isinstance(request, VmRevertRequested)
        job = request.job_id
        async with self.store.pool.acquire() as conn:
            ref = await queries.ref_of(conn, "vmsnapshot", request.snapshot_id)
        try:
            vm_ref, _, _ = await self._vm(request.vm_id)
            task = await self.hypervisor.revert_snapshot(ref)
            powered = await self.hypervisor.vm_powered_on(vm_ref)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, job, exc)
        log.info("reverted VM %s to snapshot %s, task %s", request.vm_id, request.snapshot_id,
                 task)
        return [Append(envelope.stream_id, [
            VmReverted(snapshot_id=request.snapshot_id, vm_id=request.vm_id, powered_on=powered),
            JobCompleted(job_id=job, succeeded=True)])]
