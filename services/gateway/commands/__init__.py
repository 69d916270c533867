"""The API commands, one module per kind of object; importing registers them."""

from services.gateway.commands import (
    accounts,
    catalog,
    directory,
    discovery,
    events,
    features,
    jobs,
    limits,
    snapshots,
    templates,
    vms,
    volumes,
)

__all__ = ["accounts", "catalog", "directory", "discovery", "events", "features", "jobs", "limits",
           "snapshots", "templates", "vms", "volumes"]
