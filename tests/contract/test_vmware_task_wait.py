"""The vSphere driver's task waiter on vcsim: a task that ended before the wait began, and one
that runs past the polling phase (followed by the session's task collector), are both
reported right, successes with their results and failures with their task ids.

This vcsim of the test's own makes every ``ReconfigVm`` task take ``SLOW_TASK_MS`` (the
simulator's task delay, set at start with ``-method-delay``; ``LockHandoff:0`` lets the
delayed task leave its VM's lock free, so its VM can be read meanwhile).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pyVmomi import vim

from shared.drivers import vmware
from shared.drivers.base import HypervisorError
from shared.stack._servers import Server, free_port, start_vcsim
from tests.harness.vsphere import Vcsim

SLOW_TASK_MS = 2500
ConfigSpec: Any = vim.vm.ConfigSpec  # an untyped constructor
USER = "admin"


@pytest.fixture(scope="module")
def slow_vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("slow-vcsim")
    (state / "logs").mkdir()
    server = start_vcsim(state, free_port(), USER, secrets.token_hex(8),
                         ["-method-delay", f"ReconfigVm:{SLOW_TASK_MS},LockHandoff:0"])
    yield server
    server.stop()


@pytest.fixture
async def driver(slow_vcsim: Server) -> AsyncIterator[vmware.VSphere]:
    session = await vmware.VSphere.connect(slow_vcsim.url, USER, slow_vcsim.password,
                                           verify_tls=False, call_timeout=30)
    yield session
    await session.close()


@pytest.fixture
def harness(slow_vcsim: Server) -> Vcsim:
    return Vcsim(slow_vcsim.url, USER, slow_vcsim.password)


def powered_on_vms(harness: Vcsim) -> list[Any]:
    return [vm for vm, p in harness.props(vim.VirtualMachine, ["runtime.powerState",
                                                               "config.template"])
            if p["runtime.powerState"] == "poweredOn" and not p.get("config.template")]


async def wait(driver: vmware.VSphere, task: Any, what: str) -> Any:
    return await driver.call(driver._wait, driver._mo(task._moId), what)


def filters_left(driver: vmware.VSphere) -> list[Any]:
    collector = driver._tasks._collector
    return [] if collector is None else list(collector.filter)


@pytest.mark.parametrize("polling", [True, False], ids=["polled", "collector"])
async def test_a_task_that_ended_before_the_wait_is_reported(
    driver: vmware.VSphere, harness: Vcsim, monkeypatch: pytest.MonkeyPatch, polling: bool,
) -> None:
    if not polling:  # straight to the task collector, whose filter is made after the end
        monkeypatch.setattr(vmware, "POLL_PHASE_S", 0.0)
    vm = powered_on_vms(harness)[0]
    # Ended before the driver waits: a snapshot (its result a snapshot), then a failure.
    task = vm.CreateSnapshot_Task(name=f"before-{polling}", description="", memory=False,
                                  quiesce=False)
    snapshot = await asyncio.to_thread(harness.wait, task)
    started = time.monotonic()
    result = await wait(driver, task, "snapshot")
    assert result._moId == snapshot._moId
    failing = vm.PowerOnVM_Task()  # already on: vCenter's task ends in InvalidPowerState
    for _ in range(100):
        state = harness.props(vim.Task, ["info.state"], failing)[0][1]["info.state"]
        if state == "error":
            break
        await asyncio.sleep(0.02)
    with pytest.raises(HypervisorError) as failed:
        await wait(driver, failing, "power-on")
    assert failed.value.task_id == failing._moId
    assert failed.value.fault == "InvalidPowerState" and not failed.value.transient
    assert time.monotonic() - started < 5  # seen, not waited out
    assert filters_left(driver) == []


async def test_tasks_longer_than_polling_are_followed_by_the_collector(
    driver: vmware.VSphere, harness: Vcsim,
) -> None:
    """Three slow reconfigures at once (one thread in WaitForUpdatesEx, two waiting on it)
    and a slow one that fails: each reported at its end, filters destroyed."""
    vms = powered_on_vms(harness)[:4]
    assert len(vms) == 4
    started = time.monotonic()

    async def reconfigure(vm: Any, spec: Any) -> tuple[str, Any]:
        return await driver.call(driver._run, lambda: driver._mo(vm._moId).ReconfigVM_Task(
            spec), f"reconfigure of {vm._moId}")

    good = [reconfigure(vm, ConfigSpec(annotation="slow")) for vm in vms[:3]]
    bad = reconfigure(vms[3], ConfigSpec(guestId="no-such-guest"))
    *done, failed = await asyncio.gather(*good, bad, return_exceptions=True)
    took = time.monotonic() - started
    assert all(isinstance(d, tuple) and d[0].startswith("task-") for d in done), done
    assert isinstance(failed, HypervisorError) and failed.task_id, failed
    assert failed.fault == "InvalidArgument" and not failed.transient
    assert SLOW_TASK_MS / 1000 <= took < SLOW_TASK_MS / 1000 + vmware.POLL_PHASE_S + 3
    assert driver._tasks._collector is not None  # the long ones went through it
    assert filters_left(driver) == []
    for vm in vms[:3]:
        assert harness.props(vim.VirtualMachine, ["config.annotation"], vm)[0][1][
            "config.annotation"] == "slow"
    # And the collector serves the next long task as well.
    task_id, _ = await reconfigure(vms[0], ConfigSpec(annotation="again"))
    assert task_id.startswith("task-") and filters_left(driver) == []


async def test_filters_made_and_destroyed_at_once_all_go(
    driver: vmware.VSphere, harness: Vcsim,
) -> None:
    """Many waits starting and ending at once leave no filter behind (vcsim's collector
    changes its filter list without a lock: a filter made while another is destroyed can
    bring it back, unless the driver makes one such call at a time)."""
    vm = powered_on_vms(harness)[0]
    task = vm.CreateSnapshot_Task(name="filters", description="", memory=False,
                                  quiesce=False)
    await asyncio.to_thread(harness.wait, task)
    tasks = driver._tasks
    mine = driver._mo(task._moId)

    def watch_and_unwatch() -> None:
        for _ in range(150):
            _, collector, task_filter = tasks._watch(mine)
            tasks._unwatch(task._moId, task_filter, collector)

    await asyncio.gather(*(asyncio.to_thread(watch_and_unwatch) for _ in range(8)))
    assert tasks._collector is not None
    assert filters_left(driver) == []
