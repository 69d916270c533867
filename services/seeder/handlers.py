"""The seeder's handlers: make the seeds the planner starts (a VM snapshot made a template on
a pool, once), hand their templates to the VMs waiting, and remove templates no VM needs.

Each seed is made, and each template removed, by the hypervisor session that owns the
zone it lies in (``shared.drivers.zones.Hypervisors``): the zone of the snapshot's VM for a
seed, the zone of its pool for a removal."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmDeployFailed,
    VmExpunged,
    VmSnapshotDeleted,
)
from shared.bus import Handlers, HypervisorService
from shared.domain import seed
from shared.domain.vm import deploy_failure, deploy_request
from shared.drivers.base import HypervisorError
from shared.eventstore import Append

log = logging.getLogger(__name__)


class Seeder(HypervisorService):

    def handlers(self) -> Handlers:
        return (Handlers()
                .on(TemplateSeedStarted, self.seed)
                .on(TemplateSeeded, self.seeded)
                .on(TemplateSeedFailed, self.failed)
                .on(VmSnapshotDeleted, self.collect)
                .on(VmExpunged, self.collect))

    async def collect(self, event: VmSnapshotDeleted | VmExpunged,
                      envelope: EventEnvelope) -> Sequence[Append]:
        """Remove the templates of deleted snapshots once no VM depends on them."""
        if isinstance(event, VmSnapshotDeleted):
            snapshot_id: str | None = event.snapshot_id
        else:
            snapshot_id = await self.repo.source_snapshot(event.vm_id)
        if snapshot_id is None:
            return []
        snapshot = await self.repo.vm_snapshot(snapshot_id)
        # From the store's own lookup, not the read models: a VM requested a moment ago
        # counts as a dependent even before the projector has seen it.
        dependents, pools = await self.store.snapshot_uses(snapshot_id)
        if not snapshot.deleted or dependents:
            return []
        out = []
        for pool_id in pools:
            state = await self.repo.seed(snapshot_id, pool_id)
            removed = seed.removal(state, snapshot_id, pool_id)
            if removed is None or state.template is None:
                continue
            pool = (await self.repo.pool(pool_id)).imported
            hypervisor = await self.hypervisors.for_zone(pool.zone_id if pool else None)
            task = await hypervisor.destroy_vm(state.template.template_ref)
            log.info("removed template %s of deleted VM snapshot %s from pool %s (task %s): no "
                     "VM depends on it any more", state.template.template_id, snapshot_id,
                     pool_id, task)
            out.append(removed)
        return out

    async def seed(self, started: TemplateSeedStarted,
                   envelope: EventEnvelope) -> Sequence[Append]:
        snapshot = (await self.repo.vm_snapshot(started.vm_snapshot_id)).live
        source = await self.repo.vm(snapshot.vm_id) if snapshot else None
        target = (await self.repo.pool(started.pool_id)).live
        if snapshot is None or source is None or source.ref is None or target is None:
            reason = (f"VM snapshot {started.vm_snapshot_id}, its VM or pool {started.pool_id}"
                      " no longer exists")
            log.error("seed on pool %s failed: %s", started.pool_id, reason)
            return [Append(envelope.stream_id, [seed.failed(started, reason)])]
        log.info("seeding snapshot %s on pool %s as template %s", started.vm_snapshot_id,
                 started.pool_id, started.name)
        try:
            hypervisor = await self.hypervisors.for_zone(source.zone_id)
            done = await hypervisor.seed_template(source.ref, snapshot.ref, target.ref,
                                                  started.name)
        except HypervisorError as exc:
            if exc.transient:
                raise
            log.error("seed of snapshot %s on pool %s failed: %s", started.vm_snapshot_id,
                      started.pool_id, exc)
            return [Append(envelope.stream_id, [seed.failed(started, str(exc))])]
        log.info("seeded template %s at %s (tasks %s)", started.name, done.install_path,
                 ", ".join(done.task_ids))
        return [Append(envelope.stream_id, [TemplateSeeded(
            vm_snapshot_id=started.vm_snapshot_id, pool_id=started.pool_id,
            template_id=started.template_id, template_ref=done.template_ref,
            base_snapshot_ref=done.base_snapshot_ref, install_path=done.install_path,
            task_ids=done.task_ids)])]

    async def seeded(self, template: TemplateSeeded,
                     envelope: EventEnvelope) -> Sequence[Append]:
        state = await self.repo.seed(template.vm_snapshot_id, template.pool_id,
                                       envelope.version)
        return [seed.source_ready(vm_id, template) for vm_id in state.waiters]

    async def failed(self, failure: TemplateSeedFailed,
                     envelope: EventEnvelope) -> Sequence[Append]:
        state = await self.repo.seed(failure.vm_snapshot_id, failure.pool_id, envelope.version)
        out = []
        for vm_id in state.waiters:
            history = await self.repo.events(streams.vm(vm_id))
            request = deploy_request(history)
            if request is None or any(isinstance(e, VmDeployFailed) for e in history):
                continue  # failed already (its last attempt gave up)
            out.append(Append(streams.vm(vm_id), deploy_failure(
                request, "seed", f"seeding the template failed: {failure.reason}")))
        return out
