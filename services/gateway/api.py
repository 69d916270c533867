"""The CloudStack API surface: commands, parameters, callers and the error envelope."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proto.envelope import Metadata
from shared.apikeys import LiveKeys
from shared.config import Settings
from shared.db import Notifications
from shared.errors import PARAM_ERROR, PERMISSION_DENIED, RESOURCE_IN_USE, ApiError
from shared.eventstore import Append, ConcurrencyError, EventStore, SnapshotStreams
from shared.log import current_correlation
from shared.projections.read import Paging, Progress, ReadModels, Viewer

MAX_PARAM_LENGTH = 4096
DECISION_ATTEMPTS = 10


@dataclass(frozen=True)
class Caller:
    account_id: str
    account_name: str
    user_id: str
    user_name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"{self.account_name}/{self.user_name}"

    @property
    def viewer(self) -> Viewer:
        """The caller as the read models' visibility rule takes it."""
        return Viewer(account_id=self.account_id, is_admin=self.is_admin)


@dataclass(frozen=True)
class Context:
    store: EventStore
    settings: Settings = field(default_factory=Settings)
    # The one connection the gateway hears PostgreSQL's announcements on (``services.gateway.app``).
    notifications: Notifications | None = None
    # The projector's progress, followed while the app runs (``services.gateway.app``).
    progress: Progress | None = None
    # The API keys read so far, kept while changes to them are heard (``services.gateway.app``).
    keys: LiveKeys | None = None
    # Which streams a deploy from each VM snapshot reads (``Repository.deploy_inputs``).
    snapshot_streams: SnapshotStreams = field(default_factory=SnapshotStreams)

    @functools.cached_property
    def read(self) -> ReadModels:
        """The read models, through their query API."""
        return ReadModels(self.store, self.progress)

    async def append(self, caller: Caller, *appends: Append) -> int:
        """Append in one transaction, attributed to ``caller`` and this request; returns the
        global position of the last event."""
        request_id = current_correlation() or str(uuid.uuid4())
        meta = Metadata(correlation_id=request_id, causation_id=request_id,
                        actor=caller.actor, account_id=caller.account_id)
        last = await self.store.commit(appends, meta)
        assert last is not None  # no inbox, so always appended
        return last

    async def change(self, caller: Caller, *appends: Append) -> None:
        """A synchronous command's change: appended, and visible to the next list call."""
        await self.read.reach(await self.append(caller, *appends))


# The CloudStack release whose API snapdeploy follows: the ``since`` of upstream's commands
# and parameters. What snapdeploy adds says ``OURS`` (or a snapdeploy version).
UPSTREAM = "4.20.0"
OURS = "snapdeploy"

USER, ADMIN = "user", "admin"
ROLES = (USER, ADMIN)

# CloudStack's parameter types (BaseCmd.CommandType, as listApis writes them).
PARAM_TYPES = frozenset({"uuid", "string", "integer", "long", "boolean", "list", "map", "date"})
# The types listApis gives response fields (the Java field's type, lower case).
FIELD_TYPES = frozenset({"string", "integer", "long", "boolean", "date", "double", "list",
                         "set", "map", "object", "responseobject"})
NESTED_TYPES = frozenset({"list", "set", "map"})


class DeclarationError(Exception):
    """A command reads a parameter it does not declare, or as another type, or is declared
    wrongly: a programming error (answered as an internal error), never the client's."""


@dataclass(frozen=True)
class Field:
    """One field of a response object, as listApis describes it; ``fields`` for a nested
    list of objects (type list or set)."""

    name: str
    type: str
    description: str
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise DeclarationError(f"response field {self.name}: unknown type {self.type!r}")
        if self.fields and self.type not in NESTED_TYPES:
            raise DeclarationError(f"response field {self.name}: only a list, set or map "
                                   "has nested fields")


@dataclass(frozen=True, eq=False)
class Shape:
    """A response object: the key it is answered under (``virtualmachine``) and its fields.
    Commands answering with the same shape are each other's ``related`` in listApis."""

    key: str
    description: str
    fields: tuple[Field, ...]
    # CloudStack's SuccessResponse-like shapes relate no commands to each other.
    relates: bool = True


