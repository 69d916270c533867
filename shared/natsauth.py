"""NATS identities: who may publish and subscribe to what, as nats-server's configuration.

Every process and every client connects to NATS as its own user, with permissions that the
server enforces (allow lists; anything not listed is refused):

- ``relay``: creates and updates the JetStream stream, publishes every event on
  ``snapdeploy.events.>``, and is the only publisher on ``snapdeploy.audit.>``;
- ``planner``, ``seeder``, ``cloner``, ``volume``: the JetStream API of their own durable
  consumer (create, info, next message, acknowledgements) and the stream's info, and publish
  on ``snapdeploy.events.>`` the events they commit (``shared.relay.Herald``);
- ``gateway``: receives ``snapdeploy.api.>``, answers the requests it receives, and
  publishes on ``snapdeploy.events.>`` the events it commits;
- ``monitor``: the operator's read-only look at the stream and the subjects (``up`` puts
  it in stack.json for tools and tests);
- one user per snapdeploy API key, named by the key, whose password is the key's secret
  (stored as a bcrypt hash): publishes requests on ``snapdeploy.api.>``, reads its own
  account's audit events ``snapdeploy.audit.<account id>.>`` (an admin account's keys: every
  account's) and replies on its own inbox prefix ``_INBOX.<api key>`` (pass it as
  ``inbox_prefix`` when connecting), so no client reads another's replies.

Each service's inbox is ``_INBOX.<service>`` too (``shared.bus.connect`` sets it). Service
and monitor passwords are derived from one secret (``password_for``); only bcrypt hashes of
any password reach the configuration file, which is written with mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto import subjects
from shared.stack._servers import bcrypt_hash, private_dir, write_private

log = logging.getLogger(__name__)

CONSUMERS = ("planner", "seeder", "cloner", "volume")
RELAY, GATEWAY, MONITOR = "relay", "gateway", "monitor"
SERVICES = (RELAY, *CONSUMERS, GATEWAY)
# The file beside the authorization file that holds the service identities' entries
# (bcrypt hashes, no password), written by whoever knows the passwords.
IDENTITIES_FILE = "identities.json"
PID_FILE = "nats.pid"
# Every node of a cluster `up` runs writes its pid file beside the authorization file they
# all include: nats.pid, nats-2.pid, ...
PID_FILES = "nats*.pid"
_JS = "$JS.API"
_STREAM = subjects.EVENTS_STREAM
# A NATS subject token: what an API key must look like to name a user and an inbox.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}")


def password_for(secret: str, identity: str) -> str:
    """The password of ``identity``, derived from the stack's NATS secret."""
    digest = hmac.new(secret.encode(), f"snapdeploy-nats:{identity}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def inbox_prefix(user: str) -> str:
    """The inbox prefix ``user`` must connect with: its replies arrive under it only."""
    return f"_INBOX.{user}"


def _entry(user: str, password_hash: str, publish: Sequence[str], subscribe: Sequence[str],
           *, allow_responses: bool = False) -> dict[str, Any]:
    permissions: dict[str, Any] = {"publish": {"allow": list(publish)},
                                   "subscribe": {"allow": list(subscribe)}}
    if allow_responses:
        permissions["allow_responses"] = True
    return {"user": user, "password": password_hash, "permissions": permissions}


def service_permissions(name: str) -> tuple[list[str], list[str], bool]:
    """(publish, subscribe, allow_responses) of a service identity."""
    inbox = f"{inbox_prefix(name)}.>"
    if name == RELAY:
        return ([subjects.ALL_EVENTS, f"{subjects.AUDIT_PREFIX}.>", f"{_JS}.INFO",
                 f"{_JS}.STREAM.INFO.{_STREAM}", f"{_JS}.STREAM.CREATE.{_STREAM}",
                 f"{_JS}.STREAM.UPDATE.{_STREAM}", f"{_JS}.STREAM.MSG.GET.{_STREAM}"],
                [inbox], False)
    if name in CONSUMERS:
        return ([subjects.ALL_EVENTS, f"{_JS}.INFO", f"{_JS}.STREAM.INFO.{_STREAM}",
                 f"{_JS}.CONSUMER.CREATE.{_STREAM}.{name}",
                 f"{_JS}.CONSUMER.CREATE.{_STREAM}.{name}.>",
                 f"{_JS}.CONSUMER.DURABLE.CREATE.{_STREAM}.{name}",
                 f"{_JS}.CONSUMER.INFO.{_STREAM}.{name}",
                 f"{_JS}.CONSUMER.MSG.NEXT.{_STREAM}.{name}",
                 f"$JS.ACK.{_STREAM}.{name}.>"],
                [inbox], False)
    if name == GATEWAY:
        return ([subjects.ALL_EVENTS], [f"{subjects.API_PREFIX}.>", inbox], True)
    if name == MONITOR:
        # The operator's identity: reads everything published, changes nothing.
        return ([f"{_JS}.INFO", f"{_JS}.STREAM.INFO.{_STREAM}",
                 f"{_JS}.STREAM.MSG.GET.{_STREAM}"],
                [subjects.ALL_EVENTS, f"{subjects.AUDIT_PREFIX}.>", "_INBOX.>"], False)
    raise ValueError(f"no NATS identity named {name!r}")


def service_entries(secret: str) -> list[dict[str, Any]]:
    """The configuration entries of every service identity and the monitor."""
    out = []
    for name in (*SERVICES, MONITOR):
        publish, subscribe, responses = service_permissions(name)
        out.append(_entry(name, bcrypt_hash(password_for(secret, name)), publish, subscribe,
                          allow_responses=responses))
    return out


@dataclass(frozen=True)
class ClientKey:
    """One API key as NATS sees it: the user name, its secret, whose events it may read."""

    api_key: str
    secret_key: str
    account_id: str
    admin: bool


def usable(api_key: str) -> bool:
    """Whether ``api_key`` can name a NATS user and inbox (snapdeploy's keys all can)."""
    return bool(_TOKEN.fullmatch(api_key)) and api_key not in (*SERVICES, MONITOR)


def client_entry(key: ClientKey, password_hash: str) -> dict[str, Any]:
    audit = (f"{subjects.AUDIT_PREFIX}.>" if key.admin
             else f"{subjects.AUDIT_PREFIX}.{subjects.audit_token(key.account_id)}.>")
    return _entry(key.api_key, password_hash, [f"{subjects.API_PREFIX}.>"],
                  [audit, f"{inbox_prefix(key.api_key)}.>"])


# api key -> (secret key, bcrypt hash): a key whose secret did not change is not hashed again.
_hashes: dict[str, tuple[str, str]] = {}


def _client_hash(key: ClientKey) -> str:
    known = _hashes.get(key.api_key)
    if known is not None and hmac.compare_digest(known[0], key.secret_key):
        return known[1]
    hashed = bcrypt_hash(key.secret_key)
    _hashes[key.api_key] = (key.secret_key, hashed)
    return hashed


def render(entries: Iterable[dict[str, Any]]) -> str:
    """The authorization section of nats-server's configuration (JSON is valid there)."""
    return ("# Written by snapdeploy (shared/natsauth.py): `snapdeploy nats-auth` rewrites it.\n"
            f"authorization: {json.dumps({'users': list(entries)}, indent=1)}\n")


def parse(text: str) -> list[dict[str, Any]]:
    """The user entries of a file ``render`` wrote."""
    body = text.split("authorization:", 1)[1]
    users: list[dict[str, Any]] = json.loads(body)["users"]
    return users


def client_entries(keys: Iterable[ClientKey]) -> list[dict[str, Any]]:
    out = []
    for key in keys:
        if not usable(key.api_key):
            log.warning("API key %s… cannot be a NATS user (a NATS user name has only letters, "
                        "digits, '-' and '_'); it works over HTTP only", key.api_key[:6])
            continue
        out.append(client_entry(key, _client_hash(key)))
    return out


def write(auth_file: Path, entries: Iterable[dict[str, Any]]) -> None:
    write_private(auth_file, render(entries))


def write_identities(auth_file: Path, secret: str) -> list[dict[str, Any]]:
    """Write the service identities beside ``auth_file``; and ``auth_file`` itself with them
    and the client entries it already held (refreshed from the store by the gateway)."""
    services = service_entries(secret)
    private_dir(auth_file.parent)
    write_private(auth_file.with_name(IDENTITIES_FILE), json.dumps(services, indent=1))
    names = {e["user"] for e in services}
    clients: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, IndexError):
        clients = [e for e in parse(auth_file.read_text()) if e.get("user") not in names]
    write(auth_file, [*services, *clients])
    return services


