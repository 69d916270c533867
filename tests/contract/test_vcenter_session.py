"""The driver's vCenter session against a real vcsim: after vCenter restarts (and forgets
every session) or a session is terminated, every kind of driver call logs in again and
succeeds; while logging in again fails, the service's /healthz is 503 naming vcenter."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from shared import runtime
from shared.config import Settings
from shared.drivers.vmware import SessionLost, VSphere
from shared.drivers.zones import Pending
from shared.runtime import Runtime
from shared.stack._servers import MEMORY_FS, Server, free_port, start_vcsim, vcsim_files
from tests.harness.vsphere import Vcsim

USER = "admin"


class RestartableVcsim:
    """A vcsim of this test's own, restarted on the same port (a fresh inventory)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.server = self._start()

    def _start(self) -> Server:
        return start_vcsim(self.state, self.port, USER, self.password)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/sdk"

    def restart(self) -> None:
        self.server.process.kill()
        self.server.process.wait()
        self.server = self._start()

    def fail_logins(self) -> None:
        self._harness("POST", {"method": "Login", "message": "injected: logins refused",
                               "max_count": 0})

    def clear_faults(self) -> None:
        self._harness("DELETE", None)

    def _harness(self, method: str, body: dict[str, Any] | None) -> None:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/harness/faults", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(),
                                    timeout=10) as response:
            assert response.status == 204

    def terminate_sessions(self, *, then_refuse_logins: bool = False) -> int:
        """End every session but the one this call opens, as an administrator would;
        refuse logins from then on if asked (installed before, so no login slips in)."""
        admin = Vcsim(self.url, USER, self.password)
        if then_refuse_logins:
            self.fail_logins()
        manager = admin.content.sessionManager
        try:
            mine = manager.currentSession.key
            others = [s.key for s in manager.sessionList if s.key != mine]
            manager.TerminateSession(others)
            return len(others)
        finally:
            manager.Logout()


@pytest.fixture
def vcenter(tmp_path: Path) -> Iterator[RestartableVcsim]:
    (tmp_path / "logs").mkdir()
    server = RestartableVcsim(tmp_path)
    yield server
    server.server.stop()


def test_vcsims_datastore_files_are_its_own_and_go_with_it(vcenter: RestartableVcsim) -> None:
    """The files vcsim writes for its datastores are in the folder ``vcsim_files`` names
    (in memory where the machine has a memory filesystem), not left in the temporary
    folder; a copy started again on the port of one killed replaces its files, and stop
    removes them."""
    files = vcsim_files(vcenter.state, vcenter.port)
    assert vcenter.server.scratch == files
    if MEMORY_FS.is_dir():
        assert files.parent == MEMORY_FS
    [first] = list(files.glob("govcsim-*"))
    vcenter.restart()
    [again] = list(files.glob("govcsim-*"))
    assert again != first and not first.exists()
    vcenter.server.stop()
    assert not files.exists()


async def every_kind_of_call(session: VSphere) -> None:
    """Reads through views and the property collector, a lookup, and a task."""
    [inventory] = await session.inventory()
    assert inventory.vms and await session.datacenters() == [inventory.datacenter_name]
    vm = next(v for v in inventory.vms if v.powered_on)
    assert await session.find_vm(vm.name) == vm.ref
    assert await session.vm_powered_on(vm.ref)
    snapshot_ref, task = await session.create_snapshot(vm.ref, "after-login", "", False, False)
    assert snapshot_ref and task
    assert (await session.snapshot_info(vm.ref, snapshot_ref)).name == "after-login"


async def test_every_call_logs_in_again_after_vcenter_restarts(
    vcenter: RestartableVcsim,
) -> None:
    session = await VSphere.connect(vcenter.url, USER, vcenter.password, verify_tls=False,
                                    call_timeout=10)
    try:
        await every_kind_of_call(session)
        vcenter.restart()  # every session is forgotten, the inventory is fresh
        await every_kind_of_call(session)
        assert vcenter.terminate_sessions() >= 1
        await every_kind_of_call(session)
        await session.check_session()
    finally:
        await session.close()


async def test_health_is_503_for_vcenter_while_logging_in_again_fails(
    vcenter: RestartableVcsim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "VCENTER_CHECK_S", 0.2)
    rt = Runtime("cloner", Settings(vcenter_url=vcenter.url, vcenter_user=USER,
                                    vcenter_password=vcenter.password,
                                    vcenter_verify_tls=False, vcenter_timeout=10))

    async def health() -> tuple[int, dict[str, Any]]:
        response = await rt.health(make_mocked_request("GET", "/healthz"))
        assert response.text is not None
        return response.status, json.loads(response.text)

    async def until(status: int) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                got, body = await health()
                if got == status:
                    return body
                await asyncio.sleep(0.1)

    [session] = (await rt.hypervisors()).sessions
    assert not isinstance(session, Pending)
    try:
        assert (await health())[0] == 503  # connected, but not yet taking work
        rt.started()
        assert (await health())[0] == 200
        vcenter.terminate_sessions(then_refuse_logins=True)
        body = await until(503)
        assert body["checks"]["vcenter"].startswith("vCenter session lost; logging in again "
                                                    "failed"), body
        with pytest.raises(SessionLost):
            await session.inventory()

        vcenter.clear_faults()
        body = await until(200)
        assert body["checks"]["vcenter"] == "ok"
        assert await session.inventory()
    finally:
        for close in reversed(rt._closers):
            await close()
