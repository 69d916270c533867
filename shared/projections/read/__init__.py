"""The read side's query API: what the projections hold, as typed views.

Everything that shows state to a client (the gateway's list and describe commands, a web
console) reads through ``ReadModels``; nothing above it runs SQL against the read-model
tables. Views are frozen ``msgspec`` Structs, so a caller can also encode them as they are.
Decisions never read here: a deploy's checks and the limits decision load what they decide
on from the event store (``shared.eventstore``).

Who sees what is decided here, once, by ``shared.domain.access.visible_to``: every query
for things that belong to an account takes the ``Viewer`` asking, and a thing the viewer
may not see is answered exactly as a thing that does not exist (absent from a list, None
from a lookup). SQL narrows the rows by owner first (so pages and totals count only what
the viewer sees); the rule itself is applied to every row before it is returned.

Two reads fold events straight from the store instead of reading the tables, because their
callers must see what was appended a moment ago whatever the projector's lag: a job with
its result (``job``), and the template a seed produced (``template_from_stream``).
"""

from shared.projections.read._progress import PROJECTED_CHANNEL, Progress
from shared.projections.read._reader import ReadModels, template_from_stream
from shared.projections.read._views import (
    Account,
    AuditEvent,
    DiskOffering,
    Host,
    Job,
    JobWithResult,
    Network,
    Nic,
    Page,
    Paging,
    Pool,
    ServiceOffering,
    SnapshotDisk,
    Template,
    User,
    Viewer,
    Vm,
    VmSnapshot,
    Volume,
    Zone,
)

__all__ = [
    "PROJECTED_CHANNEL",
    "Account",
    "AuditEvent",
    "DiskOffering",
    "Host",
    "Job",
    "JobWithResult",
    "Network",
    "Nic",
    "Page",
    "Paging",
    "Pool",
    "Progress",
    "ReadModels",
    "ServiceOffering",
    "SnapshotDisk",
    "Template",
    "User",
    "Viewer",
    "Vm",
    "VmSnapshot",
    "Volume",
    "Zone",
    "template_from_stream",
]
