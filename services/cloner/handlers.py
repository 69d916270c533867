"""The cloner's handlers: turn a VM's seeded template into a running VM, and change VMs
on the hypervisor (power, destroy, snapshots, revert) for the API.

Each loads what it decides on from the event store (``shared.eventstore.Repository`` and
the store's lookups), decides with ``shared.domain``, acts on the hypervisor and answers
the events to append. The hypervisor is the session that owns the VM's zone
(``shared.drivers.zones.Hypervisors``); the pool setting that asks for full clones and the
manager messages name are that session's kind's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    JobSubmitted,
    VmDeployFailed,
    VmDeployRequested,
    VmDestroyRequested,
    VmPowerRequested,
    VmReconfigured,
    VmReverted,
    VmRevertRequested,
    VmServiceChanged,
    VmSnapshotDeleted,
    VmSnapshotDeleteRequested,
    VmSnapshotFailed,
    VmSnapshotRequested,
    VmSourceReady,
    VolumeAllocated,
    VolumeAttachRequested,
    VolumeDetached,
)
from proto.streams import stable_id
from shared.bus import Handlers, HypervisorService
from shared.domain import capacity, job, vm
from shared.domain.inventory import snapshot_description, snapshot_taken
from shared.domain.job import ATTACH_VOLUME_CMD
from shared.domain.volume import DATADISK, GB
from shared.drivers.base import CloneProgress, CloneRequest, Hypervisor, HypervisorError
from shared.drivers.zones import UNKNOWN_ZONE
from shared.eventstore import NO_STREAM, Append, RecordedEvent

log = logging.getLogger(__name__)


def job_failed(stream_id: str, job_id: str, reason: str) -> list[Append]:
    return [Append(stream_id, [job.failed(job_id, reason)])]


class Cloner(HypervisorService):

    def handlers(self) -> Handlers:
        return (Handlers()
                .on_stream(VmSourceReady, self.deploy, self.store.read_stream)
                .on(VmDeployFailed, self.remove_leftover)
                .on(VmSnapshotRequested, self.snapshot)
                .on(VmSnapshotDeleteRequested, self.delete_snapshot)
                .on(VmRevertRequested, self.revert)
                .on(VmDestroyRequested, self.destroy)
                .on(VmPowerRequested, self.power)
                .on(VmServiceChanged, self.change_service))

    async def _missing(self, machine: vm.Vm) -> str:
        return f"VM {machine.id} has no VM in {await self.hypervisors.manager(machine.zone_id)}"

    async def power(self, request: VmPowerRequested,
                    envelope: EventEnvelope) -> Sequence[Append]:
        machine = await self.repo.vm(request.vm_id)
        if machine.ref is None:
            return job_failed(envelope.stream_id, request.job_id, await self._missing(machine))
        task: str | None
        try:
            hypervisor = await self.hypervisors.for_zone(machine.zone_id)
            reconfigured: list[VmReconfigured] = []
            if request.action == "stop":
                task = await hypervisor.power_off(machine.ref)
            elif request.action == "start":
                if not machine.applied:  # a changed offering not applied yet: first
                    reconfigured = [await self._reconfigure(hypervisor, machine)]
                task = await hypervisor.power_on(machine.ref)
            else:
                task = await hypervisor.reboot(machine.ref)
        except HypervisorError as exc:
            log.error("%s of VM %s failed: %s", request.action, request.vm_id, exc)
            return job_failed(envelope.stream_id, request.job_id, str(exc))
        log.info("%s of VM %s done, task %s", request.action, request.vm_id, task)
        return [Append(envelope.stream_id, [*reconfigured,
                                            *vm.powered(request, machine, task)])]

    async def _reconfigure(self, hypervisor: Hypervisor, machine: vm.Vm) -> VmReconfigured:
        """Give the VM on its hypervisor the CPUs and memory its stream says it has."""
        assert machine.ref is not None
        task = await hypervisor.reconfigure(machine.ref, machine.cpu_number, machine.memory_mb)
        log.info("VM %s reconfigured: %d CPUs, %d MiB, task %s", machine.id,
                 machine.cpu_number, machine.memory_mb, task)
        return VmReconfigured(vm_id=machine.id, cpu_number=machine.cpu_number,
                              memory_mb=machine.memory_mb, task_id=task)

    async def change_service(self, changed: VmServiceChanged,
                             envelope: EventEnvelope) -> Sequence[Append]:
        """A stopped VM's new offering, applied to its hypervisor now (if it is started
        first, the start applies it)."""
        machine = await self.repo.vm(changed.vm_id)
        if machine.ref is None or machine.applied:
            return []
        try:
            hypervisor = await self.hypervisors.for_zone(machine.zone_id)
            if await hypervisor.vm_powered_on(machine.ref):
                return []  # started meanwhile: the start applied it
            return [Append(envelope.stream_id, [await self._reconfigure(hypervisor, machine)])]
        except HypervisorError as exc:
            if exc.transient:
                raise
            log.error("could not reconfigure VM %s: %s; its next start does", changed.vm_id,
                      exc)
            return []

    async def destroy(self, request: VmDestroyRequested,
                      envelope: EventEnvelope) -> Sequence[Append]:
        machine = await self.repo.vm(request.vm_id)
        volume_ids = (await self.store.attached_volumes([request.vm_id])).get(request.vm_id, [])
        out: list[Append] = []
        detached: list[str] = []
        try:
            hypervisor = await self.hypervisors.for_zone(machine.zone_id) \
                if machine.ref is not None else None
            if machine.ref is not None and hypervisor is not None and request.expunge:
                # Like CloudStack: data disks are detached and kept; the root disk goes
                # with the VM.
                for volume_id in volume_ids:
                    disk = await self.repo.volume(volume_id)
                    if disk.volume_type != DATADISK or disk.path is None:
                        continue
                    task = await hypervisor.detach_volume(machine.ref, disk.path,
                                                          missing_ok=True)
                    log.info("detached volume %s from VM %s before expunging it, task %s",
                             volume_id, request.vm_id, task)
                    out.append(Append(streams.volume(volume_id), [VolumeDetached(
                        volume_id=volume_id, vm_id=request.vm_id, task_id=task)]))
                    detached.append(volume_id)
                task = await hypervisor.destroy_vm(machine.ref)
                log.info("expunged VM %s (%s), task %s", request.vm_id, machine.ref, task)
            elif machine.ref is not None and hypervisor is not None:
                task = await hypervisor.power_off(machine.ref)
                log.info("destroyed VM %s (%s): powered off, task %s", request.vm_id,
                         machine.ref, task)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, request.job_id, str(exc))
        return [*out, Append(envelope.stream_id, vm.destroyed(request, volume_ids, detached))]

    async def deploy(self, ready: VmSourceReady, envelope: EventEnvelope,
                     recorded: Sequence[RecordedEvent]) -> Sequence[Append]:
        """Clone, reconfigure and power on the VM, decided on its stream ``recorded`` (read
        with ``ready``)."""
        history = [e.event() for e in recorded]
        request = vm.deploy_request(history)
        placed = capacity.last_placement(history)
        if request is None or placed is None:
            raise LookupError(f"VM {ready.vm_id} has no placed deploy request")
        version = recorded[-1].version
        over, failed = vm.settled(history)
        if over:
            # Already settled (a redelivery, or failed meanwhile): make sure a failed VM
            # left nothing behind, and do nothing else.
            if failed:
                await self._cleanup(request, CloneProgress())
            return []
        pool, host, found = await self.repo.clone_targets(placed.pool_id, placed.host_id,
                                                          request.network_ids)
        target = pool.live
        networks = [n.binding for n in found]
        gone = [f"network {n}" for n, b in zip(request.network_ids, networks, strict=True)
                if b is None]
        if target is None:
            gone.insert(0, f"pool {placed.pool_id}")
        if not capacity.placeable(host):
            gone.insert(0, f"host {placed.host_id}")
        if gone or target is None:
            reason = f"{', '.join(gone)} no longer exist{'s' if len(gone) == 1 else ''}"
            log.error("deploy of VM %s failed: %s", request.vm_id, reason)
            return [Append(envelope.stream_id, vm.deploy_failure(request, "clone", reason),
                           version)]
        try:
            hypervisor = await self.hypervisors.for_zone(request.zone_id)
        except HypervisorError as exc:
            if exc.transient:
                raise
            log.error("deploy of VM %s failed: %s", request.vm_id, exc)
            return [Append(envelope.stream_id, vm.deploy_failure(request, "clone", str(exc)),
                           version)]
        full = pool.setting(hypervisor.kind.full_clone_setting)
        clone = CloneRequest(
            name=request.instance_name, template_ref=ready.template_ref,
            base_snapshot_ref=ready.base_snapshot_ref, host_ref=host.ref, pool_ref=target.ref,
            linked=not full, cpu_number=placed.cpu_number,
            cpu_mhz=placed.cpu_number * placed.cpu_speed, memory_mb=placed.memory_mb,
            networks=[b for b in networks if b is not None],
        )
        progress = CloneProgress()
        log.info("cloning VM %s as %s on host %s, pool %s (%s clone of %s)", request.vm_id,
                 clone.name, host.ref, target.ref, "full" if full else "linked",
                 ready.template_ref)
        try:
            await hypervisor.clone(clone, progress)
        except HypervisorError as exc:
            step = progress.failed_step()
            if exc.transient:
                # Safe to run again: a new attempt first removes what this one left.
                log.warning("deploy of VM %s stopped at %s in %s (%s); retrying",
                            request.vm_id, step, hypervisor.kind.manager, exc)
                raise
            log.error("deploy of VM %s failed at %s: %s; removing what was created",
                      request.vm_id, step, exc)
            await self._cleanup(request, progress, hypervisor)
            return [Append(envelope.stream_id, vm.deploy_failure(request, step, str(exc)),
                           version)]
        stopped = False
        if not request.start and progress.vm_ref is not None:
            # startvm=false: the clone is powered off again before the VM is reported.
            try:
                task = await hypervisor.power_off(progress.vm_ref)
                stopped = True
                log.info("VM %s left stopped as asked (task %s)", request.vm_id, task)
            except HypervisorError as exc:
                if exc.transient:
                    raise
                log.warning("VM %s could not be left stopped: %s", request.vm_id, exc)
        done = vm.deployed(request, placed, ready, clone.linked, progress, stopped)
        log.info("VM %s (%s) is %s on %s; operations %s", request.vm_id, clone.name,
                 "stopped" if stopped else "running", clone.host_ref,
                 ", ".join(progress.operation_ids()))
        # At the version read: if the deploy was failed meanwhile, this conflicts and the
        # rerun sees the failure and removes the VM just made.
        out = [Append(envelope.stream_id, done.vm_events, version)]
        if done.root_volume is not None:
            out.append(Append(streams.volume(done.root_volume.volume_id), [done.root_volume],
                              NO_STREAM))
        if request.data_disk_offering_id is not None:
            out.extend(await self._data_disk(request))
        return out

    async def _data_disk(self, request: VmDeployRequested) -> list[Append]:
        """deployVirtualMachine diskofferingid=: a data volume of the offering, allocated
        and attached to the new VM by the volume service (its own job)."""
        assert request.data_disk_offering_id is not None
        offering = await self.repo.disk_offering(request.data_disk_offering_id)
        if offering is None:
            log.warning("VM %s: disk offering %s no longer exists; no data disk made",
                        request.vm_id, request.data_disk_offering_id)
            return []
        volume_id = stable_id("deploy-data-disk", request.vm_id)
        job_id = stable_id("deploy-data-disk-job", request.vm_id)
        return [Append(streams.volume(volume_id), [
            VolumeAllocated(volume_id=volume_id, job_id=job_id, account_id=request.account_id,
                            user_id=request.user_id, name=f"DATA-{request.name}",
                            zone_id=request.zone_id, disk_offering_id=offering.id,
                            size_bytes=offering.disk_size_gb * GB),
            JobSubmitted(job_id=job_id, cmd=ATTACH_VOLUME_CMD, instance_type="Volume",
                         instance_id=volume_id, account_id=request.account_id,
                         user_id=request.user_id),
            VolumeAttachRequested(volume_id=volume_id, vm_id=request.vm_id, job_id=job_id,
                                  attach=True),
        ], NO_STREAM)]

    async def remove_leftover(self, failed: VmDeployFailed,
                              envelope: EventEnvelope) -> Sequence[Append]:
        """A failed deploy leaves no VM behind, whoever failed it and however it died
        (a failure on the last delivery attempt, a crash mid-clone): remove any by its name."""
        request = (await self.repo.vm(failed.vm_id)).request
        if request is not None:
            await self._cleanup(request, CloneProgress())
        return []

    async def _cleanup(self, request: VmDeployRequested, progress: CloneProgress,
                       hypervisor: Hypervisor | None = None) -> None:
        """Remove what a deploy made in its zone, found by its instance name unless
        ``progress`` names it."""
        name = request.instance_name
        if hypervisor is None:
            try:
                hypervisor = await self.hypervisors.for_zone(request.zone_id)
            except HypervisorError as exc:
                if exc.fault != UNKNOWN_ZONE:
                    raise
                log.warning("nothing of VM %s to remove: %s", request.vm_id, exc)
                return
        ref = progress.vm_ref or await hypervisor.find_vm(name)
        if ref is not None:
            task = await hypervisor.destroy_vm(ref)
            log.info("removed the half-made VM %s (%s, task %s)", name, ref, task)

    # ---- VM snapshots ----------------------------------------------------------------

    async def snapshot(self, request: VmSnapshotRequested,
                       envelope: EventEnvelope) -> Sequence[Append]:
        machine = await self.repo.vm(request.vm_id)
        try:
            if machine.ref is None or machine.account_id is None:
                raise HypervisorError(await self._missing(machine))
            hypervisor = await self.hypervisors.for_zone(machine.zone_id)
            ref, task = await hypervisor.create_snapshot(
                machine.ref, request.name, snapshot_description(request.description,
                                                                request.snapshot_id),
                request.memory, request.quiesce)
            info = await hypervisor.snapshot_info(machine.ref, ref)
        except HypervisorError as exc:
            log.error("snapshot %s of VM %s failed: %s", request.name, request.vm_id, exc)
            return [Append(envelope.stream_id, [
                VmSnapshotFailed(snapshot_id=request.snapshot_id, vm_id=request.vm_id,
                                 reason=str(exc)),
                job.failed(request.job_id, str(exc))])]
        log.info("took snapshot %s (%s) of VM %s, task %s", request.name, ref, request.vm_id,
                 task)
        parent = None if info.parent_ref is None else \
            await self.store.snapshot_by_ref(request.vm_id, info.parent_ref)
        # A disk that is a volume attached to the VM is named by that volume's id.
        attached = await self.repo.attached_disks({request.vm_id: [d.key for d in info.disks]})
        taken = snapshot_taken(request, machine.account_id, info, parent,
                               attached.get(request.vm_id))
        return [Append(streams.vm_snapshot(request.snapshot_id), [taken], NO_STREAM),
                Append(envelope.stream_id, [job.succeeded(request.job_id)])]

    async def _snapshot_ref(self, snapshot_id: str) -> str | None:
        snapshot = (await self.repo.vm_snapshot(snapshot_id)).live
        return None if snapshot is None else snapshot.ref

    async def delete_snapshot(self, request: VmSnapshotDeleteRequested,
                              envelope: EventEnvelope) -> Sequence[Append]:
        ref = await self._snapshot_ref(request.snapshot_id)
        if ref is None:
            return job_failed(envelope.stream_id, request.job_id,
                              f"VM snapshot {request.snapshot_id} no longer exists")
        try:
            hypervisor = await self.hypervisors.for_zone(
                (await self.repo.vm(request.vm_id)).zone_id)
            task = await hypervisor.remove_snapshot(ref)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, request.job_id, str(exc))
        log.info("deleted snapshot %s (%s) of VM %s, task %s", request.snapshot_id, ref,
                 request.vm_id, task)
        deleted = VmSnapshotDeleted(snapshot_id=request.snapshot_id, vm_id=request.vm_id)
        return [Append(streams.vm_snapshot(request.snapshot_id), [deleted]),
                Append(envelope.stream_id, [job.succeeded(request.job_id)])]

    async def revert(self, request: VmRevertRequested,
                     envelope: EventEnvelope) -> Sequence[Append]:
        ref = await self._snapshot_ref(request.snapshot_id)
        machine = await self.repo.vm(request.vm_id)
        if ref is None:
            return job_failed(envelope.stream_id, request.job_id,
                              f"VM snapshot {request.snapshot_id} no longer exists")
        if machine.ref is None:
            return job_failed(envelope.stream_id, request.job_id, await self._missing(machine))
        try:
            hypervisor = await self.hypervisors.for_zone(machine.zone_id)
            task = await hypervisor.revert_snapshot(ref)
            powered = await hypervisor.vm_powered_on(machine.ref)
        except HypervisorError as exc:
            return job_failed(envelope.stream_id, request.job_id, str(exc))
        log.info("reverted VM %s to snapshot %s, task %s", request.vm_id, request.snapshot_id,
                 task)
        # The offering the VM had when the snapshot was taken comes back with it (the
        # hypervisor's revert brought back its CPUs and memory).
        restored: list[VmServiceChanged | VmReconfigured] = []
        then = vm.as_of_snapshot(request.vm_id, await self.repo.events(envelope.stream_id),
                                 request.snapshot_id)
        if then is not None and then.service_offering_id is not None and \
                then.service_offering_id != machine.service_offering_id:
            restored = [VmServiceChanged(
                vm_id=request.vm_id, service_offering_id=then.service_offering_id,
                cpu_number=then.cpu_number, cpu_speed=then.cpu_speed,
                memory_mb=then.memory_mb),
                VmReconfigured(vm_id=request.vm_id, cpu_number=then.cpu_number,
                               memory_mb=then.memory_mb)]
        return [Append(envelope.stream_id, [
            VmReverted(snapshot_id=request.snapshot_id, vm_id=request.vm_id, powered_on=powered),
            *restored, job.succeeded(request.job_id)])]
