"""Secrets never appear in logs, events or error texts.

The stack runs with generated credentials (stack.json names them). The module first does
things that log and that fail: a deploy from a VM snapshot, a deploy that vCenter refuses,
bad signatures, an account with its own key pair, refused NATS deploy requests. Then no
secret may be found in any file under the logs folder, in the event store or in any error
text those requests got back.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
import nats
import pytest
from cs import CloudStack, CloudStackApiException

from proto.commands import DEPLOY_SUBJECT, CommandRejected, DeployVirtualMachine
from shared import natsauth
from shared.stack._servers import PG_SYSTEM_USER
from shared.stack.launcher import SERVICES, read_stack
from tests.e2e.helpers import offering, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack


@dataclass
class Provoked:
    """The secrets in play, and every error text the requests below got back."""

    secrets: dict[str, str]
    error_texts: list[tuple[str, str]] = field(default_factory=list)

    def refused(self, what: str, call: Any, code: int | None = None) -> str:
        with pytest.raises(CloudStackApiException) as caught:
            call()
        error: dict[str, Any] = caught.value.error
        assert code is None or error["errorcode"] == code, (what, error)
        text = str(error["errortext"])
        self.error_texts.append((what, text))
        return text


def client(stack: dict[str, Any], key: str, secret: str) -> CloudStack:
    return CloudStack(endpoint=stack["api_url"], key=key, secret=secret, fetch_result=True,
                      poll_interval=0.2, job_timeout=120)


def nats_requests(stack: dict[str, Any], payloads: list[bytes]) -> list[CommandRejected]:
    async def ask() -> list[CommandRejected]:
        nc = await nats.connect(stack["nats_url"], user=stack["admin_api_key"],
                                password=stack["admin_secret_key"],
                                inbox_prefix=f"_INBOX.{stack['admin_api_key']}")
        try:
            replies = [await nc.request(DEPLOY_SUBJECT, p, timeout=15) for p in payloads]
        finally:
            await nc.close()
        return [msgspec.json.decode(r.data, type=CommandRejected) for r in replies]

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def provoked(stack: dict[str, Any], cloud: CloudStack, vcsim: Vcsim) -> Provoked:
    account_password = secrets.token_urlsafe(16)
    found = Provoked({
        "NATS password": stack["nats_password"],
        "PostgreSQL password": urlsplit(stack["database_url"]).password or "",
        "vCenter password": stack["vcenter_password"],
        "admin secret key": stack["admin_secret_key"],
        "admin password": stack["admin_password"],
        # createAccount keeps only a salted hash of its password (for login).
        "account password": account_password,
    })

    # A deploy from a VM snapshot, through every service.
    original = vm_named(cloud, "DC0_C0_RP0_VM0")
    snap = snapshot(cloud, original["id"], "secrets-check")
    small = offering(cloud, "Small Instance")
    deployed = cloud.deployVirtualMachine(vmsnapshotid=snap, serviceofferingid=small,
                                          name="secrets-1")["virtualmachine"]
    assert deployed["state"] == "Running"

    # A deploy that vCenter refuses: the failure is logged and ends in the job's error text.
    vcsim.fail("ReconfigVM_Task", "injected: the host refused the new configuration")
    try:
        text = found.refused("deploy refused by vCenter", lambda: cloud.deployVirtualMachine(
            vmsnapshotid=snap, serviceofferingid=small, name="secrets-doomed"))
    finally:
        vcsim.clear_faults()
    assert "injected" in text
    doomed = vm_named(cloud, "secrets-doomed")
    assert doomed["state"] == "Error"
    found.error_texts.append(("the failed VM's errortext", str(doomed["errortext"])))

    # Bad signatures, and the secret key sent where the API key belongs.
    found.refused("wrong admin secret", lambda: client(
        stack, stack["admin_api_key"], "not-the-secret").listZones(), 401)
    found.refused("secret key sent as the API key", lambda: client(
        stack, stack["admin_secret_key"], stack["admin_secret_key"]).listZones(), 401)

    # An account with its own key pair, using it and failing.
    created = cloud.createAccount(username="keeper", password=account_password,
                                  email="keeper@example.com", firstname="Keeper",
                                  lastname="Example", accounttype="0")["account"]
    keys = cloud.registerUserKeys(id=created["user"][0]["id"])["userkeys"]
    found.secrets["user secret key"] = keys["secretkey"]
    user = client(stack, keys["apikey"], keys["secretkey"])
    assert user.listVirtualMachines() == {}
    text = found.refused("the user deploys the admin's snapshot", lambda: user.deployVirtualMachine(
        vmsnapshotid=snap, serviceofferingid=small, name="not-mine"), 431)
    assert "vmsnapshotid" in text
    found.refused("wrong user secret", lambda: client(
        stack, keys["apikey"], keys["secretkey"][::-1]).listVirtualMachines(), 401)

    # Logins with passwords, right and wrong (the session key is a secret too).
    for username, password, status in (("keeper", account_password, 200),
                                       ("keeper", account_password[::-1], 401),
                                       ("admin", stack["admin_password"], 200)):
        answer = urllib.request.Request(stack["api_url"], data=urllib.parse.urlencode(
            {"command": "login", "username": username, "password": password}).encode())
        try:
            with urllib.request.urlopen(answer, timeout=30) as opened:
                got, body = opened.status, json.loads(opened.read())
        except urllib.error.HTTPError as refusal:
            got, body = refusal.code, json.loads(refusal.read())
        assert got == status, body
        if status == 200:
            found.secrets[f"{username}'s session key"] = body["loginresponse"]["sessionkey"]

    # The NATS door: a malformed request and one with a key nobody holds.
    good = DeployVirtualMachine(apikey=keys["apikey"], vmsnapshotid=snap,
                                serviceofferingid=small, name="via-nats")
    malformed, stranger = nats_requests(stack, [
        b'{"apikey": 1}',
        msgspec.json.encode(msgspec.structs.replace(good, apikey="nobody")),
    ])
    assert (malformed.errorcode, stranger.errorcode) == (431, 401)
    found.error_texts += [("malformed NATS request", malformed.errortext),
                          ("NATS request with an unknown key", stranger.errortext)]

    for name, value in found.secrets.items():
        assert len(value) >= 8, f"the {name} is too short to search for"
    return found


def _leaks(text: str, secrets_: dict[str, str]) -> list[str]:
    return [name for name, value in secrets_.items() if value in text]


def test_no_secret_in_any_log(stack: dict[str, Any], provoked: Provoked) -> None:
    logs = Path(stack["state_dir"]) / "logs"
    files = sorted(p for p in logs.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {f"{s}.log" for s in SERVICES} | {"launcher.log"} <= names, names
    for path in files:
        # launcher.log included: the background launcher never prints the admin's secret
        # key (`up --detach` prints it to its terminal, once).
        text = path.read_text(errors="replace")
        assert _leaks(text, provoked.secrets) == [], f"secrets in {path.name}"


# secrets.json also holds names that are not secret: user names and the admin's API key
# (the public half of the key pair, shown in logs and events as who acted).
NOT_SECRET = ("_user", "_api_key")


def _generated_secrets(state: Path) -> dict[str, str]:
    saved: dict[str, str] = json.loads((state / "secrets.json").read_text())
    found = {name: value for name, value in saved.items() if not name.endswith(NOT_SECRET)}
    assert {"nats_password", "postgres_password", "vcenter_password",
            "admin_secret_key"} <= set(found), found
    for name, value in found.items():
        assert len(value) >= 8, f"{name} is too short to search for"
    return found


def test_no_generated_secret_in_any_file_of_the_state_dir(
    stack: dict[str, Any], provoked: Provoked
) -> None:
    """Every file `up` and its servers wrote (logs, stack.json, the NATS configuration and
    JetStream data, PostgreSQL's data, vcsim's trace), after the requests above: none holds a
    generated secret, except secrets.json itself."""
    state = Path(stack["state_dir"])
    generated = _generated_secrets(state)
    # The NATS identities' passwords, derived from the generated NATS secret.
    generated |= {f"NATS password of {name}": natsauth.password_for(generated["nats_password"],
                                                                    name)
                  for name in (*natsauth.SERVICES, natsauth.MONITOR)}
    wanted = {name: value.encode() for name, value in generated.items()}
    scanned, leaks = 0, []
    for path in sorted(state.rglob("*")):
        if path.name == "secrets.json" and path.parent == state:
            continue
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        scanned += 1
        leaks += [f"{name} in {path.relative_to(state)}" for name, value in wanted.items()
                  if value in data]
    assert scanned > 20, "the state folder was not where the stack keeps its files"
    assert (state / "vcsim-trace.xml").stat().st_size > 0  # the Login request is in it
    assert leaks == []


def test_no_secret_on_any_command_line(stack: dict[str, Any], provoked: Provoked) -> None:
    """`ps` shows every process's arguments to every user of the machine."""
    # -ww: whole command lines (without a terminal ps cuts them at 80 columns).
    listed = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    assert "nats-server" in listed and "vcsim" in listed and "postgres" in listed
    found = {**_generated_secrets(Path(stack["state_dir"])), **provoked.secrets}
    assert _leaks(listed, found) == []


