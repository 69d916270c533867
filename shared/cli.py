"""The ``snapdeploy`` command: start and stop the stack, maintain the read models."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import uvloop

from shared import config, db
from shared.eventstore import EventStore
from shared.projections import ALL, Projector


def _owner_url() -> str:
    """The schema owner's database URL: SNAPDEPLOY_DATABASE_ADMIN_URL, else DATABASE_URL."""
    settings = config.load()
    return settings.database_admin_url or settings.database_url


def _rebuild(args: argparse.Namespace) -> int:
    async def run() -> int:
        url = _owner_url()
        pool = await db.create_pool(url, max_size=2)  # the rebuild's writer and reader
        try:
            async with pool.acquire() as conn:
                await db.migrate(conn)
            return await Projector(EventStore(pool), ALL).rebuild(url)
        finally:
            await pool.close()

    started = time.monotonic()
    applied = uvloop.run(run())  # the loop the services run on
    names = ", ".join(p.table.name for p in ALL)
    print(f"rebuilt {names} from {applied} events in {time.monotonic() - started:.1f} s")
    return 0


IDENTITY_SECRET_ENV = "SNAPDEPLOY_NATS_IDENTITY_SECRET"


def _nats_auth(args: argparse.Namespace) -> int:
    import os

    from msgspec.structs import replace

    from services.gateway.api import Context
    from services.gateway.bus import client_keys
    from shared import natsauth
    from shared.stack.launcher import SECRETS_FILE, read_stack

    settings = config.load()
    if args.state_dir:
        state = Path(args.state_dir).resolve()
        info = read_stack(state)
        saved = json.loads((state / SECRETS_FILE).read_text())
        secret = saved["nats_password"]
        settings = replace(settings, database_url=info["database_url"],
                           key_encryption_key=saved.get("key_encryption_key",
                                                        settings.key_encryption_key))
        out = state / "nats" / "auth.conf"
    else:
        secret = os.environ.get(IDENTITY_SECRET_ENV, "")
        if not secret or not args.out:
            print(f"snapdeploy: give --state-dir, or --out with {IDENTITY_SECRET_ENV} set",
                  file=sys.stderr)
            return 2
        out = Path(args.out)

    async def keys() -> list[natsauth.ClientKey]:
        pool = await db.create_pool(settings.database_url, max_size=2)
        try:
            return await client_keys(Context(store=EventStore(pool), settings=settings))
        finally:
            await pool.close()

    found = asyncio.run(keys())
    natsauth.write_identities(out, secret)
    written = natsauth.refresh(out, found)
    print(f"wrote {out}: {len(natsauth.SERVICES) + 1} service identities, {written} API keys")
    if args.passwords:
        for name in (*natsauth.SERVICES, natsauth.MONITOR):
            print(f"{name} {natsauth.password_for(secret, name)}")
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
              gateway_listen=args.gateway_listen, show_keys=not args.hide_keys,
              nats_nodes=args.nats_nodes, replicas=args.replicas)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _down(args: argparse.Namespace) -> int:
    from shared.stack.launcher import down

    return down(Path(args.state_dir).resolve())


def _console(args: argparse.Namespace) -> int:
    import time

    from shared.drivers.libvirt import CONSOLE_LOG

    state = Path(args.state_dir).resolve()
    stack_file = state / "stack.json"
    folder = state / "libvirt" / "log" / "qemu"  # where the private libvirtd keeps them
    if stack_file.exists():
        zone = json.loads(stack_file.read_text()).get("kvm") or {}
        folder = Path(zone.get("console_logs") or folder)
    path = folder / Path(CONSOLE_LOG.format(name=args.vm)).name
    if not path.exists():
        known = sorted(p.name.removesuffix("-console.log") for p in folder.glob("*-console.log"))
        print(f"snapdeploy: no console of a KVM VM named {args.vm!r} in {folder}; VMs with "
              f"a console: {', '.join(known) or 'none'} (a deployed VM's name here is its "
              "instancename)", file=sys.stderr)
        return 1
    with path.open("rb") as console:
        while True:
            chunk = console.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            elif not args.follow:
                return 0
            else:
                try:
                    time.sleep(0.5)
                except KeyboardInterrupt:
                    return 0


