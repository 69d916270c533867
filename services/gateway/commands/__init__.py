"""The API commands, one module per kind of object; importing registers them."""

from services.gateway.commands import (
    accounts,
    catalog,
    discovery,
    events,
    jobs,
    limits,
    snapshots,
    templates,
    vms,
    volumes,
)

__all__ = ["accounts", "catalog", "discovery", "events", "jobs", "limits", "snapshots", "templates",
           "vms", "volumes"]
