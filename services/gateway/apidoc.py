"""The API description rendered for its readers, all from the command registry
(``services.gateway.api.COMMANDS``): listApis' entries in CloudStack's shape (what
CloudMonkey's ``sync`` and Marvin's code generator read), the OpenAPI 3 document served at
``/client/openapi.json``, and the Markdown of docs/api.md (``snapdeploy api-docs``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.gateway.api import (
    ADMIN,
    COMMANDS,
    UPSTREAM,
    Command,
    Declaration,
    Field,
    Param,
    Shape,
)

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


# --- OpenAPI 3 -------------------------------------------------------------------------

_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"}, "date": {"type": "string"},
    "integer": {"type": "integer", "format": "int32"},
    "long": {"type": "integer", "format": "int64"}, "boolean": {"type": "boolean"},
    "double": {"type": "number"}, "map": {"type": "object"}, "object": {"type": "object"},
    "responseobject": {"type": "object"},
}


def _field_schema(field: Field) -> dict[str, Any]:
    if field.type in ("list", "set"):
        items = _object_schema(field.fields) if field.fields else {"type": "string"}
        return {"type": "array", "items": items, "description": field.description}
    return {**_FIELD_SCHEMAS[field.type], "description": field.description}


def _object_schema(fields: tuple[Field, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": {f.name: _field_schema(f) for f in fields}}


def _param_schema(param: Param) -> dict[str, Any]:
    if param.type == "uuid":
        return {"type": "string", "format": "uuid"}
    if param.type in ("integer", "long"):
        low, high = param.bounds
        return {"type": "integer", "format": "int32" if param.type == "integer" else "int64",
                "minimum": low, "maximum": high}
    if param.type == "boolean":
        return {"type": "boolean"}
    if param.type == "list":
        return {"type": "string", "maxLength": param.length,
                "description": f"comma-separated {param.items or 'string'}s"}
    return {"type": "string", "maxLength": param.length}


def _answer_schema(cmd: Command, ref: dict[str, Any] | None) -> dict[str, Any]:
    kind = cmd.answered_as
    if kind == "job":
        return {"type": "object", "properties": {
            "id": {"type": "string", "description": "the object's UUID, when it makes one"},
            "jobid": {"type": "string", "description": "the job to follow with "
                      "queryAsyncJobResult"}}}
    if ref is None or cmd.response is None:
        return {"type": "object"}
    if kind == "fields":
        return ref
    if kind == "list":
        return {"type": "object", "description": "{} when nothing matches", "properties": {
            "count": {"type": "integer"},
            cmd.response.key: {"type": "array", "items": ref}}}
    return {"type": "object", "properties": {cmd.response.key: ref}}


def _schema_names(cmds: list[Command]) -> dict[int, str]:
    """A components.schemas name for each shape: its key, made unique."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for cmd in cmds:
        shape = cmd.response
        if shape is None or id(shape) in names:
            continue
        name, n = shape.key, 2
        while name in taken:
            name, n = f"{shape.key}{n}", n + 1
        taken.add(name)
        names[id(shape)] = name
    return names


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every command. CloudStack's API is one URL that a
    ``command`` parameter dispatches, so each command is a path of its own,
    ``/client/api?command=<name>``, whose ``command`` parameter has that one value."""
    cmds = commands()
    names = _schema_names(cmds)
    shapes = {id(c.response): c.response for c in cmds if c.response is not None}
    schemas: dict[str, Any] = {
        names[key]: {**_object_schema(shape.fields), "description": shape.description}
        for key, shape in shapes.items()}
    schemas["Error"] = {"type": "object", "description": "CloudStack's error envelope body",
                        "properties": {
                            "uuidList": {"type": "array", "items": {"type": "string"}},
                            "errorcode": {"type": "integer"},
                            "cserrorcode": {"type": "integer"},
                            "errortext": {"type": "string"}}}
    paths: dict[str, Any] = {}
    for cmd in cmds:
        ref = ({"$ref": f"#/components/schemas/{names[id(cmd.response)]}"}
               if cmd.response is not None else None)
        envelope = f"{cmd.name.lower()}response"
        error = {"description": "refused: the error code as the status (431 a parameter, "
                 "401 the signature, 531 the role, 432 an unknown command, 530 internal)",
                 "content": {"application/json": {"schema": {
                     "type": "object", "properties": {
                         envelope: {"$ref": "#/components/schemas/Error"}}}}}}
        operation = {
            "operationId": cmd.name,
            "summary": cmd.description,
            "description": (f"{cmd.description}\n\nRole: {cmd.role}. Since: {cmd.since}."
                            + (" Asynchronous: answers with a jobid." if cmd.is_async else "")),
            "tags": [cmd.role],
            "parameters": [
                {"name": "command", "in": "query", "required": True,
                 "schema": {"type": "string", "enum": [cmd.name]}},
                {"name": "response", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["json"]}},
                *({"name": p.name, "in": "query", "required": p.required,
                   "description": p.description, "schema": _param_schema(p)}
                  for p in cmd.params)],
            "responses": {
                "200": {"description": "the answer",
                        "content": {"application/json": {"schema": {
                            "type": "object", "properties": {
                                envelope: _answer_schema(cmd, ref)}}}}},
                "default": error},
            "x-isasync": cmd.is_async, "x-since": cmd.since, "x-role": cmd.role,
        }
        paths[f"/client/api?command={cmd.name}"] = {"get": operation}
    return {
        "openapi": "3.0.3",
        "info": {"title": "snapdeploy API", "version": UPSTREAM,
                 "description": "The CloudStack-compatible API of snapdeploy (it follows "
                 f"CloudStack {UPSTREAM}). Every request is signed as CloudStack signs: "
                 "apiKey, then signature = base64(HMAC-SHA1(secret key, the parameters "
                 "sorted by name, lower-cased, URL-encoded)); signatureVersion=3 with "
                 "expires is honoured. POST with a form body works like GET."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "query", "name": "apiKey",
                       "description": "the caller's API key; the request also carries its "
                       "signature"},
            "signature": {"type": "apiKey", "in": "query", "name": "signature",
                          "description": "the request's signature with the secret key"}}},
        "security": [{"apiKey": [], "signature": []}],
    }


# --- Markdown (docs/api.md) ------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _field_lines(fields: tuple[Field, ...], depth: int = 0) -> list[str]:
    lines = []
    for f in fields:
        lines.append(f"{'  ' * depth}- `{f.name}` ({f.type}): {f.description}")
        lines.extend(_field_lines(f.fields, depth + 1))
    return lines


def markdown() -> str:
    """docs/api.md: every command, its parameters and its response fields."""
    cmds = commands()
    out = [
        "# snapdeploy's API",
        "",
        "Generated from the command registry by `snapdeploy api-docs`; do not edit by hand",
        "(a test checks it is current). The same description answers `listApis` and is",
        f"served as OpenAPI 3 at `GET {OPENAPI_PATH}` (no signature needed).",
        "",
        "Every command is `GET` or `POST /client/api?command=<name>&...`, signed as",
        f"CloudStack {UPSTREAM} signs. `since` says which commands and parameters are",
        f"CloudStack's (`{UPSTREAM}`) and which are snapdeploy's own (`snapdeploy`).",
        "Parameters a command does not take are ignored. A user sees (in `listApis`) and may",
        "call only the commands of role `user`; an admin, all.",
        "",
        "| command | role | async | since | description |",
        "|---|---|---|---|---|",
    ]
    out += [f"| [`{c.name}`](#{c.name.lower()}) | {c.role} | {'yes' if c.is_async else 'no'} "
            f"| {c.since} | {_cell(c.description)} |" for c in cmds]
    for c in cmds:
        out += ["", f"## {c.name}", "", c.description, "",
                f"Role: {c.role}. Asynchronous: {'yes' if c.is_async else 'no'}. "
                f"Since: {c.since}."]
        related = command_related(c)
        if related:
            out += ["", "Related: " + ", ".join(f"`{r}`" for r in related) + "."]
        out += [""]
        if c.params:
            out += ["| parameter | type | required | length | since | description |",
                    "|---|---|---|---|---|---|"]
            for p in c.params:
                text = p.description
                if p.type in ("integer", "long") and (p.minimum is not None
                                                      or p.maximum is not None):
                    low, high = p.bounds
                    text += f" ({low}..{high})"
                out.append(f"| `{p.name}` | {p.type} | {'yes' if p.required else 'no'} "
                           f"| {p.length} | {p.since} | {_cell(text)} |")
        else:
            out.append("No parameters.")
        if c.response is not None:
            how = {"list": f"a list under `{c.response.key}` with `count`",
                   "object": f"under `{c.response.key}`", "fields": "its fields",
                   "job": f"`jobid` (the job's result: `{c.response.key}`)"}[c.answered_as]
            out += ["", f"Answers {c.response.description}, as {how}:", ""]
            out += _field_lines(c.response.fields)
    return "\n".join(out) + "\n"
