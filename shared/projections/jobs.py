"""async_jobs: CloudStack's asynchronous jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto.events import AnyEvent, JobCompleted, JobSubmitted
from shared.domain.job import FAILED_RESULT_CODE, JobStatus
from shared.projections._table import Key, Row, Table, parse_uuid

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import RecordedEvent


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

    def keys(self, event: AnyEvent) -> list[Key]:
        if isinstance(event, _JOB_EVENTS):
            return [(parse_uuid(event.job_id),)]
        return []

    def made_anew(self, event: AnyEvent) -> bool:
        return isinstance(event, JobSubmitted)

    def evolve(
        self, row: Row | None, key: Key, recorded: RecordedEvent, event: AnyEvent
    ) -> Row | None:
        if isinstance(event, JobSubmitted):
            return {
                "id": key[0],
                "account_id": event.account_id,
                "user_id": event.user_id,
                "cmd": event.cmd,
                "instance_type": event.instance_type,
                "instance_id": parse_uuid(event.instance_id),
                "status": _PENDING,
                "result_code": 0,
                "error_code": None,
                "error_text": None,
                "created": recorded.recorded_at,
                "completed": None,
            }
        if row is None or row["status"] != _PENDING or not isinstance(event, JobCompleted):
            return row
        if event.succeeded:
            return {**row, "status": _SUCCEEDED, "completed": recorded.recorded_at}
        return {**row, "status": _FAILED, "result_code": FAILED_RESULT_CODE,
                "error_code": event.error_code, "error_text": event.error_text,
                "completed": recorded.recorded_at}


# Looked up once: a rebuild asks them of every job event (a union's isinstance and an enum's
# ``value`` each cost more than the rest of the work on it).
_JOB_EVENTS = (JobSubmitted, JobCompleted)
_PENDING, _SUCCEEDED, _FAILED = (s.value for s in (JobStatus.PENDING, JobStatus.SUCCEEDED,
                                                    JobStatus.FAILED))
