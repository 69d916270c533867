"""Per-account resource limits, as CloudStack has them: what an account may hold, and the
check made when a request that would hold more is accepted. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from proto.events import AnyEvent, ResourceLimitUpdated
from shared.errors import RESOURCE_ALLOCATION, ApiError

UNLIMITED = -1


@dataclass(frozen=True)
class Resource:
    number: int  # CloudStack's resourcetype
    name: str  # CloudStack's resourcetypename
    default: int  # CloudStack's max.account.* default
    unit: str = ""


INSTANCE = Resource(0, "user_vm", 20)
VOLUME = Resource(2, "volume", 20)
TEMPLATE = Resource(4, "template", 20)
CPU = Resource(8, "cpu", 40)
MEMORY = Resource(9, "memory", 40960, " MB")
RESOURCES = (INSTANCE, VOLUME, TEMPLATE, CPU, MEMORY)


def resource(value: str) -> Resource | None:
    """The resource a ``resourcetype`` names, by number (``8``) or by name (``cpu``)."""
    for res in RESOURCES:
        if value.strip().lower() in (str(res.number), res.name):
            return res
    return None


@dataclass(frozen=True)
class Usage:
    """What an account holds, or what one request would add."""

    user_vm: int = 0
    volume: int = 0
    template: int = 0
    cpu: int = 0
    memory: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                        for f in fields(self)})


def account_limits(events: Iterable[AnyEvent]) -> dict[str, int]:
    """The limits set for an account, from its stream (a resource not set takes
    CloudStack's default, ``limit_of``)."""
    return {e.resource: e.max for e in events if isinstance(e, ResourceLimitUpdated)}


def limit_of(res: Resource, limits: dict[str, int]) -> int:
    """The account's limit for ``res``: its own setting, else CloudStack's default."""
    return limits.get(res.name, res.default)


class LimitExceeded(ApiError):
    """A request would take an account past one of its limits (CloudStack's 535)."""

    def __init__(self, text: str) -> None:
        super().__init__(RESOURCE_ALLOCATION, text)


def check(account_name: str, held: Usage, wanted: Usage, limits: dict[str, int]) -> None:
    """Raise LimitExceeded, naming the first resource that ``wanted`` would take past its
    limit (unlimited: -1), with what is held, what was asked and the limit.

    Raises:
        LimitExceeded: with CloudStack's code 535.
    """
    for res in RESOURCES:
        limit = limit_of(res, limits)
        asked = getattr(wanted, res.name)
        have = getattr(held, res.name)
        if limit != UNLIMITED and asked > 0 and have + asked > limit:
            raise LimitExceeded(
                f"Maximum number of resources of type '{res.name}' for account "
                f"name={account_name} has been exceeded: {have}{res.unit} allocated, "
                f"{asked}{res.unit} requested, limit {limit}{res.unit}; an administrator may "
                f"raise it with updateResourceLimit resourcetype={res.number}")
