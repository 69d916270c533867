"""Seeding a VM snapshot as a template on its pool: once, however many deploys race for it.

The stream ``spoolref-<snapshot>-<pool>`` holds one seed's life: TemplateSeedStarted, the
VMs waiting for it, then TemplateSeeded or TemplateSeedFailed (after a failure, or once the
template was removed, the next deploy starts a new seed). A waiter is appended at the
version its decision saw, so it can never slip in after the outcome unnoticed.

The planner decides a VM's source as it places it, in the placement's own commit
(``at_placement``): the seed's template if it is ready, else the VM waits for the seed being
made, else it starts one; every one of these is appended at the seed stream's version read,
so a seed started, finished or removed meanwhile makes the placement decide again. A deploy
from a seeded template uses it if it is still there (``of_template``). A seed is never
removed while a VM depends on it: ``removal`` is only decided for a deleted snapshot that no
VM not expunged was deployed from (``Store.snapshot_uses``), and at the seed stream's version
read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from proto import streams
from proto.events import (
    Event,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmAwaitingTemplate,
    VmSourceReady,
)
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


def fold(events: Sequence[Event], start: Seed | None = None) -> Seed:
    """The seed after ``events``, from ``start`` (what the stream's earlier events made of
    it, left as it is) or from nothing."""
    seed = replace(start, waiters=list(start.waiters)) if start else Seed()
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


def at_placement(seed: Seed, vm_id: str, vm_snapshot_id: str, pool_id: str) -> list[Append]:
    """The source of a VM deployed from a snapshot, decided as it is placed: the seeded
    template if it is ready, else a wait for the seed being made, else a new seed with the VM
    waiting for it. Each is appended at the version of the seed stream read (a ready
    template with an append of no events, which only checks that version)."""
    stream = streams.seed(vm_snapshot_id, pool_id)
    ready = ready_source(seed, vm_id)
    if ready is not None:
        return [ready, Append(stream, [], seed.version)]
    waiting = VmAwaitingTemplate(vm_snapshot_id=vm_snapshot_id, pool_id=pool_id, vm_id=vm_id)
    if seed.status == CREATING:
        return [Append(stream, [waiting], seed.version)]
    start = TemplateSeedStarted(
        vm_snapshot_id=vm_snapshot_id, pool_id=pool_id,
        template_id=streams.seed_template_id(vm_snapshot_id, pool_id),
        name=template_name(vm_snapshot_id, pool_id),
    )
    return [Append(stream, [start, waiting], seed.version if seed.version else NO_STREAM)]


class TemplateGone(Exception):
    """A deploy names a seeded template that no longer exists."""

    def __init__(self, template_id: str | None) -> None:
        super().__init__(f"template {template_id} no longer exists")


def of_template(seed: Seed, vm_id: str, template_id: str | None,
                stream: str | None) -> list[Append]:
    """The source of a VM deployed from a seeded template (of the seed stream ``stream``,
    None if no seed made it): that template, checked at the seed stream's version read.

    Raises:
        TemplateGone: the template is not (or no longer) ready.
    """
    ready = ready_source(seed, vm_id)
    if ready is None or stream is None:
        raise TemplateGone(template_id)
    return [ready, Append(stream, [], seed.version)]


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
