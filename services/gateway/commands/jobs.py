"""CloudStack's asynchronous job commands."""

from __future__ import annotations

from typing import Any

from services.gateway import schema, views
from services.gateway.api import PAGING, Caller, Context, Param, Params, command, listing
from shared.domain.job import JobStatus
from shared.errors import PARAM_ERROR, ApiError


@command("queryAsyncJobResult", description="Retrieves the current status of an asynchronous "
         "job; once it reports done, the next list call shows its effects.",
         response=schema.JOB, answer="fields", params=(
             Param("jobid", "uuid", "the ID of the asynchronous job", required=True,
                   entity=schema.JOB),
         ))
async def query_async_job_result(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    job_id = params.uuid("jobid")
    assert job_id is not None
    found = await ctx.read.job(caller.viewer, job_id)
    if found is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter jobid: no job {job_id} is visible "
                       "to your account")
    if found.job.status != JobStatus.PENDING:
        # Read your writes: once a job reports done, the next list call shows its effects.
        await ctx.read.reach(found.position)
    names = await ctx.read.names(views.ids_of([found.result] if found.result else []))
    return views.job(found.job, views.job_result(found.job, found.result, names))


@command("listAsyncJobs", description="Lists the asynchronous jobs of the caller's account "
         "(every account's for an admin).", response=schema.JOB, params=PAGING)
async def list_async_jobs(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    found = await ctx.read.jobs(caller.viewer, paging=params.page())
    return listing("asyncjobs", [views.job(j) for j in found.items], found.total)
