"""Seeding once per snapshot and pool, whatever the race: pure decisions."""

from __future__ import annotations

from proto import streams
from proto.events import (
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmAwaitingTemplate,
    VmSourceReady,
)
from shared.domain import seed
from shared.eventstore import NO_STREAM

STARTED = TemplateSeedStarted(vm_snapshot_id="s", pool_id="p", template_id="t", name="n")
SEEDED = TemplateSeeded(vm_snapshot_id="s", pool_id="p", template_id="t", template_ref="vm-9",
                        base_snapshot_ref="snapshot-9", install_path="[ds] n/n.vmdk",
                        task_ids=["task-1"])


def waiting(vm: str) -> VmAwaitingTemplate:
    return VmAwaitingTemplate(vm_snapshot_id="s", pool_id="p", vm_id=vm)


def test_the_first_vm_starts_the_seed_only_if_the_stream_is_new() -> None:
    [append] = seed.on_placed(seed.fold([]), "vm1", "s", "p")
    assert append.stream_id == streams.seed("s", "p")
    assert append.expected_version == NO_STREAM
    start, wait = append.events
    assert isinstance(start, TemplateSeedStarted) and start.name == seed.template_name("s", "p")
    assert start.template_id == streams.seed_template_id("s", "p")
    assert wait == waiting("vm1")


def test_a_vm_arriving_during_the_seed_waits_at_the_version_it_saw() -> None:
    state = seed.fold([STARTED, waiting("vm1")])
    assert (state.status, state.waiters, state.version) == (seed.CREATING, ["vm1"], 2)
    [append] = seed.on_placed(state, "vm2", "s", "p")
    assert append.events == [waiting("vm2")] and append.expected_version == 2


def test_a_ready_seed_is_used_at_once() -> None:
    [append] = seed.on_placed(seed.fold([STARTED, waiting("vm1"), SEEDED]), "vm3", "s", "p")
    assert append.stream_id == streams.vm("vm3")
    [ready] = append.events
    assert isinstance(ready, VmSourceReady) and ready.template_ref == "vm-9"


def test_after_a_failure_or_removal_the_next_vm_seeds_again() -> None:
    failed = seed.fold([STARTED, waiting("vm1"),
                        TemplateSeedFailed(vm_snapshot_id="s", pool_id="p", reason="full")])
    assert failed.status == seed.ERROR and failed.failure == "full"
    [again] = seed.on_placed(failed, "vm2", "s", "p")
    assert isinstance(again.events[0], TemplateSeedStarted) and again.expected_version == 3
    removed = seed.fold([STARTED, SEEDED, TemplateRemoved(vm_snapshot_id="s", pool_id="p")])
    assert removed.status == seed.DESTROYED and removed.template is None
    [reseed] = seed.on_placed(removed, "vm4", "s", "p")
    assert isinstance(reseed.events[0], TemplateSeedStarted)


def test_waiters_are_those_since_the_last_start() -> None:
    state = seed.fold([STARTED, waiting("old"), TemplateSeedFailed(
        vm_snapshot_id="s", pool_id="p", reason="x"), STARTED, waiting("new")])
    assert state.waiters == ["new"]
