"""The CloudStack API surface: commands, parameters, callers and the error envelope."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proto.envelope import Metadata
from shared.config import Settings
from shared.errors import PARAM_ERROR, PERMISSION_DENIED, RESOURCE_IN_USE, ApiError
from shared.eventstore import Append, ConcurrencyError, EventStore
from shared.log import current_correlation
from shared.projections.read import Paging, ReadModels, Viewer

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

    @functools.cached_property
    def read(self) -> ReadModels:
        """The read models, through their query API."""
        return ReadModels(self.store)

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


class Params:
    """A request's parameters, names matched case-insensitively, each checked when read."""

    def __init__(self, command: str, values: dict[str, str]) -> None:
        self.command = command
        self._values = {k.lower(): v for k, v in values.items()}

    def has(self, name: str) -> bool:
        return self._values.get(name.lower(), "") != ""

    def text(self, name: str, *, required: bool = False, max_length: int = 255) -> str | None:
        value = self._values.get(name.lower())
        if value is None or value == "":
            if required:
                raise ApiError(PARAM_ERROR, f"missing parameter {name}: it is required "
                               f"by {self.command}")
            return None
        if len(value) > max_length:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: longer than "
                           f"{max_length} characters")
        if any(ord(ch) < 32 for ch in value):
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: contains control characters")
        return value

    def uuids(self, name: str) -> list[str]:
        """A comma-separated list of UUIDs (empty when absent)."""
        value = self.text(name, max_length=4096)
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
        value = self.text(name, max_length=8)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value!r} is not true or "
                           "false")
        return value.lower() == "true"

    def uuid(self, name: str, *, required: bool = False) -> str | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value[:64]!r} is not a "
                           "UUID") from None

    def integer(self, name: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int | None:
        value = self.text(name, max_length=12)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {value!r} is not a "
                           "whole number") from None
        if not minimum <= number <= maximum:
            raise ApiError(PARAM_ERROR, f"invalid parameter {name}: {number} is outside "
                           f"{minimum}..{maximum}")
        return number

    def page(self) -> Paging | None:
        """The slice ``page`` and ``pagesize`` ask for, or None to list everything."""
        page = self.integer("page", minimum=1)
        size = self.integer("pagesize", minimum=1, maximum=10_000)
        if page is None and size is None:
            return None
        size = size or 500
        return Paging(limit=size, offset=((page or 1) - 1) * size)


Handler = Callable[[Context, Params, Caller], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    is_async: bool = False  # answers with a jobid, like CloudStack's async commands

    @property
    def description(self) -> str:
        return (self.handler.__doc__ or "").strip().split("\n", 1)[0]

    async def run(self, ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
        """Run the command. A command checks what it acts on as its stream stands and
        appends at that version; if the stream moved on in between (nothing was appended),
        it checks again on what is stored now, up to ``DECISION_ATTEMPTS`` times.

        Raises:
            ApiError: the command's own; 536 if its target kept changing.
        """
        for _ in range(DECISION_ATTEMPTS):
            try:
                return await self.handler(ctx, params, caller)
            except ConcurrencyError:
                continue
        raise ApiError(RESOURCE_IN_USE, f"{self.name}: what it acts on kept changing while it "
                       f"was decided ({DECISION_ATTEMPTS} attempts); try again")


COMMANDS: dict[str, Command] = {}


def command(name: str, *, is_async: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the CloudStack command ``name``."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name.lower()] = Command(name, handler, is_async)
        return handler

    return register


def listing(key: str, items: list[dict[str, Any]], count: int | None = None) -> dict[str, Any]:
    """A list response: ``{}`` when empty, else ``count`` and the items under ``key``."""
    if not items and not count:
        return {}
    return {"count": len(items) if count is None else count, key: items}


def require_admin(caller: Caller, command: str) -> None:
    if not caller.is_admin:
        raise ApiError(PERMISSION_DENIED, f"{command} is for administrators only")


def cs_time(value: datetime | None) -> str | None:
    """A time as CloudStack writes it: ``2026-11-28T10:00:00+0000``."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S%z")
