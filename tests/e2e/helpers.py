"""Small steps the end-to-end tests share: finding things through the API, reading the store."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import nats
import pytest
from cs import CloudStack, CloudStackApiException

from proto.commands import DEPLOY_SUBJECT, DeployVirtualMachine
from services.gateway.auth import sign


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


def _rows(stack: dict[str, Any], sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query on the stack's database, on a connection of its own."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(read())


def _payload_is(data: dict[str, str], first: int, alias: str = "") -> str:
    """SQL conditions that the payload fields ``data`` hold these values (parameters from
    ``$first``, in ``data``'s order), each after an AND."""
    return "".join(f" AND {alias}data ->> '{k}' = ${first + i}" for i, k in enumerate(data))


def seeds_started(stack: dict[str, Any], snapshot_id: str) -> int:
    return events_of_type(stack, "TemplateSeedStarted", vm_snapshot_id=snapshot_id)


def clone_calls(stack: dict[str, Any]) -> list[str]:
    """The CloneVM_Task requests vcsim received, as SOAP text."""
    trace = Path(stack["vcsim_trace"]).read_text(errors="replace")
    return [m.group(0) for m in re.finditer(r"<CloneVM_Task xmlns.*?</CloneVM_Task>", trace, re.S)]




def events_of_type(stack: dict[str, Any], event_type: str, **data: str) -> int:
    """How many events of ``event_type`` (with these payload fields) the store holds."""
    return int(_rows(stack, "SELECT count(*) FROM events WHERE type = $1"
                     + _payload_is(data, 2), event_type, *data.values())[0][0])


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


def stream_events(stack: dict[str, Any], key: str, secret: str, until: str) -> list[str]:
    """The audit stream's lines for a key, from the start, until one holds ``until`` (or
    five seconds pass)."""
    params = [("apikey", key), ("after", "0")]
    params.append(("signature", sign(params, secret)))
    lines: list[str] = []

    async def read() -> None:
        async with aiohttp.ClientSession() as http, http.get(stack["audit_stream_url"],
                                                              params=params) as response:
            async for raw in response.content:
                lines.append(raw.decode())
                if until in lines[-1]:
                    return

    async def bounded() -> None:
        try:
            await asyncio.wait_for(read(), 5)
        except TimeoutError:
            pass

    asyncio.run(bounded())
    return lines


async def nats_client(stack: dict[str, Any], key: str, secret: str,
                      errors: list[str] | None = None) -> Any:
    """A NATS connection as the key pair's own identity (replies under its inbox prefix);
    a key registered a moment ago becomes an identity within seconds, so connecting is
    retried for a while. Errors the server reports (permission violations) go to
    ``errors``."""

    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    for _ in range(100):
        try:
            return await nats.connect(stack["nats_url"], user=key, password=secret,
                                      inbox_prefix=f"_INBOX.{key}", error_cb=on_error,
                                      allow_reconnect=False, connect_timeout=2)
        except Exception:  # not (yet) an identity the server knows
            await asyncio.sleep(0.1)
    raise AssertionError(f"NATS never accepted the identity of key {key[:8]}...")


def nats_deploy(stack: dict[str, Any], key: str, secret: str, **fields: Any) -> dict[str, Any]:
    """A signed deploy request on the NATS door, as the key's owner; its reply."""
    expires = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    unsigned = DeployVirtualMachine(apikey=key, expires=expires, **fields)
    request = msgspec.structs.replace(unsigned, signature=sign(unsigned.signed_params(),
                                                               secret))

    async def publish() -> bytes:
        nc = await nats_client(stack, key, secret)
        try:
            reply = await nc.request(DEPLOY_SUBJECT, msgspec.json.encode(request), timeout=10)
            data: bytes = reply.data
            return data
        finally:
            await nc.close()

    answer: dict[str, Any] = msgspec.json.decode(asyncio.run(publish()))
    return answer


def kvm_console(stack: dict[str, Any], name: str) -> str:
    """What the KVM VM ``name`` (its name on the host) printed on its serial console so far
    (the file is written anew each time its QEMU starts)."""
    zone = stack.get("kvm")
    assert zone, f"the stack runs no KVM zone: {stack.get('kvm_zones')!r}"
    path = Path(zone["console_logs"]) / f"{name}-console.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_console(stack: dict[str, Any], name: str, text: str, times: int = 1,
                     timeout: float = 120.0) -> str:
    """The console of the KVM VM ``name`` once it has printed ``text`` ``times`` times."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        printed = kvm_console(stack, name)
        if printed.count(text) >= times:
            return printed
        time.sleep(0.25)
    raise AssertionError(f"{name} did not print {text!r} {times} time(s) in {timeout:.0f}s: "
                         f"{kvm_console(stack, name)[-2000:]}")


def finished_job(cloud: CloudStack, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """queryAsyncJobResult of a job once it has finished (jobstatus 1 or 2)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result: dict[str, Any] = cloud.queryAsyncJobResult(jobid=job_id, fetch_result=False)
        if result["jobstatus"] != 0:
            return result
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout:.0f}s")


