"""The PostgreSQL role the services connect as: only the rights they use.

The schema's owner (who runs migrations) is not the services' role. The services' role
reads events and appends them only through ``append_events()`` (migration 0006) and
``commit_events()`` (0017): it can neither rewrite nor delete history, nor change the
schema. It writes checkpoints, the inbox, the read models, API keys, password hashes and
login sessions. ``snapdeploy db grants`` prints this SQL for a database snapdeploy does
not manage; ``snapdeploy up`` applies it to its own.
"""

from __future__ import annotations

import asyncpg

from shared.db._migrate import migrate

# (privileges, tables): every table the services use, with what they do to it.
GRANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SELECT", ("events", "schema_migrations")),
    # Written only by a trigger on events, as the events' owner (migrations 0007-0010, 0016).
    ("SELECT", ("host_capacity", "host_reservations", "snapshot_uses", "seed_templates",
                "vm_index", "volume_links", "vm_snapshot_refs", "inventory_objects",
                "account_holdings", "account_names", "network_state", "network_addresses")),
    ("SELECT, INSERT, UPDATE", ("checkpoints",)),
    ("SELECT, INSERT", ("inbox",)),
    ("SELECT, INSERT, UPDATE, DELETE",
     ("vm_instances", "async_jobs", "vmsnapshot_spool_ref", "catalog", "api_keys",
      "user_passwords", "sessions")),
)
APPEND_FUNCTION = "append_events(text, integer, uuid[], text[], smallint[], jsonb[], jsonb[])"
# A handler's inbox row and appends, or several requests' appends, in one statement (0017).
COMMIT_FUNCTION = ("commit_events(text[], uuid[], integer[], text[], integer[], integer[],"
                   " uuid[], text[], smallint[], jsonb[], jsonb[])")


def _quoted(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def grants_sql(role: str, database: str) -> str:
    """The statements that give ``role`` the services' rights on ``database`` (run them as
    the schema's owner, after ``snapdeploy db migrate``)."""
    role, database = _quoted(role), _quoted(database)
    lines = [f"GRANT CONNECT ON DATABASE {database} TO {role};",
             f"GRANT USAGE ON SCHEMA public TO {role};"]
    lines += [f"GRANT {privileges} ON {', '.join(tables)} TO {role};"
              for privileges, tables in GRANTS]
    lines += [f"GRANT EXECUTE ON FUNCTION {function} TO {role};"
              for function in (APPEND_FUNCTION, COMMIT_FUNCTION)]
    return "\n".join(lines)


async def prepare(conn: asyncpg.Connection, role: str, password: str) -> list[int]:
    """As the schema's owner: migrate, create (or re-password) the services' role, grant
    it its rights. Idempotent; returns the migrations applied now."""
    applied = await migrate(conn)
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    # A password cannot be a bind parameter in CREATE/ALTER ROLE: quote it as a literal.
    literal = await conn.fetchval("SELECT quote_literal($1)", password)
    verb = "ALTER" if exists else "CREATE"
    await conn.execute(f"{verb} ROLE {_quoted(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                       f"NOINHERIT PASSWORD {literal}")
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(grants_sql(role, database))
    return applied
