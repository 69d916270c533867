"""The API commands, one module per kind of object; importing registers them."""

from services.gateway.commands import (
    accounts,
    catalog,
    events,
    jobs,
    snapshots,
    templates,
    vms,
    volumes,
)

__all__ = ["accounts", "catalog", "events", "jobs", "snapshots", "templates", "vms", "volumes"]
