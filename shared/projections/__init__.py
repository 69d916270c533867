"""Read models projected from the event stream, and the runner that keeps them current."""

from shared.projections._runner import CHECKPOINT, Projector, fold
from shared.projections._table import Projection, Row, Table
from shared.projections.catalog import Catalog
from shared.projections.jobs import AsyncJobs
from shared.projections.spool_refs import SnapshotPoolRefs
from shared.projections.vms import VmInstances

ALL: tuple[Projection, ...] = (VmInstances(), AsyncJobs(), SnapshotPoolRefs(), Catalog())

__all__ = [
    "ALL",
    "CHECKPOINT",
    "AsyncJobs",
    "Catalog",
    "Projection",
    "Projector",
    "Row",
    "SnapshotPoolRefs",
    "Table",
    "VmInstances",
    "fold",
]
