"""The API commands, one module per kind of object; importing registers them."""

from services.gateway.commands import jobs, vms

__all__ = ["jobs", "vms"]
