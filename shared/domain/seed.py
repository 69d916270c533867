"""Seeding a VM snapshot as a template on its pool: once, however many deploys race for it.

The stream ``spoolref-<snapshot>-<pool>`` holds one seed's life: TemplateSeedStarted, the
VMs waiting for it, then TemplateSeeded or TemplateSeedFailed (after a failure, or once the
template was removed, the next deploy starts a new seed). A waiter is appended at the
version its decision saw, so it can never slip in after the outcome unnoticed.

A VM whose seed is ready when it is placed gets its source in the placement's commit
(``at_placement``: the planner decides it, checked against the seed stream's version it
read, so a removal committed meanwhile makes it decide again); the seeder then has nothing
to do for it (``source_decided``). Otherwise the seeder decides once the VM is placed
(``on_placed``, ``from_template``). Either way a seed is never removed while a VM depends
on it: ``removal`` is only decided for a deleted snapshot that no VM not expunged was
deployed from (``Store.snapshot_uses``), and at the seed stream's version read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proto import streams
from proto.events import (
    AnyEvent,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmAwaitingTemplate,
    VmDeployRequested,
    VmPlaced,
    VmSourceReady,
)
from shared.domain.vm import deploy_failure
from shared.eventstore._store import NO_STREAM, Append  # not the package: it loads this module

NONE, CREATING, READY, ERROR, DESTROYED = "None", "Creating", "Ready", "Error", "Destroyed"
SEED_PREFIX = "snapdeploy-seed-"


@dataclass
class Seed:
    status: str = NONE
    version: int = 0
    template: TemplateSeeded | None = None
    waiters: list[str] = field(default_factory=list)
    failure: str | None = None


def fold(events: list[AnyEvent]) -> Seed:
    seed = Seed()
    for event in events:
        seed.version += 1
        match event:
            case TemplateSeedStarted():
                seed.status, seed.waiters, seed.template = CREATING, [], None
            case VmAwaitingTemplate():
                seed.waiters.append(event.vm_id)
            case TemplateSeeded():
                seed.status, seed.template = READY, event
            case TemplateSeedFailed():
                seed.status, seed.failure = ERROR, event.reason
            case TemplateRemoved():
                seed.status, seed.template = DESTROYED, None
    return seed


def template_name(vm_snapshot_id: str, pool_id: str) -> str:
    """The seeded template's name in the hypervisor."""
    return f"{SEED_PREFIX}{streams.seed_template_id(vm_snapshot_id, pool_id)}"


def source_ready(vm_id: str, template: TemplateSeeded) -> Append:
    return Append(streams.vm(vm_id), [VmSourceReady(
        vm_id=vm_id, template_id=template.template_id, template_ref=template.template_ref,
        base_snapshot_ref=template.base_snapshot_ref, pool_id=template.pool_id)])


def ready_source(seed: Seed, vm_id: str) -> Append | None:
    """The VM's source if the seed is ready: its template (None if it is not)."""
    if seed.status == READY and seed.template is not None:
        return source_ready(vm_id, seed.template)
    return None


def at_placement(seed: Seed, vm_id: str, stream: str) -> list[Append]:
    """The source of a VM decided as it is placed, if the seed it deploys from (of the
    stream ``stream``) is ready: what the seeder would decide once it is placed
    (``ready_source``), with a check that the seed's stream is still at the version read
    (an append of no events), so a removal committed meanwhile makes the placement decide
    again. [] if the seed is not ready: the seeder decides once the VM is placed."""
    ready = ready_source(seed, vm_id)
    if ready is None:
        return []
    return [ready, Append(stream, [], seed.version)]


def source_decided(vm_events: Iterable[AnyEvent]) -> bool:
    """Whether a VM's source was decided since it was last placed (in the placement's own
    commit, ``at_placement``): the seeder then has nothing to do for the placement."""
    decided = False
    for event in vm_events:
        if isinstance(event, VmPlaced):
            decided = False
        elif isinstance(event, VmSourceReady):
            decided = True
    return decided


def on_placed(seed: Seed, vm_id: str, vm_snapshot_id: str, pool_id: str) -> list[Append]:
    """A VM was placed: use the seeded template, wait for the seed running, or start one."""
    stream = streams.seed(vm_snapshot_id, pool_id)
    waiting = VmAwaitingTemplate(vm_snapshot_id=vm_snapshot_id, pool_id=pool_id, vm_id=vm_id)
    ready = ready_source(seed, vm_id)
    if ready is not None:
        return [ready]
    if seed.status == CREATING:
        return [Append(stream, [waiting], seed.version)]
    start = TemplateSeedStarted(
        vm_snapshot_id=vm_snapshot_id, pool_id=pool_id,
        template_id=streams.seed_template_id(vm_snapshot_id, pool_id),
        name=template_name(vm_snapshot_id, pool_id),
    )
    return [Append(stream, [start, waiting], seed.version if seed.version else NO_STREAM)]


def from_template(seed: Seed, request: VmDeployRequested) -> Append:
    """A deploy from a seeded template: that template is its source, if it still exists."""
    ready = ready_source(seed, request.vm_id)
    if ready is not None:
        return ready
    return Append(streams.vm(request.vm_id), deploy_failure(
        request, "seed", f"template {request.template_id} no longer exists"))


def failed(started: TemplateSeedStarted, reason: str) -> TemplateSeedFailed:
    return TemplateSeedFailed(vm_snapshot_id=started.vm_snapshot_id, pool_id=started.pool_id,
                              reason=reason)


def removal(seed: Seed, vm_snapshot_id: str, pool_id: str) -> Append | None:
    """What removes a ready template (None if there is none to remove); appended at the
    version read, so a deploy that starts using it meanwhile is not left without it."""
    if seed.status != READY or seed.template is None:
        return None
    return Append(streams.seed(vm_snapshot_id, pool_id),
                  [TemplateRemoved(vm_snapshot_id=vm_snapshot_id, pool_id=pool_id)],
                  seed.version)
