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

# The one domain: every account is in ROOT, as CloudStack's accounts are when no other
# domain is made.
ROOT_DOMAIN_ID = stable_id("domain", "ROOT")
ROOT_DOMAIN = "ROOT"

# The guest OS type a seeded template shows (snapdeploy does not know its guest's OS), and
# its category: CloudStack's names for an OS it does not list.
OS_CATEGORY_ID = stable_id("oscategory", "Other")
OS_CATEGORY = "Other"
OS_TYPES = {stable_id("ostype", name): name for name in (
    "Other (64-bit)", "Other Linux (64-bit)", "Other (32-bit)")}
DEFAULT_OS_TYPE_ID = stable_id("ostype", "Other (64-bit)")


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
