"""The one API description: every command declared in its registration, every parameter a
handler reads declared with the type it is read as, and listApis answering from it what
CloudStack's own readers of listApis read.

The readers checked, field by field:
- CloudMonkey's ``sync`` (apache/cloudstack-cloudmonkey, ``config/cache.go``,
  ``UpdateCache``): the answer's ``count`` and ``api``; per api ``name``, ``isasync`` (a
  boolean), ``description`` (a string), ``params`` and ``response`` (lists); per parameter
  ``name``, ``type``, ``description`` (strings), ``required`` (a boolean), ``related`` (a
  comma-separated string when present); per response field ``name``.
- Marvin's code generator (apache/cloudstack, ``tools/marvin/marvin/codegenerator.py``,
  ``loadCmdFromJSON`` and ``constructResponseFromJSON``): ``listapisresponse`` with
  ``count``; per api ``name``, ``description``, ``isasync``, ``params`` (``name``,
  ``required``, ``description``, ``type``) and ``response`` (``name``, ``description``,
  ``type``, and for a list, map or set its nested ``response``); the names become Python
  attributes of the generated classes, so each is an identifier.
- CloudStack's own answer (``ApiDiscoveryResponse``, ``ApiParameterResponse``,
  ``ApiResponseResponse``): ``since`` and ``related`` strings, ``length`` an integer.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway import apidoc
from services.gateway.api import (
    ADMIN,
    COMMANDS,
    FIELD_TYPES,
    PARAM_TYPES,
    ROLES,
    Caller,
    Command,
    Context,
    Declaration,
    DeclarationError,
    Param,
    Params,
)
from shared.errors import ApiError
from shared.eventstore import EventStore

ROOT = Path(__file__).resolve().parents[2]
COMMANDS_DIR = ROOT / "services" / "gateway" / "commands"
ADMIN_CALLER = Caller("a", "admin", "u", "admin", "admin")
USER_CALLER = Caller("b", "alice", "v", "alice", "user")

# Params accessor -> the declared types it may read.
ACCESSORS = {"text": {"string", "date"}, "uuid": {"uuid"}, "uuids": {"list"},
             "boolean": {"boolean"}, "integer": {"integer", "long"}, "has": PARAM_TYPES}


def all_commands() -> list[Command]:
    return apidoc.commands()


async def list_apis(caller: Caller, **values: str) -> dict[str, Any]:
    """listApis as its HTTP envelope carries it (the handler does not touch the store)."""
    ctx = Context(store=cast(EventStore, None))
    body = await COMMANDS["listapis"].run(ctx, Params("listApis", values), caller)
    return cast(dict[str, Any], json.loads(json.dumps({"listapisresponse": body})))


# --- the registry -----------------------------------------------------------------------

@pytest.mark.parametrize("cmd", all_commands(), ids=lambda c: c.name)
def test_every_command_is_declared(cmd: Command) -> None:
    assert cmd.declared, f"{cmd.name} is registered without params=(...)"
    assert cmd.description.strip(), f"{cmd.name} has no description"
    assert cmd.response is not None, f"{cmd.name} declares no response object"
    assert cmd.role in ROLES
    assert cmd.since
    for param in cmd.params:
        assert param.description.strip(), f"{cmd.name} {param.name}: no description"
        assert param.type in PARAM_TYPES
        assert param.length > 0
        if param.type == "list":
            assert param.items, f"{cmd.name} {param.name}: a list says its items' type"


def _reads(tree: ast.Module) -> tuple[dict[str, list[tuple[str, str | None, int]]],
                                      dict[str, set[str]]]:
    """Per function of a module: its reads ``params.<accessor>(<name>)`` and the names of
    the functions it calls."""
    reads: dict[str, list[tuple[str, str | None, int]]] = {}
    calls: dict[str, set[str]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        reads[fn.name], calls[fn.name] = [], set()
        # ``for name in ("a", "b"): params.has(name)`` reads both
        loops = {node.target.id: [str(cast(ast.Constant, e).value) for e in node.iter.elts]
                 for node in ast.walk(fn)
                 if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                 and isinstance(node.iter, ast.Tuple)
                 and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                         for e in node.iter.elts)}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id == "params"):
                if func.attr == "page":
                    reads[fn.name] += [("integer", "page", node.lineno),
                                       ("integer", "pagesize", node.lineno)]
                    continue
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Name) and arg.id in loops:
                    reads[fn.name] += [(func.attr, v, node.lineno) for v in loops[arg.id]]
                    continue
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(
                    arg.value, str) else None
                reads[fn.name].append((func.attr, name, node.lineno))
            elif isinstance(func, ast.Name):
                calls[fn.name].add(func.id)
            elif isinstance(func, ast.Attribute):
                calls[fn.name].add(func.attr)
    return reads, calls


def test_handlers_read_only_what_they_declare() -> None:
    """A static check over every command module: each ``params.<accessor>("name")`` a
    handler reads, itself or through the functions it calls (in any command module), is
    declared by that command with a type the accessor reads. Names are literals."""
    modules = {path.stem: _reads(ast.parse(path.read_text()))
               for path in sorted(COMMANDS_DIR.glob("*.py"))}
    problems = []
    for cmd in all_commands():
        assert cmd.handler is not None
        home = cmd.handler.__module__.rsplit(".", 1)[-1]
        seen: set[tuple[str, str]] = set()
        todo = [(home, cmd.handler.__name__)]
        while todo:
            module, fn = todo.pop()
            if (module, fn) in seen:
                continue
            seen.add((module, fn))
            reads, calls = modules[module]
            for accessor, name, line in reads.get(fn, []):
                where = f"{cmd.name} ({module}.py:{line})"
                if accessor not in ACCESSORS:
                    problems.append(f"{where}: params.{accessor} is not an accessor")
                elif name is None:
                    problems.append(f"{where}: params.{accessor} with a name that is not "
                                    "a literal")
                elif (param := cmd.param(name)) is None:
                    problems.append(f"{where}: reads {name}, not declared")
                elif param.type not in ACCESSORS[accessor]:
                    problems.append(f"{where}: reads {name} with params.{accessor}, "
                                    f"declared {param.type}")
            for callee in calls.get(fn, ()):
                # the module's own function first, else one of that name elsewhere
                owners = ([module] if callee in modules[module][0] else
                          [m for m, (r, _) in modules.items() if callee in r])
                todo += [(m, callee) for m in owners]
    assert not problems, "\n".join(problems)


def test_reading_an_undeclared_parameter_or_another_type_is_a_programming_error() -> None:
    decl = Declaration("probe", "a probe", params=(
        Param("id", "uuid", "an id"), Param("size", "long", "a size", minimum=1)))
    params = Params(decl, {"ID": "0b5c6a43-0d8d-4b53-9d6c-3c9ea7e5f0a1", "size": "3",
                           "anything": "a client's extra parameter"})
    assert params.uuid("id") == "0b5c6a43-0d8d-4b53-9d6c-3c9ea7e5f0a1"
    assert params.integer("size") == 3
    with pytest.raises(DeclarationError, match="does not declare"):
        params.text("anything")  # sent, but not declared: ignored unless read
    with pytest.raises(DeclarationError, match="declares it uuid"):
        params.text("id")
    with pytest.raises(DeclarationError, match="declares it long"):
        params.boolean("size")
    with pytest.raises(DeclarationError):
        Params("noSuchCommand", {})


def test_declared_checks_answer_431_naming_the_parameter() -> None:
    decl = Declaration("probe", "a probe", params=(
        Param("id", "uuid", "an id", required=True),
        Param("size", "long", "a size", minimum=1, maximum=10),
        Param("name", "string", "a name", length=5)))
    with pytest.raises(ApiError) as missing:
        Params(decl, {}).uuid("id")
    assert (missing.value.code, "missing parameter id") == (431, missing.value.text[:20])
    for key, value, read in (("size", "11", "integer"), ("size", "x", "integer"),
                             ("name", "toolong", "text"), ("id", "nope", "uuid")):
        with pytest.raises(ApiError) as bad:
            getattr(Params(decl, {key: value}), read)(key)
        assert bad.value.code == 431 and f"invalid parameter {key}" in bad.value.text


async def test_a_user_may_not_run_an_admin_command() -> None:
    admin_only = next(c for c in all_commands() if c.role == ADMIN)
    with pytest.raises(ApiError) as refused:
        await admin_only.run(Context(store=cast(EventStore, None)),
                             Params(admin_only, {}), USER_CALLER)
    assert refused.value.code == 531


# --- listApis as its readers read it ----------------------------------------------------

def cloudmonkey_sync(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What CloudMonkey's sync keeps of listApis' answer (``listapisresponse``'s content),
    reading each field with the type its Go code asserts (a wrong type panics there)."""
    assert "count" in answer
    cache = {}
    for api in answer["api"]:
        assert isinstance(api, dict)
        name, is_async, description = api["name"], api["isasync"], api["description"]
        assert isinstance(name, str) and isinstance(is_async, bool)
        assert isinstance(description, str)
        verb = name[:len(name) - len(name.lstrip("abcdefghijklmnopqrstuvwxyz"))]
        assert verb and name[len(verb):], f"{name}: no verb and noun"
        args = []
        for arg in api["params"]:
            assert isinstance(arg["name"], str) and isinstance(arg["type"], str)
            assert isinstance(arg["required"], bool) and isinstance(arg["description"], str)
            related = arg["related"].split(",") if arg.get("related") is not None else []
            assert all(isinstance(r, str) and r for r in related)
            args.append((arg["name"] + "=", arg["required"], related))
        keys = [f"{r['name']}," for r in api["response"]
                if isinstance(r, dict) and r.get("name") is not None]
        cache[name.lower()] = {"args": args, "async": is_async, "responsekeys": keys}
    return cache