@dataclass(frozen=True)
class Param:
    """One request parameter: CloudStack's type, whether it is required, its maximum length
    and, for numbers, its range. ``entity``: the object it names (its commands are the
    parameter's ``related``); ``items``: the type of a list's elements."""

    name: str
    type: str
    description: str
    required: bool = False
    length: int = 255
    since: str = UPSTREAM
    entity: Shape | None = None
    related: tuple[str, ...] = ()
    items: str | None = None
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise DeclarationError(f"parameter {self.name}: unknown type {self.type!r}")
        if self.name != self.name.lower():
            raise DeclarationError(f"parameter {self.name}: names are lower case")
        if (self.minimum is not None or self.maximum is not None) and self.type not in (
                "integer", "long"):
            raise DeclarationError(f"parameter {self.name}: only numbers have a range")

    @property
    def bounds(self) -> tuple[int, int]:
        """The accepted range of a number (CloudStack's Integer or Long without one)."""
        top = 2**31 - 1 if self.type == "integer" else 2**63 - 1
        low = self.minimum if self.minimum is not None else 0
        return low, self.maximum if self.maximum is not None else top


@dataclass(frozen=True)
class Declaration:
    """What one API entry point takes and answers: the single description parameter
    checking, listApis, the OpenAPI document and docs/api.md all come from."""

    name: str
    description: str
    params: tuple[Param, ...]
    response: Shape | None = None
    is_async: bool = False  # answers with a jobid, like CloudStack's async commands
    role: str = USER  # the least role that may call it
    since: str = UPSTREAM
    # False for a command registered without its parameters (a test over the registry
    # refuses that; reading any parameter of it is a DeclarationError).
    declared: bool = True
    # How the object is answered: "list" (count and a list under its key), "object" (under
    # its key), "fields" (its fields, bare), "job" (id and jobid). Default: "job" for an
    # async command, "list" for list*, "fields" for a success answer, else "object".
    answer: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise DeclarationError(f"{self.name}: unknown role {self.role!r}")
        if self.answer not in ("", "list", "object", "fields", "job"):
            raise DeclarationError(f"{self.name}: unknown answer {self.answer!r}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise DeclarationError(f"{self.name}: a parameter is declared twice")

    @property
    def answered_as(self) -> str:
        if self.answer:
            return self.answer
        if self.is_async:
            return "job"
        if self.response is not None and not self.response.relates:
            return "fields"
        return "list" if self.name.startswith("list") else "object"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name.lower()), None)

    def allows(self, caller: Caller) -> bool:
        return self.role == USER or caller.is_admin


# The paging parameters every list command with pages takes.
PAGING = (
    Param("page", "integer", "the page of results to return, from 1", minimum=1),
    Param("pagesize", "integer", "how many results a page holds (default 500)", minimum=1,
          maximum=10_000),
)

_ACCESSOR_TYPES = {"text": ("string", "date"), "uuid": ("uuid",), "uuids": ("list",),
                   "boolean": ("boolean",), "integer": ("integer", "long")}


class Params:
    """A request's parameters, names matched case-insensitively, each checked when read
    against the command's declaration: its type, length, range and whether it is required.
    Parameters a client sends that the command does not declare are ignored."""

    def __init__(self, command: str | Declaration, values: dict[str, str]) -> None:
        if isinstance(command, str):
            found = COMMANDS.get(command.lower())
            if found is None:
                raise DeclarationError(f"{command} is not a registered command")
            command = found
        self.declaration = command
        self.command = command.name
        self._values = {k.lower(): v for k, v in values.items()}

    def _declared(self, name: str, accessor: str) -> Param:
        param = self.declaration.param(name)
        if param is None:
            raise DeclarationError(f"{self.command} reads parameter {name}, which it does "
                                   "not declare")
        if accessor != "has" and param.type not in _ACCESSOR_TYPES[accessor]:
            raise DeclarationError(f"{self.command} reads parameter {name} with "
                                   f"Params.{accessor}, but declares it {param.type}")
        return param

    def _raw(self, param: Param, max_length: int) -> str | None:
        value = self._values.get(param.name)
        if value is None or value == "":
            if param.required:
                raise ApiError(PARAM_ERROR, f"missing parameter {param.name}: it is required "
                               f"by {self.command}")
            return None
        if len(value) > max_length:
            raise ApiError(PARAM_ERROR, f"invalid parameter {param.name}: longer than "
                           f"{max_length} characters")
        if any(ord(ch) < 32 for ch in value):
            raise ApiError(PARAM_ERROR, f"invalid parameter {param.name}: contains control "
                           "characters")
        return value

    def has(self, name: str) -> bool:
        """Whether the client sent the (declared) parameter, not empty."""
        return self._values.get(self._declared(name, "has").name, "") != ""

    def text(self, name: str) -> str | None:
        param = self._declared(name, "text")
        return self._raw(param, param.length)

    def uuids(self, name: str) -> list[str]:
        """A comma-separated list of UUIDs (empty when absent)."""
        param = self._declared(name, "uuids")
        if param.items != "uuid":
            raise DeclarationError(f"{self.command} reads {name} as UUIDs, but declares its "
                                   f"items {param.items}")
        value = self._raw(param, param.length)
        if value is None:
            return []
        out = []
        for item in value.split(","):
            try:
                out.append(str(uuid.UUID(item.strip())))
            except ValueError:
                raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {item[:64]!r} is not "
                               "a UUID") from None
        return out

    def boolean(self, name: str) -> bool | None:
        value = self._raw(self._declared(name, "boolean"), 8)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value!r} is not true or "
                           "false")
        return value.lower() == "true"

    def uuid(self, name: str) -> str | None:
        value = self._raw(self._declared(name, "uuid"), 255)
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value[:64]!r} is not a "
                           "UUID") from None

    def integer(self, name: str) -> int | None:
        """A whole number within the declared range (an integer or a long)."""
        param = self._declared(name, "integer")
        value = self._raw(param, 12 if param.type == "integer" else 21)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value!r} is not a "
                           "whole number") from None
        minimum, maximum = param.bounds
        if not minimum <= number <= maximum:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {number} is outside "
                           f"{minimum}..{maximum}")
        return number

    def page(self) -> Paging | None:
        """The slice ``page`` and ``pagesize`` ask for, or None to list everything."""
        page = self.integer("page")
        size = self.integer("pagesize")
        if page is None and size is None:
            return None
        size = size or 500
        return Paging(limit=size, offset=((page or 1) - 1) * size)


