"""Accounts and their users: those that exist from the start, and each as its stream
tells it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proto.events import AccountCreated, AccountDeleted, AnyEvent, UserCreated
from proto.streams import stable_id
from shared.domain import created
from shared.domain.limits import Usage
from shared.errors import PARAM_ERROR, RESOURCE_IN_USE, ApiError

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
    """An account as its stream tells it (None if it was never created, or was deleted)."""
    history = list(events)
    event = created(history, AccountCreated)
    if event is None or created(history, AccountDeleted) is not None:
        return None
    return Account(event.account_id, event.name, event.role)


def check_delete(account_id: str, found: Account | None, held: Usage, caller_account_id: str,
                 user_ids: list[str]) -> AccountDeleted:
    """deleteAccount's rule. CloudStack removes an account with everything it holds; here
    an account is removed once it holds nothing (its VMs expunged, its volumes deleted, the
    templates seeded from its snapshots removed), so nothing is removed behind a tenant's
    back: the refusal names what it still holds. The built-in admin account and the
    caller's own are never removed (CloudStack refuses those too).

    Raises:
        ApiError: 431 naming ``id`` (no such account, or one that may not be removed);
            536 naming what the account still holds.
    """
    if found is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter id: no account {account_id} exists")
    if account_id in (ADMIN_ACCOUNT_ID, caller_account_id):
        which = "the built-in admin account" if account_id == ADMIN_ACCOUNT_ID else \
            "your own account"
        raise ApiError(PARAM_ERROR, f"invalid parameter id: account {found.name!r} is "
                       f"{which} and cannot be deleted")
    holds = [f"{count} {what}" for count, what in (
        (held.user_vm, "VM(s)"), (held.volume, "volume(s)"), (held.template, "template(s)"))
        if count]
    if holds:
        raise ApiError(RESOURCE_IN_USE, f"account {found.name!r} ({account_id}) still holds "
                       f"{', '.join(holds)}; expunge its VMs and delete its volumes and "
                       "templates first")
    return AccountDeleted(account_id=account_id, name=found.name, user_ids=sorted(user_ids))


def user(events: Iterable[AnyEvent]) -> User | None:
    """A user as its stream tells it (None if it was never created)."""
    event = created(events, UserCreated)
    return None if event is None else User(event.user_id, event.account_id, event.username)