def marvin_generate(envelope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What Marvin's code generator makes of listApis' JSON: per command its request
    attributes, required ones and response attributes (nested for a list, map or set)."""
    assert "listapisresponse" in envelope and "count" in envelope["listapisresponse"]

    def response(field: dict[str, Any]) -> tuple[str, list[Any]]:
        assert field.get("name"), f"{field} has no property name"
        assert isinstance(field["name"], str) and field["name"].isidentifier()
        assert isinstance(field["description"], str) and isinstance(field["type"], str)
        inner = (field.get("response", []) if field["type"] in ("list", "map", "set")
                 else [])
        return field["name"], [response(f) for f in inner]

    out = {}
    for cmd in envelope["listapisresponse"]["api"]:
        assert cmd.get("name")
        assert isinstance(cmd["description"], str) and isinstance(cmd["isasync"], bool)
        request, required = [], []
        for param in cmd["params"]:
            assert param.get("name") and param["name"].isidentifier()
            assert str(param["required"]).lower() in ("true", "false")
            assert isinstance(param["description"], str) and isinstance(param["type"], str)
            request.append((param["name"], param["type"]))
            if str(param["required"]).lower() == "true":
                required.append(param["name"])
        fields = [response(r) for r in cmd["response"] if len(r) > 0]
        out[cmd["name"]] = {"async": str(cmd["isasync"]).lower(), "request": request,
                            "required": required, "response": fields}
    return out


def check_cloudstack_types(api: dict[str, Any]) -> None:
    """The JSON types CloudStack's ApiDiscoveryResponse and its parts are written with."""
    assert isinstance(api["since"], str) and api["since"]
    assert isinstance(api.get("related", ""), str)
    assert isinstance(api.get("type", ""), str)
    for param in api["params"]:
        assert set(param) <= {"name", "description", "type", "length", "required", "since",
                              "related"}
        assert {"name", "description", "type", "length", "required", "since"} <= set(param)
        assert param["type"] in PARAM_TYPES
        assert isinstance(param["length"], int) and not isinstance(param["length"], bool)
        assert isinstance(param["since"], str) and param["since"]
        assert isinstance(param.get("related", ""), str)

    def field(entry: dict[str, Any]) -> None:
        assert set(entry) <= {"name", "description", "type", "response"}
        assert entry["type"] in FIELD_TYPES
        for inner in entry.get("response", []):
            assert entry["type"] in ("list", "set", "map")
            field(inner)

    for entry in api["response"]:
        field(entry)


async def test_list_apis_answers_what_cloudmonkey_and_marvin_read_for_every_command(
) -> None:
    envelope = await list_apis(ADMIN_CALLER)
    answer = envelope["listapisresponse"]
    assert answer["count"] == len(answer["api"]) == len(all_commands())
    cache = cloudmonkey_sync(answer)
    generated = marvin_generate(envelope)
    for cmd in all_commands():
        api = next(a for a in answer["api"] if a["name"] == cmd.name)
        check_cloudstack_types(api)
        kept = cache[cmd.name.lower()]
        assert kept["async"] is cmd.is_async
        assert [a[0] for a in kept["args"]] == [f"{p.name}=" for p in cmd.params]
        assert {a[0] for a in kept["args"] if a[1]} == {f"{p.name}=" for p in cmd.params
                                                        if p.required}
        made = generated[cmd.name]
        assert made["request"] == [(p.name, p.type) for p in cmd.params]
        assert cmd.response is not None
        assert [name for name, _ in made["response"]] == [f.name for f in cmd.response.fields]


async def test_list_apis_names_the_commands_that_list_what_a_parameter_names() -> None:
    answer = (await list_apis(ADMIN_CALLER, name="deployVirtualMachine"))["listapisresponse"]
    params = {p["name"]: p for p in answer["api"][0]["params"]}
    assert "listServiceOfferings" in params["serviceofferingid"]["related"].split(",")
    assert "listVMSnapshot" in params["vmsnapshotid"]["related"].split(",")
    assert params["vmsnapshotid"]["since"] == "snapdeploy"
    assert params["serviceofferingid"]["required"] is True
    assert "related" not in params["displayname"]
    related = answer["api"][0]["related"].split(",")
    assert "listVirtualMachines" in related and "deployVirtualMachine" not in related
    nic = next(f for f in answer["api"][0]["response"] if f["name"] == "nic")
    assert nic["type"] == "set" and {f["name"] for f in nic["response"]} >= {"id",
                                                                            "networkid"}


async def test_list_apis_filters_by_name_in_any_case() -> None:
    answer = (await list_apis(USER_CALLER, name="listzones"))["listapisresponse"]
    assert [a["name"] for a in answer["api"]] == ["listZones"]
    assert (await list_apis(USER_CALLER, name="noSuchCommand"))["listapisresponse"] == {}


async def test_list_apis_for_a_user_omits_admin_commands() -> None:
    names = {a["name"] for a in (await list_apis(USER_CALLER))["listapisresponse"]["api"]}
    admin_only = {c.name for c in all_commands() if c.role == ADMIN}
    assert admin_only and not names & admin_only
    assert names == {c.name for c in all_commands() if c.role != ADMIN}
    assert {"createAccount", "listHosts", "syncInventory"} <= admin_only
    hidden = await list_apis(USER_CALLER, name="createAccount")
    assert hidden["listapisresponse"] == {}


# --- the OpenAPI document and docs/api.md -----------------------------------------------

def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_describes_every_command() -> None:
    doc = apidoc.openapi()
    assert doc["openapi"].startswith("3.0") and doc["info"]["title"]
    operations = {op["get"]["operationId"]: (path, op["get"])
                  for path, op in doc["paths"].items()}
    assert set(operations) == {c.name for c in all_commands()}
    for cmd in all_commands():
        path, op = operations[cmd.name]
        assert path == f"/client/api?command={cmd.name}"
        params = {p["name"]: p for p in op["parameters"]}
        assert params["command"]["schema"]["enum"] == [cmd.name]
        for declared in cmd.params:
            assert params[declared.name]["required"] is declared.required
            assert params[declared.name]["in"] == "query"
        assert op["x-isasync"] is cmd.is_async and op["x-role"] == cmd.role
        assert f"{cmd.name.lower()}response" in (
            op["responses"]["200"]["content"]["application/json"]["schema"]["properties"])
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    json.dumps(doc)


async def test_gateway_serves_openapi_without_a_signature() -> None:
    from services.gateway.app import build
    from shared.config import Settings
    from shared.eventstore import MemoryEventStore
    from shared.runtime import Runtime

    app = build(Runtime("gateway", Settings()), cast(EventStore, MemoryEventStore()))
    app.cleanup_ctx.clear()  # the audit fanout tails PostgreSQL; not needed here
    async with TestClient(TestServer(app)) as client:
        response = await client.get(apidoc.OPENAPI_PATH)
        assert response.status == 200
        assert await response.json() == json.loads(json.dumps(apidoc.openapi()))


def test_docs_api_md_is_current() -> None:
    """docs/api.md is what `snapdeploy api-docs` prints; regenerate it with
    `.venv/bin/snapdeploy api-docs > docs/api.md`."""
    assert (ROOT / "docs" / "api.md").read_text() == apidoc.markdown()