Handler = Callable[[Context, Params, Caller], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command(Declaration):
    handler: Handler | None = None

    async def run(self, ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
        """Run the command for a caller its role allows. A command checks what it acts on
        as its stream stands and appends at that version; if the stream moved on in between
        (nothing was appended), it checks again on what is stored now, up to
        ``DECISION_ATTEMPTS`` times.

        Raises:
            ApiError: 531 for a caller the command's role refuses; the command's own; 536 if
                its target kept changing.
        """
        assert self.handler is not None
        if not self.allows(caller):
            raise ApiError(PERMISSION_DENIED, f"{self.name} is for administrators only")
        for _ in range(DECISION_ATTEMPTS):
            try:
                return await self.handler(ctx, params, caller)
            except ConcurrencyError:
                continue
        raise ApiError(RESOURCE_IN_USE, f"{self.name}: what it acts on kept changing while it "
                       f"was decided ({DECISION_ATTEMPTS} attempts); try again")


COMMANDS: dict[str, Command] = {}


def command(name: str, *, description: str = "",
            params: tuple[Param, ...] | list[Param] | None = None, response: Shape | None = None,
            is_async: bool = False, role: str = USER, since: str = UPSTREAM,
            answer: str = "") -> Callable[[Handler], Handler]:
    """Register ``handler`` as the CloudStack command ``name``, declared: what it does
    (else its docstring's first line), every parameter it reads (``()`` for none), the
    object it answers with, whether it is asynchronous, the least role that may call it
    and the release it follows (``UPSTREAM``, or ``OURS`` for snapdeploy's own);
    ``answer`` when the default way it is answered (``Declaration.answered_as``) is not it."""

    def register(handler: Handler) -> Handler:
        if name.lower() in COMMANDS:
            raise DeclarationError(f"{name} is registered twice")
        text = description or (handler.__doc__ or "").strip().split("\n", 1)[0]
        COMMANDS[name.lower()] = Command(name, text, tuple(params or ()), response, is_async,
                                         role, since, params is not None, answer, handler)
        return handler

    return register


def listing(key: str, items: list[dict[str, Any]], count: int | None = None) -> dict[str, Any]:
    """A list response: ``{}`` when empty, else ``count`` and the items under ``key``."""
    if not items and not count:
        return {}
    return {"count": len(items) if count is None else count, key: items}


def require_admin(caller: Caller, command: str) -> None:
    """Refuse a caller who is not an administrator (a command's role does this before its
    handler runs; for a check inside a handler)."""
    if not caller.is_admin:
        raise ApiError(PERMISSION_DENIED, f"{command} is for administrators only")


def cs_time(value: datetime | None) -> str | None:
    """A time as CloudStack writes it: ``2026-11-28T10:00:00+0000``."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S%z")
