"""async_jobs: CloudStack's asynchronous jobs, settled by the events of their object."""

from __future__ import annotations

import uuid

from proto.events import AnyEvent, VmDeployFailed, VmDeployRequested, VmStarted
from shared.domain.job import DEPLOY_VM_CMD, FAILED_RESULT_CODE, JobStatus
from shared.eventstore import RecordedEvent
from shared.projections._table import Key, Row, Table


class AsyncJobs:
    table = Table(
        "async_jobs",
        {
            "id": "uuid",
            "account_id": "text",
            "user_id": "text",
            "cmd": "text",
            "instance_type": "text",
            "instance_id": "uuid",
            "status": "smallint",
            "result_code": "integer",
            "error_code": "integer",
            "error_text": "text",
            "created": "timestamptz",
            "completed": "timestamptz",
        },
        ("id",),
    )

    def key(self, event: AnyEvent) -> Key | None:
        job_id = getattr(event, "job_id", None)
        return None if job_id is None else (uuid.UUID(job_id),)

    def evolve(self, row: Row | None, recorded: RecordedEvent, event: AnyEvent) -> Row | None:
        if isinstance(event, VmDeployRequested):
            return {
                "id": uuid.UUID(event.job_id),
                "account_id": event.account_id,
                "user_id": event.user_id,
                "cmd": DEPLOY_VM_CMD,
                "instance_type": "VirtualMachine",
                "instance_id": uuid.UUID(event.vm_id),
                "status": JobStatus.PENDING.value,
                "result_code": 0,
                "error_code": None,
                "error_text": None,
                "created": recorded.recorded_at,
                "completed": None,
            }
        if row is None or row["status"] != JobStatus.PENDING:
            return row
        row = dict(row)
        if isinstance(event, VmStarted):
            row.update(status=JobStatus.SUCCEEDED.value, completed=recorded.recorded_at)
        elif isinstance(event, VmDeployFailed):
            row.update(status=JobStatus.FAILED.value, result_code=FAILED_RESULT_CODE,
                       error_code=event.error_code, error_text=event.reason,
                       completed=recorded.recorded_at)
        return row
