"""The seeder's handlers: give each placed VM a template on its pool, seeding it once."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from proto import streams
from proto.envelope import EventEnvelope
from proto.events import (
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmDeployFailed,
    VmDeployRequested,
    VmExpunged,
    VmPlaced,
    VmSnapshotDeleted,
)
from shared.bus import Handler
from shared.domain import seed
from shared.domain.vm import deploy_failure, deploy_request
from shared.drivers.base import Hypervisor, HypervisorError
from shared.eventstore import Append, EventStore
from shared.projections import queries

log = logging.getLogger(__name__)


class Seeder:
    def __init__(self, store: EventStore, hypervisor: Hypervisor) -> None:
        self.store = store
        self.hypervisor = hypervisor

    def handlers(self) -> dict[str, Handler]:
        return {
            "VmPlaced": self.placed,
            "TemplateSeedStarted": self.seed,
            "TemplateSeeded": self.seeded,
            "TemplateSeedFailed": self.failed,
            "VmSnapshotDeleted": self.collect,
            "VmExpunged": self.collect,
        }

    async def collect(self, envelope: EventEnvelope) -> Sequence[Append]:
        """Remove the templates of deleted snapshots once no VM depends on them."""
        event = envelope.data
        if isinstance(event, VmSnapshotDeleted):
            snapshot_id: str | None = event.snapshot_id
        else:
            assert isinstance(event, VmExpunged)
            request = await self._deploy_request(event.vm_id)
            snapshot_id = request.vm_snapshot_id if request else None
        if snapshot_id is None:
            return []
        async with self.store.pool.acquire() as conn:
            # Read from the store itself, not the read models: a VM requested a moment ago
            # must count as a dependent even before the projector has seen it.
            deleted = await conn.fetchval(
                "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'VmSnapshotDeleted'",
                streams.vm_snapshot(snapshot_id))
            dependents = await conn.fetchval(
                "SELECT count(*) FROM (SELECT data ->> 'vm_id' FROM events"
                " WHERE type = 'VmDeployRequested' AND data ->> 'vm_snapshot_id' = $1"
                " EXCEPT SELECT data ->> 'vm_id' FROM events WHERE type = 'VmExpunged') AS live",
                snapshot_id)
            pools = [r["pool_id"] for r in await conn.fetch(
                "SELECT DISTINCT data ->> 'pool_id' AS pool_id FROM events"
                " WHERE type = 'TemplateSeedStarted' AND data ->> 'vm_snapshot_id' = $1",
                snapshot_id)]
        if not deleted or dependents:
            return []
        out = []
        for pool_id in pools:
            state = await self._seed_state(snapshot_id, pool_id)
            if state.status != seed.READY or state.template is None:
                continue
            task = await self.hypervisor.destroy_vm(state.template.template_ref)
            log.info("removed template %s of deleted VM snapshot %s from pool %s (task %s): no "
                     "VM depends on it any more", state.template.template_id, snapshot_id,
                     pool_id, task)
            out.append(Append(streams.seed(snapshot_id, pool_id), [TemplateRemoved(
                vm_snapshot_id=snapshot_id, pool_id=pool_id)], state.version))
        return out

    async def _seed_state(self, vm_snapshot_id: str, pool_id: str,
                          up_to: int | None = None) -> seed.Seed:
        events = await self.store.read_stream(streams.seed(vm_snapshot_id, pool_id))
        return seed.fold([e.event() for e in events if up_to is None or e.version <= up_to])

    async def _deploy_request(self, vm_id: str) -> VmDeployRequested | None:
        """The request a VM's stream starts with (None for an imported VM)."""
        events = await self.store.read_stream(streams.vm(vm_id))
        return deploy_request([e.event() for e in events[:1]])

    async def _request(self, vm_id: str) -> VmDeployRequested:
        request = await self._deploy_request(vm_id)
        if request is None:
            raise LookupError(f"VM {vm_id} has no deploy request")
        return request

    async def placed(self, envelope: EventEnvelope) -> Sequence[Append]:
        placed = envelope.data
        assert isinstance(placed, VmPlaced)
        request = await self._request(placed.vm_id)
        if request.vm_snapshot_id is None:
            return [await self._from_template(request)]
        state = await self._seed_state(request.vm_snapshot_id, placed.pool_id)
        log.info("VM %s placed; the seed of snapshot %s on pool %s is %s", placed.vm_id,
                 request.vm_snapshot_id, placed.pool_id, state.status)
        return seed.on_placed(state, placed.vm_id, request.vm_snapshot_id, placed.pool_id)

    async def _from_template(self, request: VmDeployRequested) -> Append:
        """A deploy from a seeded template: it is its own source."""
        assert request.template_id is not None
        async with self.store.pool.acquire() as conn:
            row = await queries.catalog_row(conn, "template", request.template_id)
        if row is None:
            return Append(streams.vm(request.vm_id), deploy_failure(
                request, "seed", f"template {request.template_id} no longer exists"))
        template = TemplateSeeded(**{k: v for k, v in row["data"].items() if k != "type"})
        return seed.source_ready(request.vm_id, template)

    async def seed(self, envelope: EventEnvelope) -> Sequence[Append]:
        started = envelope.data
        assert isinstance(started, TemplateSeedStarted)
        async with self.store.pool.acquire() as conn:
            snapshot = await queries.catalog_row(conn, "vmsnapshot", started.vm_snapshot_id)
            pool_ref = await queries.ref_of(conn, "pool", started.pool_id)
            vm = await conn.fetchrow("SELECT hypervisor_ref FROM vm_instances WHERE id = $1::uuid",
                                     snapshot["data"]["vm_id"] if snapshot else None)
        if snapshot is None or vm is None or vm["hypervisor_ref"] is None:
            reason = f"VM snapshot {started.vm_snapshot_id} or its VM no longer exists"
            log.error("seed on pool %s failed: %s", started.pool_id, reason)
            return [Append(envelope.stream_id, [TemplateSeedFailed(
                vm_snapshot_id=started.vm_snapshot_id, pool_id=started.pool_id, reason=reason)])]
        log.info("seeding snapshot %s on pool %s as template %s", started.vm_snapshot_id,
                 started.pool_id, started.name)
        try:
            done = await self.hypervisor.seed_template(vm["hypervisor_ref"],
                                                       snapshot["data"]["ref"], pool_ref,
                                                       started.name)
        except HypervisorError as exc:
            if exc.transient:
                raise
            log.error("seed of snapshot %s on pool %s failed: %s", started.vm_snapshot_id,
                      started.pool_id, exc)
            return [Append(envelope.stream_id, [TemplateSeedFailed(
                vm_snapshot_id=started.vm_snapshot_id, pool_id=started.pool_id,
                reason=str(exc))])]
        log.info("seeded template %s at %s (tasks %s)", started.name, done.install_path,
                 ", ".join(done.task_ids))
        return [Append(envelope.stream_id, [TemplateSeeded(
            vm_snapshot_id=started.vm_snapshot_id, pool_id=started.pool_id,
            template_id=started.template_id, template_ref=done.template_ref,
            base_snapshot_ref=done.base_snapshot_ref, install_path=done.install_path,
            task_ids=done.task_ids)])]

    async def seeded(self, envelope: EventEnvelope) -> Sequence[Append]:
        template = envelope.data
        assert isinstance(template, TemplateSeeded)
        state = await self._seed_state(template.vm_snapshot_id, template.pool_id,
                                       envelope.version)
        return [seed.source_ready(vm_id, template) for vm_id in state.waiters]

    async def failed(self, envelope: EventEnvelope) -> Sequence[Append]:
        failure = envelope.data
        assert isinstance(failure, TemplateSeedFailed)
        state = await self._seed_state(failure.vm_snapshot_id, failure.pool_id, envelope.version)
        out = []
        for vm_id in state.waiters:
            history = [e.event() for e in await self.store.read_stream(streams.vm(vm_id))]
            request = deploy_request(history)
            if request is None or any(isinstance(e, VmDeployFailed) for e in history):
                continue  # failed already (its last attempt gave up)
            out.append(Append(streams.vm(vm_id), deploy_failure(
                request, "seed", f"seeding the template failed: {failure.reason}")))
        return out


