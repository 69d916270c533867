"""PostgreSQL access: connection pools with snapdeploy's codecs, schema migrations, and the
locks copies of a service share (a lease, and turns at deciding), and the one connection a
process hears announcements on."""

from shared.db._lease import Lease
from shared.db._listen import Notifications
from shared.db._migrate import applied_versions, migrate, pending
from shared.db._pool import (
    KEEPALIVES,
    advisory_lock,
    create_pool,
    fast_timestamps,
    init_connection,
    pg_microseconds,
)
from shared.db._roles import grants_sql, prepare
from shared.db._turns import Turns

__all__ = ["KEEPALIVES", "Lease", "Notifications", "Turns", "advisory_lock", "applied_versions",
           "create_pool", "fast_timestamps", "grants_sql", "init_connection", "migrate", "pending",
           "pg_microseconds", "prepare"]
