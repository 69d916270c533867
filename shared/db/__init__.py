"""PostgreSQL access: connection pools with snapdeploy's codecs, and schema migrations."""

from shared.db._migrate import applied_versions, migrate
from shared.db._pool import create_pool, init_connection

__all__ = ["applied_versions", "create_pool", "init_connection", "migrate"]