def test_state_logs_and_secrets_are_private(stack: dict[str, Any]) -> None:
    state = Path(stack["state_dir"])
    mode = {name: path.stat().st_mode & 0o777 for name, path in [
        ("state", state), ("logs", state / "logs"), ("nats", state / "nats"),
        ("secrets.json", state / "secrets.json"), ("stack.json", state / "stack.json")]}
    assert (mode["logs"], mode["nats"], mode["secrets.json"], mode["stack.json"]) == (
        0o700, 0o700, 0o600, 0o600), {k: oct(v) for k, v in mode.items()}
    if os.geteuid() == 0:
        # PostgreSQL refuses root and runs as its own system user, which must pass through
        # the state folder to its data: that group may traverse it, no one may list it.
        assert mode["state"] == 0o710, oct(mode["state"])
        assert state.stat().st_gid == pwd.getpwnam(PG_SYSTEM_USER).pw_gid
    else:
        assert mode["state"] == 0o700, oct(mode["state"])
    for path in (state / "logs").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def test_no_secret_in_the_event_store_or_read_models(
    stack: dict[str, Any], provoked: Provoked
) -> None:
    async def rows() -> dict[str, list[str]]:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            tables = [r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
            # api_keys is where secret keys live, by design (and nowhere else).
            return {t: [r["row"] for r in await conn.fetch(f'SELECT t::text AS row FROM "{t}" t')]
                    for t in tables if t != "api_keys"}
        finally:
            await conn.close()

    by_table = asyncio.run(rows())
    events = by_table["events"]
    # The requests above are in the store, so it is the right place to look.
    assert any("UserKeysRegistered" in row for row in events)
    assert any("VmDeployRequested" in row and "secrets-1" in row for row in events)
    assert any("injected" in row for row in events)
    for table, texts in by_table.items():
        for row in texts:
            assert _leaks(row, provoked.secrets) == [], f"a secret in {table}: {row[:300]}"


def test_no_secret_in_error_texts(provoked: Provoked) -> None:
    assert len(provoked.error_texts) >= 7
    for what, text in provoked.error_texts:
        assert text, what
        assert _leaks(text, provoked.secrets) == [], (what, text)


def test_the_stack_file_keeps_its_secrets_to_its_owner(stack: dict[str, Any]) -> None:
    """stack.json names no secret; the generated ones stay in secrets.json (0600), from which
    read_stack fills them in for the stack's owner."""
    state = Path(stack["state_dir"])
    for name in ("stack.json", "secrets.json"):
        mode = (state / name).stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{name} is readable by others: {oct(mode)}"
    written = json.loads((state / "stack.json").read_text())
    assert {"admin_secret_key", "nats_password", "vcenter_password"}.isdisjoint(written)
    assert urlsplit(written["database_url"]).password == "***"
    assert read_stack(state)["admin_secret_key"] == stack["admin_secret_key"]
