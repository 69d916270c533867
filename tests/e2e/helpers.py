"""Small steps the end-to-end tests share: finding things through the API, reading the store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cs import CloudStack, CloudStackApiException


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item["name"] == name:
            return item
    raise AssertionError(f"{name} not in {[i['name'] for i in items]}")


def offering(cloud: CloudStack, name: str) -> str:
    return str(by_name(cloud.listServiceOfferings()["serviceoffering"], name)["id"])


def network(cloud: CloudStack, name: str) -> str:
    return str(by_name(cloud.listNetworks()["network"], name)["id"])


def host(cloud: CloudStack, name: str) -> dict[str, Any]:
    return by_name(cloud.listHosts()["host"], name)


def vm_named(cloud: CloudStack, name: str) -> dict[str, Any]:
    return by_name(cloud.listVirtualMachines(name=name)["virtualmachine"], name)


def snapshot(cloud: CloudStack, vm_id: str, name: str, memory: bool = False) -> str:
    taken = cloud.createVMSnapshot(virtualmachineid=vm_id, name=name,
                                   snapshotmemory=str(memory).lower())
    return str(taken["vmsnapshot"]["id"])


def fail_text(call: Any) -> str:
    with pytest.raises(CloudStackApiException) as failed:
        call()
    error = failed.value.error
    assert error["errorcode"] == 431, error
    return str(error["errortext"])


def seeds_started(stack: dict[str, Any], snapshot_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            found: int = await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = 'TemplateSeedStarted'"
                " AND data ->> 'vm_snapshot_id' = $1", snapshot_id)
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


def clone_calls(stack: dict[str, Any]) -> list[str]:
    """The CloneVM_Task requests vcsim received, as SOAP text."""
    trace = Path(stack["vcsim_trace"]).read_text(errors="replace")
    return [m.group(0) for m in re.finditer(r"<CloneVM_Task xmlns.*?</CloneVM_Task>", trace, re.S)]




def events_of_type(stack: dict[str, Any], event_type: str, **data: str) -> int:
    """How many events of ``event_type`` (with these payload fields) the store holds."""

    async def count() -> int:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            where = " AND ".join(f"data ->> '{k}' = ${i + 2}" for i, k in enumerate(data))
            found: int = await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = $1" + (f" AND {where}" if where else ""),
                event_type, *data.values())
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


def copy_calls(stack: dict[str, Any]) -> list[str]:
    """The CopyVirtualDisk_Task requests vcsim received, as SOAP text."""
    trace = Path(stack["vcsim_trace"]).read_text(errors="replace")
    return [m.group(0) for m in
            re.finditer(r"<CopyVirtualDisk_Task xmlns.*?</CopyVirtualDisk_Task>", trace, re.S)]


def wait_for(check: Any, what: str, timeout: float = 20.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def account(cloud: CloudStack, stack: dict[str, Any], name: str) -> tuple[CloudStack, str]:
    """A new user account made by the admin, and a cs client with its user's keys."""
    created = cloud.createAccount(username=name, password="not-kept", email=f"{name}@example.com",
                                  firstname=name, lastname="Example", accounttype="0")
    user = created["account"]["user"][0]
    keys = cloud.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=stack["api_url"], key=keys["apikey"], secret=keys["secretkey"],
                        fetch_result=True, poll_interval=0.2, job_timeout=120)
    return client, created["account"]["id"]


def refused(call: Any) -> dict[str, Any]:
    """The error envelope of a call that must fail."""
    with pytest.raises(CloudStackApiException) as caught:
        call()
    error: dict[str, Any] = caught.value.error
    return error
