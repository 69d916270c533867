"""Accounts and their users: those that exist from the start, and each as its stream
tells it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto.events import AccountCreated, AnyEvent, UserCreated
from proto.streams import stable_id
from shared.domain import created

ADMIN_ACCOUNT_ID = stable_id("account", "admin")
ADMIN_USER_ID = stable_id("user", "admin")


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    role: str  # "admin" or "user"


@dataclass(frozen=True)
class User:
    id: str
    account_id: str
    username: str


def account(events: Iterable[AnyEvent]) -> Account | None:
    """An account as its stream tells it (None if it was never created)."""
    event = created(events, AccountCreated)
    return None if event is None else Account(event.account_id, event.name, event.role)


def user(events: Iterable[AnyEvent]) -> User | None:
    """A user as its stream tells it (None if it was never created)."""
    event = created(events, UserCreated)
    return None if event is None else User(event.user_id, event.account_id, event.username)
