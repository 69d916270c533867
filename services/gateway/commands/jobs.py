"""CloudStack's asynchronous job commands."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from proto import streams
from services.gateway import views
from services.gateway.api import Caller, Context, Params, command, listing
from shared.domain.access import visible_to
from shared.domain.job import CREATE_VM_SNAPSHOT_CMD, VM_COMMANDS, VOLUME_COMMANDS, JobStatus
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import RecordedEvent
from shared.projections import AsyncJobs, Catalog, Projection, Row, VmInstances, fold

_JOBS = AsyncJobs()
_VMS = VmInstances()
_CATALOG = Catalog()


def _fold(projection: Projection, records: list[RecordedEvent]) -> dict[Any, Row]:
    rows, _ = fold(projection, {}, [(r, r.event()) for r in records])
    return rows


async def job_from_stream(ctx: Context, job_id: str) -> tuple[dict[str, Any], list[RecordedEvent]]:
    """A job folded straight from the store, so a job id the gateway has returned is
    visible at once, whatever the projector's lag; with the events of its stream."""
    async with ctx.store.pool.acquire() as conn:
        stream_id = await conn.fetchval(
            "SELECT stream_id FROM events WHERE data ->> 'job_id' = $1 AND data ? 'job_id'"
            " ORDER BY position LIMIT 1", job_id)
    if stream_id is None:
        return {}, []
    records = await ctx.store.read_stream(stream_id)
    return _fold(_JOBS, records).get((uuid.UUID(job_id),), {}), records


async def job_result(ctx: Context, job: dict[str, Any],
                     records: list[RecordedEvent]) -> dict[str, Any] | None:
    if job["status"] != JobStatus.SUCCEEDED:
        return None
    if job["cmd"] in VM_COMMANDS:
        vm = next(iter(_fold(_VMS, records).values()), None)
        return {"virtualmachine": views.vm(vm)} if vm else None
    if job["cmd"] in VOLUME_COMMANDS:
        volume_id = records[0].stream_id.removeprefix("volume-")
        row = _fold(_CATALOG, records).get(("volume", volume_id))
        if row is None:
            return None
        return {"volume": views.volume({**row, "data": msgspec.json.decode(row["data"])})}
    if job["cmd"] == CREATE_VM_SNAPSHOT_CMD:
        snapshot_id = str(job["instance_id"])
        rows = _fold(_CATALOG, await ctx.store.read_stream(streams.vm_snapshot(snapshot_id)))
        row = rows.get(("vmsnapshot", snapshot_id))
        if row is None:
            return None
        return {"vmsnapshot": views.vm_snapshot({**row, "data": msgspec.json.decode(
            row["data"])}, current=True)}
    return {"success": True}


@command("queryAsyncJobResult")
async def query_async_job_result(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    job_id = params.uuid("jobid", required=True)
    assert job_id is not None
    job, records = await job_from_stream(ctx, job_id)
    if not job or not visible_to(job["account_id"], caller.account_id, caller.is_admin):
        raise ApiError(PARAM_ERROR, f"invalid parameter jobid: no job {job_id} is visible "
                       "to your account")
    if job["status"] != JobStatus.PENDING:
        # Read your writes: once a job reports done, the next list call shows its effects.
        await ctx.read_models_reach(records[-1].position)
    return views.job(job, await job_result(ctx, job, records))


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
    return listing("asyncjobs", [views.job(dict(r), None) for r in rows])
