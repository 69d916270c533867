"""What a consumer writes when it gives up on a message: pure rules, no I/O."""

from __future__ import annotations

from proto.events import (
    AnyEvent,
    JobCompleted,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmDeployFailed,
    VmDeployRequested,
    VmPlaced,
    VmPowerRequested,
    VmSourceReady,
    VmStarted,
    VmStopped,
)
from shared.domain.abandon import abandoned

REQUEST = VmDeployRequested(
    vm_id="vm-1", job_id="job-1", account_id="acct", user_id="user", name="web-1",
    display_name="web-1", instance_name="i-acct-vm-1-VM", zone_id="zone", service_offering_id="so",
    cpu_number=1, cpu_speed=500, memory_mb=512, pool_id="pool", network_ids=[],
    vm_snapshot_id="snap")
PLACED = VmPlaced(vm_id="vm-1", host_id="host", pool_id="pool", cpu_number=1, cpu_speed=500,
                  memory_mb=512)
READY = VmSourceReady(vm_id="vm-1", pool_id="pool", template_id="tpl", template_ref="vm-9",
                      base_snapshot_ref="snapshot-9")


def test_a_deploy_under_way_ends_in_error_at_the_step_that_gave_up() -> None:
    cases: list[tuple[list[AnyEvent], str]] = [
        ([REQUEST], "placement"), ([REQUEST, PLACED], "seed"), ([REQUEST, PLACED, READY], "clone")]
    for history, step in cases:
        events = abandoned(history, history[-1], "gave up after 20 attempts: TimeoutError")
        failed, job = events
        assert isinstance(failed, VmDeployFailed) and failed.step == step
        assert "web-1" in failed.reason and "TimeoutError" in failed.reason
        assert isinstance(job, JobCompleted) and job.job_id == "job-1" and not job.succeeded
        assert job.error_code == 530


def test_a_deploy_already_settled_needs_nothing() -> None:
    started = VmStarted(vm_id="vm-1", host_id="host", hypervisor_ref="vm-10", task_ids=[])
    assert abandoned([REQUEST, PLACED, READY, started], READY, "late") == []
    failed = VmDeployFailed(vm_id="vm-1", step="seed", reason="x", error_code=530)
    assert abandoned([REQUEST, PLACED, failed], PLACED, "late") == []


def test_a_request_with_a_job_fails_its_job() -> None:
    power = VmPowerRequested(vm_id="vm-1", job_id="job-2", action="stop")
    [job] = abandoned([REQUEST, power], power, "vCenter did not answer")
    assert isinstance(job, JobCompleted) and job.job_id == "job-2" and not job.succeeded
    assert job.error_text == "vCenter did not answer"


def test_a_seed_fails_so_its_waiting_vms_fail_with_it() -> None:
    started = TemplateSeedStarted(vm_snapshot_id="snap", pool_id="pool", template_id="tpl",
                                  name="seed-1")
    [failed] = abandoned([started], started, "timeout")
    assert isinstance(failed, TemplateSeedFailed) and failed.pool_id == "pool"


def test_an_event_that_starts_no_work_needs_nothing() -> None:
    stopped = VmStopped(vm_id="vm-1")
    assert abandoned([stopped], stopped, "x") == []
