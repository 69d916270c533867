"""The ``snapdeploy`` command: start and stop the stack, maintain the read models."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from shared import config, db
from shared.eventstore import EventStore
from shared.projections import ALL, Projector


def _owner_url() -> str:
    """The schema owner's database URL: SNAPDEPLOY_DATABASE_ADMIN_URL, else DATABASE_URL."""
    settings = config.load()
    return settings.database_admin_url or settings.database_url


def _rebuild(args: argparse.Namespace) -> int:
    async def run() -> int:
        pool = await db.create_pool(_owner_url(), max_size=2)
        try:
            async with pool.acquire() as conn:
                await db.migrate(conn)
            return await Projector(EventStore(pool), ALL).rebuild()
        finally:
            await pool.close()

    applied = asyncio.run(run())
    names = ", ".join(p.table.name for p in ALL)
    print(f"rebuilt {names} from {applied} events")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    async def run() -> list[int]:
        conn = await asyncpg.connect(_owner_url())
        try:
            if args.role:
                password = os.environ.get("SNAPDEPLOY_SERVICE_PASSWORD", "")
                if not password:
                    raise SystemExit("snapdeploy db migrate --role: set the role's password "
                                     "in SNAPDEPLOY_SERVICE_PASSWORD")
                return await db.prepare(conn, args.role, password)
            return await db.migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print(f"applied migrations {applied}" if applied else "the schema is current")
    return 0


def _grants(args: argparse.Namespace) -> int:
    print(db.grants_sql(args.role, args.database))
    return 0


def _up(args: argparse.Namespace) -> int:
    from shared.stack.launcher import up

    return up(Path(args.state_dir).resolve(), detach=args.detach,
              gateway_listen=args.gateway_listen, show_keys=not args.hide_keys)


def _down(args: argparse.Namespace) -> int:
    from shared.stack.launcher import down

    return down(Path(args.state_dir).resolve())


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="snapdeploy",
        description="Deploy VMs straight from VM snapshots. Settings come from SNAPDEPLOY_* "
        "environment variables and DATABASE_URL (see README.md).",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the whole system",
        description="Start nats-server, PostgreSQL (unless DATABASE_URL is set), vcsim (unless "
        "SNAPDEPLOY_VCENTER_URL is set), every service and the gateway. Writes "
        "STATE_DIR/stack.json with the URLs and pids (the generated credentials stay in "
        "STATE_DIR/secrets.json, mode 0600) and prints the admin's keys once. Runs in the "
        "foreground until Ctrl-C unless --detach is given. Refuses to start if a stack "
        "already runs on STATE_DIR.",
    )
    up.add_argument("--state-dir", default=".state", help="where data, logs and stack.json go "
                    "(default: .state)")
    up.add_argument("--detach", action="store_true",
                    help="return once the stack is up; stop it with `snapdeploy down`")
    up.add_argument("--gateway-listen", default=None, metavar="HOST:PORT",
                    help="gateway address (default: SNAPDEPLOY_GATEWAY_LISTEN, else a free "
                    "port on 127.0.0.1)")
    # The background launcher `--detach` starts: its output goes to a log, so it prints no
    # secret key (the `up --detach` that started it prints them to the terminal).
    up.add_argument("--hide-keys", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(run=_up)

    down = commands.add_parser(
        "down", help="stop a stack started with `up`",
        description="Stop everything `snapdeploy up` started for STATE_DIR. Only processes "
        "that stack.json records with their start time and command line are signalled.",
    )
    down.add_argument("--state-dir", default=".state", help="the stack's state folder")
    down.set_defaults(run=_down)

    projections = commands.add_parser(
        "projections", help="maintain the read models",
        description="Maintain the read models projected from the event store.",
    )
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild", help="replay the event store from position 0 into fresh read models",
        description="Truncate every read model and replay all events from position 0 in one "
        "transaction (readers see the old tables until it commits). Uses DATABASE_URL.",
    )
    rebuild.set_defaults(run=_rebuild)

    database = commands.add_parser(
        "db", help="the database schema and the services' role",
        description="Migrate the schema as its owner and give the services' role only the "
        "rights it uses (read events, append through append_events(), write checkpoints, "
        "inbox, read models and API keys). `snapdeploy up` does this for its own PostgreSQL.",
    )
    steps = database.add_subparsers(dest="action", required=True, metavar="ACTION")
    migrate = steps.add_parser(
        "migrate", help="apply pending migrations as the schema's owner",
        description="Apply pending schema migrations, connecting with "
        "SNAPDEPLOY_DATABASE_ADMIN_URL (else DATABASE_URL). With --role, also create or "
        "update that login role (password from SNAPDEPLOY_SERVICE_PASSWORD) and grant it "
        "the services' rights; needs CREATEROLE.",
    )
    migrate.add_argument("--role", default=None, help="the role the services connect as")
    migrate.set_defaults(run=_migrate)
    grants = steps.add_parser(
        "grants", help="print the SQL that grants a role the services' rights",
        description="Print the GRANT statements for a role the services connect as, for a "
        "database administrator to run after `snapdeploy db migrate`.",
    )
    grants.add_argument("--role", required=True, help="the services' role")
    grants.add_argument("--database", default="snapdeploy", help="the database name")
    grants.set_defaults(run=_grants)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
