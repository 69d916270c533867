"""Accounts that exist from the start."""

from proto.streams import stable_id

ADMIN_ACCOUNT_ID = stable_id("account", "admin")
ADMIN_USER_ID = stable_id("user", "admin")
