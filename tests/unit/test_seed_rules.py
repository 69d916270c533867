"""Seeding once per snapshot and pool, whatever the race: pure decisions."""

from __future__ import annotations

from proto import streams
from proto.events import (
    AnyEvent,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmAwaitingTemplate,
    VmPlaced,
    VmSourceReady,
)
from shared.domain import seed
from shared.eventstore import NO_STREAM, Append

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


def test_a_ready_seed_gives_the_source_as_the_vm_is_placed_checked_at_its_version() -> None:
    state = seed.fold([STARTED, waiting("vm1"), SEEDED])
    ready, guard = seed.at_placement(state, "vm3", streams.seed("s", "p"))
    # What the seeder would decide once the VM is placed, and no more.
    assert [ready] == seed.on_placed(state, "vm3", "s", "p")
    assert guard == Append(streams.seed("s", "p"), [], 3)
    not_ready: list[list[AnyEvent]] = [
        [], [STARTED, waiting("vm1")],
        [STARTED, TemplateSeedFailed(vm_snapshot_id="s", pool_id="p", reason="x")],
        [STARTED, SEEDED, TemplateRemoved(vm_snapshot_id="s", pool_id="p")]]
    for events in not_ready:
        assert seed.at_placement(seed.fold(events), "vm3", streams.seed("s", "p")) == []


def test_a_source_counts_as_decided_only_after_the_last_placement() -> None:
    placed = VmPlaced(vm_id="vm3", host_id="h", pool_id="p", cpu_number=1, cpu_speed=1000,
                      memory_mb=512)
    [ready] = seed.on_placed(seed.fold([STARTED, SEEDED]), "vm3", "s", "p").pop().events
    assert isinstance(ready, VmSourceReady)
    assert not seed.source_decided([])
    assert not seed.source_decided([placed])
    assert seed.source_decided([placed, ready])
    assert not seed.source_decided([placed, ready, placed])
