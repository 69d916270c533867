"""CloudStack's asynchronous job commands."""

from __future__ import annotations

import uuid
from typing import Any

from services.gateway import views
from services.gateway.api import (
    PARAM_ERROR,
    ApiError,
    Caller,
    Context,
    Params,
    command,
    listing,
)
from shared.domain.job import JobStatus
from shared.projections import AsyncJobs, VmInstances, fold

_JOBS = AsyncJobs()
_VMS = VmInstances()


async def job_from_stream(ctx: Context, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job and its VM folded straight from the store, so a job id the gateway has
    returned is visible at once, whatever the projector's lag."""
    async with ctx.store.pool.acquire() as conn:
        stream_id = await conn.fetchval(
            "SELECT stream_id FROM events WHERE data ->> 'job_id' = $1 AND data ? 'job_id'"
            " ORDER BY position LIMIT 1", job_id)
    if stream_id is None:
        return {}, {}
    events = [(rec, rec.event()) for rec in await ctx.store.read_stream(stream_id)]
    jobs, _ = fold(_JOBS, {}, events)
    vms, _ = fold(_VMS, {}, events)
    job = jobs.get((uuid.UUID(job_id),), {})
    vm = next(iter(vms.values()), {})
    return job, vm


@command("queryAsyncJobResult")
async def query_async_job_result(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    job_id = params.uuid("jobid", required=True)
    assert job_id is not None
    job, vm = await job_from_stream(ctx, job_id)
    if not job or (not caller.is_admin and job["account_id"] != caller.account_id):
        raise ApiError(PARAM_ERROR, f"invalid parameter jobid: no job {job_id} is visible "
                       "to your account")
    result = None
    if job["status"] == JobStatus.SUCCEEDED and vm:
        result = {"virtualmachine": views.vm(vm)}
    return views.job(job, caller, result)


@command("listAsyncJobs")
async def list_async_jobs(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    where, args = ["true"], list[object]()
    if not caller.is_admin:
        args.append(caller.account_id)
        where.append(f"account_id = ${len(args)}")
    sql = f"SELECT * FROM async_jobs WHERE {' AND '.join(where)} ORDER BY created DESC, id"
    page = params.page()
    if page is not None:
        args.extend(page)
        sql += f" LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    async with ctx.store.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return listing("asyncjobs", [views.job(dict(r), caller, None) for r in rows])
