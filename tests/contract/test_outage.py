"""A service that cannot reach NATS, PostgreSQL or vCenter says so in its log and on its
health endpoint, keeps retrying with backoff, and resumes without a restart.

One real ``python -m services.cloner`` (it needs all three) is started with every dependency
pointing at a free port where nothing listens yet. The servers are then started one by one
on those ports, in the order the service connects to them, and NATS is killed and brought
back while the service runs.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from shared.config import Settings
from shared.stack._servers import (
    Server,
    free_port,
    start_nats,
    start_postgres,
    start_vcsim,
    terminate,
)
from tests.helpers import start_service

T = TypeVar("T")
WITHIN_S = 40.0  # backoff tops out at 15 s between attempts: this leaves ample room
Health = tuple[int, dict[str, Any]]


def health(port: int) -> Health | None:
    """(HTTP status, body) of the service's /healthz, or None while it does not answer."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines the service has written so far."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(errors="replace").splitlines(keepends=True):
        if raw.endswith("\n") and raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def logged(path: Path, level: str, *words: str) -> bool:
    return any(line["level"] == level and all(w in line["msg"].lower() for w in words)
               for line in log_lines(path))


class Watch:
    """Polls the service; a timeout names what was awaited, the last health and the log."""

    def __init__(self, service: subprocess.Popen[bytes], health_port: int, log: Path) -> None:
        self.service = service
        self.health_port = health_port
        self.log = log
        self.last: Health | None = None

    def until(self, check: Callable[[], T | None], what: str, within: float = WITHIN_S) -> T:
        deadline = time.monotonic() + within
        while True:
            assert self.service.poll() is None, (
                f"the service exited with {self.service.returncode} while waiting for {what}; "
                f"log:\n{self.tail()}")
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last "
                                     f"/healthz: {self.last}; log:\n{self.tail()}")
            time.sleep(0.2)

    def health_where(self, check: Callable[[int, dict[str, str]], bool],
                     what: str) -> dict[str, str]:
        def probe() -> dict[str, str] | None:
            self.last = health(self.health_port)
            if self.last is None:
                return None
            status, body = self.last
            checks: dict[str, str] = body["checks"]
            return checks if check(status, checks) else None

        return self.until(probe, what)

    def logs(self, level: str, *words: str) -> None:
        self.until(lambda: logged(self.log, level, *words),
                   f"a {level} log line with {words}")

    def tail(self) -> str:
        if not self.log.exists():
            return "(no log yet)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-25:])


def degraded(status: int, checks: dict[str, str]) -> bool:
    return status == 503 and any(state != "ok" for state in checks.values())


def test_a_service_reports_each_missing_dependency_and_resumes_without_a_restart(
    tmp_path: Path,
) -> None:
    pg_port, nats_port, vcenter_port, health_port = (free_port() for _ in range(4))
    pg_password, nats_password, vcenter_password = (secrets.token_hex(12) for _ in range(3))

    # Create PostgreSQL's data folder and database now, then stop it: starting it again
    # on the same folder later takes a moment instead of an initdb.
    pg = start_postgres(tmp_path, pg_port, pg_password)
    database_url = pg.url
    pg.stop()
    assert not pg.alive()

    settings = Settings(
        database_url=database_url,
        nats_url=f"nats://127.0.0.1:{nats_port}", nats_user="snapdeploy",
        nats_password=nats_password,
        vcenter_url=f"https://127.0.0.1:{vcenter_port}/sdk", vcenter_user="admin",
        vcenter_password=vcenter_password, vcenter_verify_tls=False,
        health_listen=f"127.0.0.1:{health_port}",
    )
    log = tmp_path / "logs" / "cloner.log"
    service = start_service("cloner", settings, log.parent)
    pid = service.pid
    watch = Watch(service, health_port, log)
    servers: list[Server] = []
    try:
        # Nothing is up: 503, naming PostgreSQL (the first thing the cloner needs).
        checks = watch.health_where(
            lambda status, c: degraded(status, c) and c.get("postgres", "").startswith(
                "unreachable"), "postgres reported unreachable")
        assert "nats" not in checks or checks["nats"] != "ok"
        watch.logs("warning", "postgres", "unreachable")

        servers.append(start_postgres(tmp_path, pg_port, pg_password))
        checks = watch.health_where(
            lambda status, c: degraded(status, c) and c.get("postgres") == "ok"
            and c.get("nats", "ok") != "ok", "postgres ok, nats not")
        assert checks.get("vcenter", "") != "ok"
        # nats-py retries the first connection itself and reports each failure.
        watch.logs("warning", "nats", "connect")

        nats = start_nats(tmp_path, nats_port, "snapdeploy", nats_password)
        servers.append(nats)
        watch.health_where(
            lambda status, c: degraded(status, c) and c.get("nats") == "ok"
            and c.get("vcenter", "").startswith("unreachable"),
            "nats ok, vcenter reported unreachable")
        watch.logs("warning", "vcenter", "unreachable")

        servers.append(start_vcsim(tmp_path, vcenter_port, "admin", vcenter_password))
        checks = watch.health_where(lambda status, c: status == 200, "healthy")
        assert {"postgres", "nats", "vcenter"} <= set(checks)
        assert set(checks.values()) == {"ok"}
        assert service.pid == pid and service.poll() is None

        # NATS dies under the running service: the bus reports the disconnect.
        nats.process.kill()
        nats.process.wait()
        checks = watch.health_where(
            lambda status, c: status == 503 and c.get("nats", "ok") != "ok", "nats reported down")
        assert "disconnected" in checks["nats"]
        watch.logs("warning", "lost the connection to nats")

        # The same server comes back, on the same port with the same store.
        servers.remove(nats)
        servers.append(start_nats(tmp_path, nats_port, "snapdeploy", nats_password))
        watch.health_where(lambda status, c: status == 200, "healthy again after NATS returned")
        watch.logs("info", "reconnected to nats")
        assert service.pid == pid and service.poll() is None
        starts = [line for line in log_lines(log) if "starting; health" in line["msg"]]
        assert len(starts) == 1, "the service started more than once"

        # SIGTERM: a clean stop.
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=15) == 0, watch.tail()
        assert logged(log, "info", "cloner stopped")
        text = log.read_text(errors="replace")
        for secret in (pg_password, nats_password, vcenter_password):
            assert secret not in text, "a password is in the service's log"
    finally:
        terminate(service)
        for server in servers:
            server.stop()