def placed_from_snapshot(stack: dict[str, Any], snapshot_id: str) -> int:
    """How many VMs deployed from the VM snapshot ``snapshot_id`` the planner has placed."""
    return int(_rows(stack, "SELECT count(*) FROM events p JOIN events r"
                     " ON r.stream_id = p.stream_id AND r.type = 'VmDeployRequested'"
                     " AND r.data ->> 'vm_snapshot_id' = $1 WHERE p.type = 'VmPlaced'",
                     snapshot_id)[0][0])


def event_positions(stack: dict[str, Any], event_type: str, **data: str) -> list[int]:
    """The global positions of the events of ``event_type`` (with these payload fields) the
    store holds, in order."""
    rows = _rows(stack, "SELECT position FROM events WHERE type = $1" + _payload_is(data, 2)
                 + " ORDER BY position", event_type, *data.values())
    return [int(row["position"]) for row in rows]


def kvm_zone(stack: dict[str, Any]) -> dict[str, Any]:
    """The stack's KVM zone as ``stack.json`` describes it (a module without ``KVM = True``
    has none, and fails here)."""
    zone = stack.get("kvm")
    assert zone, f"the stack runs no KVM zone: {stack.get('kvm_zones')!r}"
    return dict(zone)


OPERATION = re.compile(r"\bop-[0-9a-f]{12}\b")


def logged_operations(stack: dict[str, Any], service: str) -> dict[str, str]:
    """The operations the KVM driver logged in a service's log (``shared.drivers.libvirt``
    logs each change it makes under an id of its own): id -> what it did, in log order."""
    found: dict[str, str] = {}
    for line in Path(stack["services"][service]["log"]).read_text(errors="replace").splitlines():
        try:
            message = str(msgspec.json.decode(line).get("msg", ""))
        except msgspec.DecodeError:
            continue  # not a log record (e.g. a line a crashing process printed)
        head, _, what = message.partition(": ")
        if head.startswith("operation ") and OPERATION.fullmatch(head[len("operation "):]):
            found[head[len("operation "):]] = what
    return found


def audit_events(stack: dict[str, Any], until: Callable[[str, dict[str, Any]], bool],
                 timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """The admin's audit stream (``/client/events``) from its start up to the first event for
    which ``until(type, payload)`` holds: each event's type and payload, in order."""
    params = [("apikey", stack["admin_api_key"]), ("after", "0")]
    params.append(("signature", sign(params, stack["admin_secret_key"])))
    events: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        async with aiohttp.ClientSession() as http, http.get(stack["audit_stream_url"],
                                                              params=params) as response:
            async for raw in response.content:
                line = raw.decode()
                if line.startswith("data: "):
                    envelope = msgspec.json.decode(line[len("data: "):])
                    events.append((str(envelope["type"]), dict(envelope["data"])))
                    if until(*events[-1]):
                        return

    try:
        asyncio.run(asyncio.wait_for(read(), timeout))
    except TimeoutError:
        raise AssertionError(f"the audit stream held no such event in {timeout:.0f}s "
                             f"({len(events)} events read)") from None
    return events


def handled(stack: dict[str, Any], consumer: str, event_type: str, **data: str) -> bool:
    """Whether the service ``consumer`` has handled every event of ``event_type`` (with these
    payload fields) the store holds, and there is one: its inbox records each, whether the
    handler appended anything or not."""
    [counts] = _rows(stack, "SELECT count(*) AS stored, count(i.event_id) AS done FROM events e"
                     " LEFT JOIN inbox i ON i.event_id = e.event_id AND i.consumer = $2"
                     " WHERE e.type = $1" + _payload_is(data, 3, "e."),
                     event_type, consumer, *data.values())
    return bool(counts["stored"]) and counts["stored"] == counts["done"]


def compose_config() -> str:
    """docker-compose.yml as `docker-compose config` resolves it (the settings it requires
    given), after checking that it is valid."""
    env = {**os.environ, "SNAPDEPLOY_ADMIN_API_KEY": "k", "SNAPDEPLOY_ADMIN_SECRET_KEY": "s",
           "SNAPDEPLOY_KEY_ENCRYPTION_KEY": "k" * 32}
    checked = subprocess.run(["docker-compose", "config"], cwd=Path(__file__).parents[2],
                             env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    return checked.stdout