def _api_docs(args: argparse.Namespace) -> int:
    from services.gateway import apidoc

    if args.format == "openapi":
        print(json.dumps(apidoc.openapi(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(apidoc.markdown())
    return 0


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
        "SNAPDEPLOY_VCENTER_URL is set), a private libvirtd as the KVM zone KVM0 with a "
        "demo VM and its VM snapshot (unless SNAPDEPLOY_KVM_ZONES is set; empty for none; "
        "needs root), every service and the gateway. Writes "
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
    up.add_argument("--nats-nodes", type=_at_least_one, default=1, metavar="N",
                    help="nats-server nodes to run (default: 1). More than one form a cluster "
                    "on loopback (each node its own ports and JetStream folder, all reading "
                    "the same users), the events stream replicated on every node (at most "
                    "5); the services connect to all of them and fail over. 3 outlives the "
                    "loss of any one node")
    up.add_argument("--replicas", type=_at_least_one, default=1, metavar="N",
                    help="copies of each service to run (default: 1). Planner, seeder, "
                    "cloner and volume copies share their durable consumer's work; relay "
                    "and projector copies stand by for the active one; the first gateway "
                    "listens on the API's address and each other on a port of its own "
                    "(stack.json's gateway_urls: the backends of a load balancer)")
    # The background launcher `--detach` starts: its output goes to a log, so it prints no
    # secret key (the `up --detach` that started it prints them to the terminal).
    up.add_argument("--hide-keys", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(run=_up)

    down = commands.add_parser(
        "down", help="stop a stack started with `up`",
        description="Stop everything `snapdeploy up` started for STATE_DIR, KVM guests "
        "included. Only processes that stack.json records with their start time and command "
        "line are signalled, and QEMU processes its libvirtd's pid files name as its guests.",
    )
    down.add_argument("--state-dir", default=".state", help="the stack's state folder")
    down.set_defaults(run=_down)

    console = commands.add_parser(
        "console", help="print a KVM VM's serial console",
        description="Print what a VM of the KVM zone `up` runs has written on its serial "
        "console so far (the file STATE_DIR/libvirt/log/qemu/VM-console.log, which the "
        "summary of `up` names). VM is the libvirt domain's name: the demo VM's (kvm-demo), "
        "or a deployed VM's instancename as listVirtualMachines shows it.",
    )
    console.add_argument("vm", metavar="VM", help="the VM's name on its KVM host")
    console.add_argument("--state-dir", default=".state", help="the stack's state folder "
                         "(default: .state)")
    console.add_argument("-f", "--follow", action="store_true",
                         help="keep printing what it writes, until Ctrl-C")
    console.set_defaults(run=_console)

    projections = commands.add_parser(
        "projections", help="maintain the read models",
        description="Maintain the read models projected from the event store.",
    )
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild", help="replay the event store from position 0 into fresh read models",
        description="Truncate every read model and replay all events from position 0 in one "
        "transaction (readers see the old tables until it commits). From 100,000 events, "
        "on two cores or more, the VM rows are folded in a second process. Connects as "
        "SNAPDEPLOY_DATABASE_ADMIN_URL (the schema's owner), else SNAPDEPLOY_DATABASE_URL.",
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

    nats_auth = commands.add_parser(
        "nats-auth", help="write nats-server's users and permissions",
        description="Write the authorization section of nats-server's configuration (mode "
        "0600; passwords only as bcrypt hashes): one user per service (relay, planner, "
        "seeder, cloner, volume, gateway), a read-only monitor, and one user per live API "
        "key (user name: the API key; password: its secret key) allowed to publish on "
        "snapdeploy.api.> and read its own account's snapdeploy.audit.<account>.>. With "
        "--state-dir, for a stack `up` runs: rewrites STATE_DIR/nats/auth.conf and has its "
        "nats-server reload (the gateway also does this whenever keys change). With --out, "
        "for a NATS server of your own: the identities' passwords derive from "
        f"{IDENTITY_SECRET_ENV}; include FILE in the server's configuration, then reload "
        "it (nats-server --signal reload). Reads keys from DATABASE_URL.",
    )
    nats_auth.add_argument("--state-dir", default=None, help="a stack started by `up`")
    nats_auth.add_argument("--out", default=None, metavar="FILE",
                           help="where to write the authorization section")
    nats_auth.add_argument("--passwords", action="store_true",
                           help="also print each service identity's password (give each "
                           "service its own as SNAPDEPLOY_NATS_PASSWORD, with "
                           "SNAPDEPLOY_NATS_USER set to its name)")
    nats_auth.set_defaults(run=_nats_auth)

    api_docs = commands.add_parser(
        "api-docs", help="print the API's description (docs/api.md, or OpenAPI)",
        description="Print the description of every API command (parameters, types, "
        "response fields, roles), generated from the gateway's command registry: Markdown "
        "(what docs/api.md holds: snapdeploy api-docs > docs/api.md), or with --format "
        "openapi the OpenAPI 3 document the gateway serves at /client/openapi.json. Needs "
        "no running stack.",
    )
    api_docs.add_argument("--format", choices=("markdown", "openapi"), default="markdown",
                          help="markdown (default) or openapi (JSON)")
    api_docs.set_defaults(run=_api_docs)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
