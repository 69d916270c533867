"""What ends a piece of work that cannot be done: the events written when a consumer gives
up on a message after its last delivery attempt, so no VM or job waits forever."""

from __future__ import annotations

from proto.events import (
    AnyEvent,
    Event,
    JobCompleted,
    TemplateSeedFailed,
    TemplateSeedStarted,
    VmDeployFailed,
    VmDeployRequested,
    VmPlaced,
    VmSourceReady,
    VmStarted,
)
from shared.domain.job import FAILED_RESULT_CODE
from shared.domain.vm import deploy_failure, deploy_request

# The deploy step each message of the deploy pipeline stands for.
DEPLOY_STEPS: dict[type[AnyEvent], str] = {
    VmDeployRequested: "placement",
    VmPlaced: "seed",
    VmSourceReady: "clone",
}


def abandoned(history: list[AnyEvent], event: AnyEvent, reason: str) -> list[Event]:
    """The events that settle ``event`` of the stream ``history`` as failed.

    A deploy still under way ends in Error; a request with a job fails its job; a seed
    fails (its waiting VMs then fail with it). Anything else needs nothing: [].
    """
    step = DEPLOY_STEPS.get(type(event))
    if step is not None:
        request = deploy_request(history)
        finished = any(isinstance(e, VmStarted | VmDeployFailed) for e in history)
        if request is None or finished:
            return []
        return deploy_failure(request, step, reason)
    if isinstance(event, TemplateSeedStarted):
        return [TemplateSeedFailed(vm_snapshot_id=event.vm_snapshot_id, pool_id=event.pool_id,
                                   reason=reason)]
    job_id = getattr(event, "job_id", None)
    if isinstance(job_id, str):
        return [JobCompleted(job_id=job_id, succeeded=False, error_code=FAILED_RESULT_CODE,
                             error_text=reason)]
    return []
