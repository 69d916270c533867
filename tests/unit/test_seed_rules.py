"""Seeding once per snapshot and pool, whatever the race: pure decisions."""

from __future__ import annotations

import pytest

from proto import streams
from proto.events import (
    AnyEvent,
    TemplateRemoved,
    TemplateSeeded,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmAwaitingTemplate,
    VmSourceReady,
)
from shared.domain import seed
from shared.eventstore import ANY_VERSION, NO_STREAM, Append

STARTED = TemplateSeedStarted(vm_snapshot_id="s", pool_id="p", template_id="t", name="n")
SEEDED = TemplateSeeded(vm_snapshot_id="s", pool_id="p", template_id="t", template_ref="vm-9",
                        base_snapshot_ref="snapshot-9", install_path="[ds] n/n.vmdk",
                        task_ids=["task-1"])


def waiting(vm: str) -> VmAwaitingTemplate:
    return VmAwaitingTemplate(vm_snapshot_id="s", pool_id="p", vm_id=vm)


def test_the_first_vm_starts_the_seed_only_if_the_stream_is_new() -> None:
    [append] = seed.at_placement(seed.fold([]), "vm1", "s", "p")
    assert append.stream_id == streams.seed("s", "p")
    assert append.expected_version == NO_STREAM
    start, wait = append.events
    assert isinstance(start, TemplateSeedStarted) and start.name == seed.template_name("s", "p")
    assert start.template_id == streams.seed_template_id("s", "p")
    assert wait == waiting("vm1")


def test_a_vm_arriving_during_the_seed_waits_at_the_version_it_saw() -> None:
    state = seed.fold([STARTED, waiting("vm1")])
    assert (state.status, state.waiters, state.version) == (seed.CREATING, ["vm1"], 2)
    [append] = seed.at_placement(state, "vm2", "s", "p")
    assert append.events == [waiting("vm2")] and append.expected_version == 2


def test_a_ready_seed_is_used_at_once_checked_at_the_version_read() -> None:
    ready, guard = seed.at_placement(seed.fold([STARTED, waiting("vm1"), SEEDED]), "vm3",
                                     "s", "p")
    assert ready.stream_id == streams.vm("vm3") and ready.expected_version == ANY_VERSION
    [source] = ready.events
    assert isinstance(source, VmSourceReady) and source.template_ref == "vm-9"
    # An append of no events: it only checks the seed is still what was read.
    assert guard == Append(streams.seed("s", "p"), [], 3)


def test_after_a_failure_or_removal_the_next_vm_seeds_again() -> None:
    failed = seed.fold([STARTED, waiting("vm1"),
                        TemplateSeedFailed(vm_snapshot_id="s", pool_id="p", reason="full")])
    assert failed.status == seed.ERROR and failed.failure == "full"
    [again] = seed.at_placement(failed, "vm2", "s", "p")
    assert isinstance(again.events[0], TemplateSeedStarted) and again.expected_version == 3
    removed = seed.fold([STARTED, SEEDED, TemplateRemoved(vm_snapshot_id="s", pool_id="p")])
    assert removed.status == seed.DESTROYED and removed.template is None
    [reseed] = seed.at_placement(removed, "vm4", "s", "p")
    assert isinstance(reseed.events[0], TemplateSeedStarted)


def test_waiters_are_those_since_the_last_start() -> None:
    state = seed.fold([STARTED, waiting("old"), TemplateSeedFailed(
        vm_snapshot_id="s", pool_id="p", reason="x"), STARTED, waiting("new")])
    assert state.waiters == ["new"]


def test_a_deploy_from_a_seeded_template_uses_it_only_while_it_is_ready() -> None:
    stream = streams.seed("s", "p")
    ready, guard = seed.of_template(seed.fold([STARTED, SEEDED]), "vm3", "t", stream)
    assert isinstance(ready.events[0], VmSourceReady) and guard == Append(stream, [], 2)
    gone: list[list[AnyEvent]] = [
        [], [STARTED, waiting("vm1")],
        [STARTED, TemplateSeedFailed(vm_snapshot_id="s", pool_id="p", reason="x")],
        [STARTED, SEEDED, TemplateRemoved(vm_snapshot_id="s", pool_id="p")]]
    for events in gone:
        with pytest.raises(seed.TemplateGone, match="template t no longer exists"):
            seed.of_template(seed.fold(events), "vm3", "t", stream)
    with pytest.raises(seed.TemplateGone):
        seed.of_template(seed.Seed(), "vm3", "t", None)
