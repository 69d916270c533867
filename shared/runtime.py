"""What every snapdeploy process has: settings, logs, health, metrics, connections, signals.

A service's ``__main__`` is ``Runtime("planner").run(main)``: the runtime configures
logging, serves ``/healthz`` and ``/metrics`` on ``health_listen``, connects to PostgreSQL,
NATS and every configured hypervisor (retrying with backoff and saying so in the log and in
``/healthz``, one check per hypervisor session: "vcenter", "libvirt <zone>"), applies
schema migrations, and on SIGTERM or SIGINT cancels ``main`` and closes what it opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg
import uvloop
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import bus, config, db, drivers
from shared.drivers.base import Connection, Hypervisor, SessionLost
from shared.drivers.zones import Hypervisors, Pending, Session
from shared.eventstore import EventStore
from shared.log import configure
from shared.relay import Herald

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_MAX_S = 15.0
# On SIGTERM, how long consumers may take to finish the messages in hand before the rest
# are handed back to NATS.
SHUTDOWN_GRACE_S = 10.0
# How often a service asks each hypervisor (vCenter, each KVM zone's libvirt hosts) whether
# its session is still logged in.
VCENTER_CHECK_S = 5.0
# How long a service waits at start for each hypervisor before serving the others without it.
FIRST_ATTEMPT_S = 10.0


class Runtime:
    def __init__(self, service: str, settings: config.Settings | None = None) -> None:
        self.service = service
        self.settings = settings or config.load()
        # dependency name -> None when healthy, else what is wrong with it; "started" until
        # the service begins its work (``started``): /healthz answers from the first moment,
        # and a service still connecting is not up.
        self.checks: dict[str, str | None] = {"started": "starting"}
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self.health_port: int | None = None
        # Set on SIGTERM/SIGINT: stop taking work, finish what is in hand.
        self.stopping = asyncio.Event()
        self._consumers: list[asyncio.Event] = []
        # For a service that runs one active copy (``lead``): "active" or "standby".
        self.role: str | None = None

    # ---- health and metrics ---------------------------------------------------------

    def healthy(self) -> bool:
        return all(state is None for state in self.checks.values())

    def started(self) -> None:
        """The service is connected to what it needs and begins its work (its consumers,
        its lease or its standby, or its API): healthy from here on while its dependencies
        are."""
        if self.checks.get("started") is not None:
            self.checks["started"] = None
            log.info("%s started", self.service)

    async def health(self, _: web.Request) -> web.Response:
        body = {
            "service": self.service,
            "status": "ok" if self.healthy() else "degraded",
            "checks": {name: state or "ok" for name, state in self.checks.items()},
            **({"role": self.role} if self.role else {}),
        }
        return web.json_response(body, status=200 if self.healthy() else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def add_health_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/metrics", self.metrics)

    async def serve_health(self) -> None:
        app = web.Application()
        self.add_health_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = self.settings.health_listen.rsplit(":", 1)
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.health_port = sockets[0].getsockname()[1]
        self._closers.append(runner.cleanup)

    # ---- dependencies ---------------------------------------------------------------

    async def retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, with backoff, reporting ``what`` as down."""
        delay = 0.5
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                reason = f"unreachable: {type(exc).__name__}: {exc}"
                if self.checks.get(what) not in (reason, "connecting") or delay == 0.5:
                    log.warning("%s %s; retrying every %.0fs at most", what, reason, BACKOFF_MAX_S)
                self.checks[what] = reason
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            previous = self.checks.get(what)
            if previous == "connecting":
                log.info("connected to %s", what)
            elif previous is not None:
                log.info("%s reachable again", what)
            self.checks[what] = None
            return result

    async def postgres(self, *, group_commit: bool = False) -> EventStore:
        """The event store, once PostgreSQL answers and the schema is current; with
        ``group_commit``, concurrent commits share statements (``EventStore``)."""

        async def open_pool() -> asyncpg.Pool:
            pool = await db.create_pool(self.settings.database_url, timeout=5,
                                        server_settings={"application_name": self.service})
            try:
                async with pool.acquire() as conn:
                    await _current_schema(conn)
            except BaseException:
                await pool.close()
                raise
            return pool

        self.checks.setdefault("postgres", "connecting")
        pool = await self.retry("postgres", open_pool)
        self._closers.append(pool.close)
        self._spawn(self._watch_postgres(pool))
        return EventStore(pool, group_commit=group_commit)

    async def _watch_postgres(self, pool: asyncpg.Pool) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                async with pool.acquire(timeout=5) as conn:
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                if self.checks.get("postgres") is None:
                    log.warning("postgres unreachable: %s", exc)
                self.checks["postgres"] = f"unreachable: {type(exc).__name__}: {exc}"
            else:
                if self.checks.get("postgres") is not None:
                    log.info("postgres reachable again")
                self.checks["postgres"] = None

    async def jetstream(self) -> tuple[NATS, JetStreamContext]:
        def on_state(state: str | None) -> None:
            self.checks["nats"] = state

        self.checks.setdefault("nats", "connecting")
        nc = await self.retry("nats", lambda: bus.connect(self.settings, self.service,
                                                           on_state=on_state))
        self._closers.append(lambda: bus.close(nc))
        return nc, nc.jetstream()

    async def keep_running(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` until shutdown: when it fails, log, report ``what`` unhealthy, back
        off, rerun."""
        delay = 0.5
        while not self.stopping.is_set():
            started = asyncio.get_running_loop().time()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.checks[what] = f"failing: {type(exc).__name__}: {exc}"
                log.exception("%s failed; restarting it in %.1fs", what, delay)
            if self.stopping.is_set():
                return
            if asyncio.get_running_loop().time() - started > 60:
                delay = 0.5
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)
            self.checks[what] = None

    async def lead(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (as ``keep_running`` does) only while this copy holds the lease
        ``what`` (``shared.db.Lease``): one copy of the service is active, the others stand
        by and take over when it dies. ``/healthz`` says which this copy is (``role``); a
        standby is healthy. Losing the lease stops the work, and the copy stands by again."""
        self.started()
        while not self.stopping.is_set():
            lease = db.Lease(self.settings.database_url, what, holder=self.service)
            self.role = "standby"
            log.info("%s standing by: waiting for the %s lease", self.service, what)
            await self.retry("postgres", lease.acquire)
            self.role = "active"
            log.info("%s took the %s lease: active", self.service, what)
            running = asyncio.ensure_future(self.keep_running(what, work))
            lost = asyncio.ensure_future(lease.lost())
            try:
                await asyncio.wait({running, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost.done():
                    log.warning("%s lost the %s lease (its PostgreSQL session ended); "
                                "stopping and standing by", self.service, what)
            finally:
                for task in (running, lost):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                # The work stopped, perhaps while it was failing: a standby reports no
                # state of work it does not run, and the next active turn starts clean.
                self.checks.pop(what, None)
                await lease.release()

    async def hypervisors(self) -> Hypervisors:
        """A session with every hypervisor the settings name (each vCenter of
        ``vcenter_url`` and ``vcenters``, each KVM zone of ``kvm_zones``), routed by zone.

        Each is tried once, at most ``FIRST_ATTEMPT_S``; one that does not answer does not
        hold the others back: it is ``Pending`` (its zones' work waits, refused as
        transient) and opened in the background, retried with backoff, then put in its
        place. Each session is a check of its own in ``/healthz``, watched from then on.

        Raises:
            SystemExit: the settings name no hypervisor.
        """
        try:
            wanted = drivers.connections(self.settings)
        except ValueError as exc:
            raise SystemExit(f"{self.service}: {exc}") from exc
        for connection in wanted:
            self.checks.setdefault(connection.name, "connecting")
        attempts = [asyncio.ensure_future(c.open()) for c in wanted]
        try:
            await asyncio.wait(attempts, timeout=FIRST_ATTEMPT_S)
        except asyncio.CancelledError:  # stopping before it started: no login left behind
            for attempt in attempts:
                attempt.cancel()
            raise
        hypervisors = Hypervisors([self._first_attempt(c, a) for c, a in zip(wanted, attempts,
                                                                              strict=True)])
        for session, attempt in zip(hypervisors.sessions, attempts, strict=True):
            if isinstance(session, Pending):
                self._spawn(self._open_later(hypervisors, session, attempt))
        return hypervisors

    def _first_attempt(self, connection: Connection, attempt: asyncio.Future[Hypervisor]
                       ) -> Session:
        """The session ``attempt`` opened, or ``Pending`` if it has not (yet)."""
        if not attempt.done():
            error: BaseException = TimeoutError(f"no answer within {FIRST_ATTEMPT_S:g}s")
        elif (failed := attempt.exception()) is not None:
            error = failed
        else:
            log.info("connected to %s", connection.name)
            self.checks[connection.name] = None
            self._opened(connection.name, attempt.result())
            return attempt.result()
        reason = f"unreachable: {type(error).__name__}: {error}"
        log.warning("%s %s; its zones wait for it, the others are served meanwhile",
                    connection.name, reason)
        self.checks[connection.name] = reason
        return Pending(connection, error)

    async def _open_later(self, hypervisors: Hypervisors, pending: Pending,
                          attempt: asyncio.Future[Hypervisor]) -> None:
        """Open the session of ``pending`` once it answers (the first ``attempt`` still
        under way is awaited, not abandoned, so its login is not left behind), then put it
        in its place."""
        connection = pending.connection
        try:
            session = await attempt
        except Exception:
            session = await self.retry(connection.name, connection.open)
        else:
            self.checks[connection.name] = None
        self._opened(connection.name, session)
        log.info("%s answers now: its zones are served", connection.name)
        await hypervisors.opened(pending, session)

    def _opened(self, name: str, session: Hypervisor) -> None:
        self._closers.append(session.close)
        self._spawn(self._watch_session(name, session))

    async def _watch_session(self, name: str, session: Hypervisor) -> None:
        """Report the session ``name`` in /healthz as it is now: a lost session (the
        hypervisor restarted, or the session expired) is logged in again; while that
        fails, or the hypervisor does not answer, the check is unhealthy."""
        while True:
            await asyncio.sleep(VCENTER_CHECK_S)
            try:
                await session.check_session()
            except SessionLost as exc:
                state: str | None = str(exc)
            except Exception as exc:
                state = f"unreachable: {type(exc).__name__}: {exc}"
            else:
                state = None
            previous = self.checks.get(name)
            if state is not None and previous != state:
                log.warning("%s: %s", name, state)
            elif state is None and previous is not None:
                log.info("%s reachable again, logged in", name)
            self.checks[name] = state

    async def consume(self, name: str, js: JetStreamContext, store: EventStore,
                      handlers: Mapping[str, bus.Handler], *, one_active: bool = False) -> None:
        """Run a durable consumer with ``handlers`` until shutdown, restarting it on failure;
        with ``one_active``, only while this copy holds the lease ``name`` (``lead``): the
        other copies stand by, holding no message. What the handlers commit is published at
        once (``Herald``), the relay behind it."""
        store.publisher = Herald(js, name)
        consumer = bus.Consumer(name, js, store, handlers, stopping=self.stopping)
        finished = asyncio.Event()
        self._consumers.append(finished)
        if one_active:
            finished.set()  # a standby has nothing to finish at shutdown

            async def active() -> None:
                finished.clear()
                try:
                    await consumer.run()
                finally:
                    finished.set()

            await self.lead(name, active)
            return
        self.started()
        try:
            await self.keep_running(f"consumer {name}", consumer.run)
        finally:
            finished.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._closers.append(cancel)

    # ---- lifecycle ------------------------------------------------------------------

    def serve(self, service: type[bus.HypervisorService], description: str) -> None:
        """Run a service that acts on hypervisors: its handlers on a durable consumer named
        after the service, with the store and a session per hypervisor."""

        async def main(rt: Runtime) -> None:
            # Handlers at work at once: their commits share statements.
            store = await rt.postgres(group_commit=True)
            _, js = await rt.jetstream()
            hypervisors = await rt.hypervisors()
            await rt.consume(rt.service, js, store, service(store, hypervisors).handlers())

        self.run(main, description)

    def run(self, main: Callable[[Runtime], Awaitable[None]], description: str) -> None:
        """Run ``main(self)`` until it returns or a SIGTERM/SIGINT arrives."""
        parser = argparse.ArgumentParser(
            prog=f"python -m services.{self.service}",
            description=description,
            epilog="Settings come from SNAPDEPLOY_* environment variables (see README.md): "
            + ", ".join(f"SNAPDEPLOY_{name.upper()}" for name in config.Settings.__struct_fields__),
        )
        parser.parse_args()
        configure(self.service, self.settings.log_level)
        # What importing made (pyVmomi's type tables, the protocol's classes) lives as long as
        # the process: out of the collector's sight, its full collections stay short.
        gc.freeze()
        # uvloop's event loop: its sockets, timers and callbacks cost a service less CPU
        # than the standard loop's (every statement and message is a socket write).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._run(main))

    async def _run(self, main: Callable[[Runtime], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self._main(main))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self._shutdown(task)))
        try:
            await task
        except asyncio.CancelledError:
            log.info("%s stopping on signal", self.service)
        finally:
            for close in reversed(self._closers):
                with contextlib.suppress(Exception):
                    await close()
            log.info("%s stopped", self.service)

    async def _shutdown(self, task: asyncio.Future[None]) -> None:
        """Stop taking work, give the consumers time to finish what they hold, then stop."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        pending = [c for c in self._consumers if not c.is_set()]
        if pending:
            log.info("%s finishing the messages in hand (at most %.0fs)", self.service,
                     SHUTDOWN_GRACE_S)
            waits = [asyncio.ensure_future(c.wait()) for c in pending]
            _, not_done = await asyncio.wait(waits, timeout=SHUTDOWN_GRACE_S)
            for waiter in not_done:
                waiter.cancel()
            if not_done:
                log.warning("%s handing unfinished messages back to NATS", self.service)
        task.cancel()

    async def _main(self, main: Callable[[Runtime], Awaitable[None]]) -> None:
        await self.serve_health()
        log.info("%s starting; health and metrics on port %s", self.service, self.health_port)
        await main(self)


async def _current_schema(conn: asyncpg.Connection) -> None:
    """Apply pending migrations when this role may (a single-role database); a role with
    only the services' rights waits for `snapdeploy db migrate` to be run by the owner."""
    missing = await db.pending(conn)
    if not missing:
        return
    try:
        await db.migrate(conn)
    except asyncpg.InsufficientPrivilegeError:
        raise RuntimeError(f"the schema is behind ({', '.join(missing)} not applied) and this "
                           "role may not change it: run `snapdeploy db migrate` with the "
                           "schema owner's SNAPDEPLOY_DATABASE_ADMIN_URL") from None
