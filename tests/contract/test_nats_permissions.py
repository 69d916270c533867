"""NATS identities against a real nats-server configured by shared.natsauth, with the real
relay, consumer and gateway door on a real PostgreSQL event store.

A client (a snapdeploy API key) may publish requests on ``snapdeploy.api.>`` and read its
own account's audit events, nothing else: not publish on the event stream, not read another
account's events or another client's replies, not create JetStream consumers. Services get
what they consume: a consumer identity serves its own durable consumer only; the services
publish the events they commit, and only the relay publishes audit events.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from proto import subjects
from proto.commands import DEPLOY_SUBJECT, CommandRejected
from proto.envelope import EventEnvelope, Metadata, decode_envelope
from proto.events import VmDestroyed, VmStopped
from services.gateway.api import Context
from services.gateway.bus import serve_deploys
from shared import metrics, natsauth
from shared.bus import Consumer
from shared.eventstore import Append, EventStore, NewEvent
from shared.relay import Relay
from shared.stack._servers import Server, free_port, start_nats
from tests.helpers import eventually

ACCOUNT_A, ACCOUNT_B = str(uuid.uuid4()), str(uuid.uuid4())
WITHIN_S = 10.0


@dataclass
class Key:
    api_key: str
    secret_key: str
    account_id: str
    role: str = "user"


@dataclass
class Nats:
    server: Server
    secret: str
    keys: dict[str, Key]
    clients: list[NATS] = field(default_factory=list)
    errors: dict[int, list[str]] = field(default_factory=dict)

    async def service(self, name: str) -> NATS:
        """A connection as ``shared.bus.connect`` makes it for service ``name``."""
        return await self._connect(name, natsauth.password_for(self.secret, name), name)

    async def client(self, who: str, *, inbox_of: str | None = None) -> NATS:
        key = self.keys[who]
        return await self._connect(key.api_key, key.secret_key, inbox_of or key.api_key)

    async def _connect(self, user: str, password: str, inbox_owner: str) -> NATS:
        seen: list[str] = []

        async def on_error(exc: Exception) -> None:
            seen.append(str(exc))

        nc = await nats.connect(self.server.url, user=user, password=password,
                                inbox_prefix=natsauth.inbox_prefix(inbox_owner),
                                error_cb=on_error, max_reconnect_attempts=0,
                                allow_reconnect=False)
        self.clients.append(nc)
        self.errors[id(nc)] = seen
        return nc

    async def violations(self, nc: NATS, what: str) -> list[str]:
        """Wait until the server has refused ``what`` on ``nc``; the refusals so far."""
        seen = self.errors[id(nc)]

        async def refused() -> bool:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=1)
            return any("permissions violation" in e.lower() and what.lower() in e.lower()
                       for e in seen)

        await eventually(refused, within=WITHIN_S,
                         what=f"a permissions violation for {what} (seen: {seen})")
        return seen


@pytest.fixture
async def bus(store: EventStore, tmp_path: Path) -> AsyncIterator[Nats]:
    """nats-server with snapdeploy's identities: every service, the monitor, and the keys
    of two user accounts and an admin, written as the gateway writes them."""
    secret = secrets.token_urlsafe(18)
    keys = {
        "alice": Key(secrets.token_urlsafe(32), secrets.token_urlsafe(32), ACCOUNT_A),
        "bob": Key(secrets.token_urlsafe(32), secrets.token_urlsafe(32), ACCOUNT_B),
        "admin": Key(secrets.token_urlsafe(32), secrets.token_urlsafe(32), str(uuid.uuid4()),
                     "admin"),
    }
    auth_file = tmp_path / "nats" / "auth.conf"
    natsauth.write_identities(auth_file, secret)
    written = natsauth.refresh(auth_file, [
        natsauth.ClientKey(k.api_key, k.secret_key, k.account_id, k.role == "admin")
        for k in keys.values()])
    assert written == 3
    assert auth_file.stat().st_mode & 0o777 == 0o600
    text = auth_file.read_text()
    assert all(k.secret_key not in text for k in keys.values())
    server = start_nats(tmp_path, free_port(), natsauth.MONITOR,
                        natsauth.password_for(secret, natsauth.MONITOR),
                        authorization='include "auth.conf"')
    found = Nats(server, secret, keys)
    yield found
    for nc in found.clients:
        with contextlib.suppress(Exception):
            await nc.close()
    server.stop()


@pytest.fixture
async def relayed(store: EventStore, bus: Nats) -> AsyncIterator[None]:
    """The relay, as the relay identity."""
    nc = await bus.service(natsauth.RELAY)
    task = asyncio.create_task(Relay(store, nc.jetstream(), nc=nc).run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stream_messages(bus: Nats) -> int:
    monitor = await bus.service(natsauth.MONITOR)
    info = await monitor.jetstream().stream_info(subjects.EVENTS_STREAM)
    return int(info.state.messages)


def _meta(account_id: str) -> Metadata:
    return Metadata(correlation_id="c", actor="x", account_id=account_id)


async def test_only_services_publish_events(store: EventStore, bus: Nats,
                                            relayed: None) -> None:
    await store.append("vm-1", [NewEvent(VmStopped(vm_id="1"), _meta(ACCOUNT_A))])
    await eventually(lambda: _has(bus, 1), what="the relay's event in the stream")

    forged = {"id": str(uuid.uuid4()), "stream_id": "vm-2", "version": 1, "position": 2**62,
              "type": "VmPowerRequested", "schema": 1, "recorded_at": "2024-05-01T12:00:00Z",
              "metadata": {"correlation_id": "forged"}, "data": {}}
    subject = subjects.event_subject("vm-2", "VmPowerRequested")
    for who in ("alice", "admin"):
        nc = await bus.client(who)
        await nc.publish(subject, msgspec.json.encode(forged),
                         headers={subjects.POSITION_HEADER: str(2**62)})
        await bus.violations(nc, f'publish to "{subject}"')
        # Nor through JetStream's API, nor by making a consumer of the stream.
        with pytest.raises(Exception):  # noqa: B017 (refused: no reply, a timeout)
            await nc.jetstream(timeout=2).publish(subject, b"{}")
        with pytest.raises(Exception):  # noqa: B017
            await nc.jetstream(timeout=2).add_consumer(subjects.EVENTS_STREAM,
                                                       durable_name="ghost")
        await bus.violations(nc, "$JS.API.CONSUMER")
    # The operator's look at the stream changes nothing.
    monitor = await bus.service(natsauth.MONITOR)
    await monitor.publish(subject, b"{}")
    await bus.violations(monitor, f'publish to "{subject}"')
    # A service publishes what it commits; audit events are the relay's alone.
    planner = await bus.service("planner")
    audit = subjects.audit_subject(ACCOUNT_A, "VmStopped")
    await planner.publish(audit, b"{}")
    await bus.violations(planner, f'publish to "{audit}"')
    await asyncio.sleep(0.5)
    assert await _stream_messages(bus) == 1


async def _has(bus: Nats, n: int) -> bool:
    try:
        return await _stream_messages(bus) >= n
    except Exception:
        return False


async def test_clients_read_only_their_own_accounts_audit_events(
    store: EventStore, bus: Nats, relayed: None
) -> None:
    got: dict[str, list[Msg]] = {"alice": [], "admin": []}
    alice = await bus.client("alice")
    admin = await bus.client("admin")

    def collect(into: list[Msg]) -> Callable[[Msg], Awaitable[None]]:
        async def keep(msg: Msg) -> None:
            into.append(msg)

        return keep

    await alice.subscribe(f"{subjects.AUDIT_PREFIX}.{ACCOUNT_A}.>",
                          cb=collect(got["alice"]))
    await admin.subscribe(f"{subjects.AUDIT_PREFIX}.>", cb=collect(got["admin"]))
    await alice.flush()
    await admin.flush()
    # Another account's audit subject, all of them, the event stream's subjects, another
    # client's inbox: each subscription is refused.
    for refused in (f"{subjects.AUDIT_PREFIX}.{ACCOUNT_B}.>", f"{subjects.AUDIT_PREFIX}.>",
                    subjects.ALL_EVENTS, f"{natsauth.inbox_prefix(bus.keys['bob'].api_key)}.>",
                    "_INBOX.>", DEPLOY_SUBJECT):
        snoop = await bus.client("alice")
        await snoop.subscribe(refused, cb=collect(got["alice"]))
        await bus.violations(snoop, f'subscription to "{refused}"')

    await store.append("vm-a", [NewEvent(VmStopped(vm_id="a"), _meta(ACCOUNT_A))])
    await store.append("vm-b", [NewEvent(VmStopped(vm_id="b"), _meta(ACCOUNT_B))])
    await eventually(lambda: _count(got["admin"], 2), what="the admin sees both events")
    await eventually(lambda: _count(got["alice"], 1), what="alice sees her event")
    await asyncio.sleep(0.5)  # anything else would have arrived by now

    seen_by_alice = [decode_envelope(m.data) for m in got["alice"]]
    assert [(e.stream_id, e.metadata.account_id) for e in seen_by_alice] == [("vm-a", ACCOUNT_A)]
    assert got["alice"][0].subject == subjects.audit_subject(ACCOUNT_A, "VmStopped")
    assert sorted(decode_envelope(m.data).stream_id for m in got["admin"]) == ["vm-a", "vm-b"]


async def _count(items: list[Msg], n: int) -> bool:
    return len(items) >= n


async def test_a_client_reaches_the_gateway_only_by_request_with_its_own_inbox(
    store: EventStore, bus: Nats
) -> None:
    gateway = await bus.service(natsauth.GATEWAY)
    await serve_deploys(gateway, Context(store=store))
    await gateway.flush()
    alice = await bus.client("alice")
    reply = await alice.request(DEPLOY_SUBJECT, b'{"apikey": "x", "serviceofferingid": "o"}',
                                timeout=WITHIN_S)
    rejected = msgspec.json.decode(reply.data, type=CommandRejected)
    assert rejected.errorcode == 401  # unsigned: the door answered, and refused it
    # A client that would have its replies come to another client's inbox is refused the
    # subscription, so it gets no reply at all.
    borrowing = await bus.client("alice", inbox_of=bus.keys["bob"].api_key)
    with pytest.raises(Exception):  # noqa: B017 (no reply can reach it)
        await borrowing.request(DEPLOY_SUBJECT, b"{}", timeout=2)
    await bus.violations(borrowing, "subscription to")
    # The gateway publishes its answers and the events it commits, nothing else.
    await gateway.publish(subjects.audit_subject(ACCOUNT_A, "VmStopped"), b"{}")
    await bus.violations(gateway, "publish to")


class Destroyer:
    def __init__(self) -> None:
        self.seen: list[EventEnvelope] = []

    async def __call__(self, envelope: EventEnvelope) -> Sequence[Append]:
        self.seen.append(envelope)
        return [Append(envelope.stream_id, [VmDestroyed(vm_id=envelope.stream_id)],
                       envelope.version)]


async def test_a_consumer_identity_serves_its_own_durable_consumer_only(
    store: EventStore, bus: Nats, relayed: None
) -> None:
    await eventually(lambda: _stream_exists(bus), what="the relay's stream")
    planner = await bus.service("planner")
    handler = Destroyer()
    consumer = Consumer("planner", planner.jetstream(), store, {"VmStopped": handler})
    task = asyncio.create_task(consumer.run())
    try:
        await store.append("vm-p", [NewEvent(VmStopped(vm_id="p"), _meta(ACCOUNT_A))])
        await eventually(lambda: _handled("planner", 1), what="the planner's event handled")
        # The planner's identity cannot be the seeder's consumer.
        with pytest.raises(Exception):  # noqa: B017
            await planner.jetstream(timeout=2).add_consumer(
                subjects.EVENTS_STREAM, durable_name="seeder")
        await bus.violations(planner, "$JS.API.CONSUMER")
    finally:
        consumer.stopping.set()
        async with asyncio.timeout(10):
            await task
    assert [e.stream_id for e in handler.seen] == ["vm-p"]
    assert [e.type for e in await store.read_stream("vm-p")] == ["VmStopped", "VmDestroyed"]


async def _stream_exists(bus: Nats) -> bool:
    return await _has(bus, 0)


async def _handled(consumer: str, n: int) -> bool:
    counter = metrics.MESSAGES_HANDLED.labels(consumer, "VmStopped", "handled")
    return float(counter._value.get()) >= n