def refresh(auth_file: Path, keys: Iterable[ClientKey]) -> int:
    """Rewrite ``auth_file`` from the service identities beside it and ``keys`` (every live
    API key), then have the nats-server whose pid file is beside it reload it. Returns the
    number of client identities written. Blocks while it hashes new secrets. Every node
    of a cluster whose pid file is there reloads."""
    services = json.loads(auth_file.with_name(IDENTITIES_FILE).read_text())
    clients = client_entries(keys)
    write(auth_file, [*services, *clients])
    reload_all(auth_file.parent)
    return len(clients)


def reload_all(folder: Path) -> int:
    """SIGHUP every nats-server whose pid file (``PID_FILES``) lies in ``folder``: each node
    of the cluster rereads the authorization file. Returns how many were signalled."""
    return sum(reload(pid_file) for pid_file in sorted(folder.glob(PID_FILES)))


def reload(pid_file: Path) -> bool:
    """SIGHUP the nats-server whose pid ``pid_file`` holds (it rereads its configuration);
    False if there is none. The pid must be a running nats-server: a stale pid file never
    gets another process signalled."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    program = os.path.basename(cmdline.split(b"\0", 1)[0].decode(errors="replace"))
    if program != "nats-server":
        log.warning("%s names pid %d, which is not nats-server; not signalling it", pid_file,
                    pid)
        return False
    os.kill(pid, signal.SIGHUP)
    return True
