"""The API description rendered for its readers, all from the command registry
(``services.gateway.api.COMMANDS``): listApis' entries in CloudStack's shape (what
CloudMonkey's ``sync`` and Marvin's code generator read), the OpenAPI 3 document served at
``/client/openapi.json``, and the Markdown of docs/api.md (``snapdeploy api-docs``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.gateway.api import ADMIN, COMMANDS, Command, Declaration, Field, Param, Shape

OPENAPI_PATH = "/client/openapi.json"


def commands() -> list[Command]:
    """Every registered command (importing the command modules registers them), by name."""
    import services.gateway.commands  # noqa: F401

    return sorted(COMMANDS.values(), key=lambda c: c.name)


def answering_with(shape: Shape) -> list[str]:
    """The names of the commands that answer with ``shape``."""
    return [c.name for c in commands() if c.response is shape]


def param_related(param: Param) -> list[str]:
    """The commands related to a parameter: those answering with the object it names (as
    CloudStack relates a parameter's entity type), then any it declares."""
    found = answering_with(param.entity) if param.entity is not None else []
    return found + [r for r in param.related if r not in found]


def command_related(cmd: Declaration) -> list[str]:
    """The other commands answering with the same object (none for a success answer)."""
    if cmd.response is None or not cmd.response.relates:
        return []
    return [name for name in answering_with(cmd.response) if name != cmd.name]


def _field_entry(field: Field) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": field.name, "description": field.description,
                             "type": field.type}
    if field.fields:
        entry["response"] = [_field_entry(f) for f in field.fields]
    return entry


def _param_entry(param: Param) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": param.name, "description": param.description,
                             "type": param.type, "length": param.length,
                             "required": param.required, "since": param.since}
    related = param_related(param)
    if related:  # CloudStack leaves it out when a parameter names nothing listable
        entry["related"] = ",".join(related)
    return entry


def api_entry(cmd: Declaration) -> dict[str, Any]:
    """One command as listApis answers it."""
    entry: dict[str, Any] = {
        "name": cmd.name, "description": cmd.description, "isasync": cmd.is_async,
        "since": cmd.since,
        "type": cmd.response.key if cmd.response else "",
        "params": [_param_entry(p) for p in cmd.params],
        "response": [_field_entry(f) for f in cmd.response.fields] if cmd.response else [],
    }
    related = command_related(cmd)
    if related:
        entry["related"] = ",".join(related)
    return entry


def visible(cmds: Iterable[Command], is_admin: bool) -> list[Command]:
    """The commands a caller's role may call (a user does not see admin commands)."""
    return [c for c in cmds if is_admin or c.role != ADMIN]
