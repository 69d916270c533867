"""Who may see and use what: each thing belongs to one account.

A thing is visible to the account that owns it and to administrators. A thing with no
recorded owner is visible to administrators only: an unknown owner never means "public".
Every other account gets the answer it would get for an id that does not exist.
"""

from __future__ import annotations


def visible_to(owner: str | None, account_id: str, is_admin: bool) -> bool:
    """Whether the caller (``account_id``, ``is_admin``) may see a thing owned by ``owner``."""
    return is_admin or (owner is not None and owner == account_id)
