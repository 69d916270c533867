"""Malformed messages on NATS (real nats-server and PostgreSQL): each is refused with a clear
reason and counted, no service stops answering, and nothing reaches the event store.

The deploy door (``snapdeploy.api.deployVirtualMachine``) is driven as a client drives it,
with NATS requests. The event subjects are consumed by a real ``shared.bus.Consumer``; the
junk that tests/contract/test_consumer.py already sends (bad JSON, missing fields) is not
repeated here: these cases span several event types, unknown types, huge and non-ASCII
payloads, and envelopes whose declared type disagrees with their payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from proto import subjects
from proto.commands import DEPLOY_SUBJECT, CommandRejected, DeployVirtualMachine
from proto.envelope import EventEnvelope, Metadata
from proto.events import (
    Event,
    TemplateSeedStarted,
    VmDestroyed,
    VmDestroyRequested,
    VmStopped,
)
from services.gateway.api import Context
from services.gateway.app import ensure_admin_keys, ensure_defaults
from services.gateway.auth import sign
from services.gateway.bus import serve_deploys
from shared import metrics
from shared.bus import Consumer
from shared.config import Settings
from shared.eventstore import Append, EventStore, NewEvent
from shared.stack._servers import Server
from tests.helpers import eventually, nats_connect

KEY, SECRET = "malformed-admin-key", "malformed-admin-secret"
REPLY_WITHIN_S = 15.0


def _count(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


async def _event_rows(store: EventStore) -> int:
    async with store.pool.acquire() as conn:
        rows: int = await conn.fetchval("SELECT count(*) FROM events")
    return rows


# ---- the deploy door -------------------------------------------------------------------


@dataclass
class Door:
    client: NATS
    store: EventStore


@pytest.fixture
async def door(store: EventStore, nats_server: Server) -> AsyncIterator[Door]:
    """The gateway's NATS door, served as services/gateway/__main__.py serves it."""
    settings = Settings(admin_api_key=KEY, admin_secret_key=SECRET, key_encryption_key="k" * 32)
    await ensure_admin_keys(store, settings)
    await ensure_defaults(store)
    server_side = await nats_connect(nats_server)
    client = await nats_connect(nats_server)
    await serve_deploys(server_side, Context(store=store, settings=settings))
    await server_side.flush()
    yield Door(client, store)
    await client.close()
    await server_side.close()


async def _ask(door: Door, payload: bytes) -> CommandRejected:
    reply = await door.client.request(DEPLOY_SUBJECT, payload, timeout=REPLY_WITHIN_S)
    return msgspec.json.decode(reply.data, type=CommandRejected)


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


# (what, payload, words the error text must contain), none of them a valid request.
_PADDING = "x" * (900 * 1024)
MALFORMED: list[tuple[str, bytes, list[str]]] = [
    ("not JSON", b"deploy me a VM please", ["malformed request", "JSON is malformed"]),
    ("empty", b"", ["malformed request"]),
    ("invalid UTF-8", b"\xff\xfe\x00{", ["malformed request", "JSON is malformed"]),
    ("truncated", b'{"apikey": "k", "serviceofferingid": ', ["malformed request"]),
    ("JSON null", b"null", ["malformed request", "object"]),
    ("JSON array", _json([KEY, "offering"]), ["malformed request", "object", "array"]),
    ("missing field", _json({"apikey": KEY}), ["malformed request", "serviceofferingid"]),
    ("wrong type", _json({"apikey": KEY, "serviceofferingid": 42}),
     ["malformed request", "serviceofferingid", "str"]),
    ("comma-joined list", _json({"apikey": KEY, "serviceofferingid": "o", "networkids": "a,b"}),
     ["malformed request", "networkids", "array"]),
    ("unknown field", _json({"apikey": KEY, "serviceofferingid": "o", "memory": 512}),
     ["malformed request", "unknown field", "memory"]),
    ("unicode unknown field", _json({"apikey": KEY, "serviceofferingid": "o",
                                     "名前": "\U0001f600\u202e\u0645"}),
     ["malformed request", "unknown field", "名前"]),
    ("lone surrogate", b'{"apikey": "\\ud800", "serviceofferingid": "o"}',
     ["malformed request", "JSON is malformed"]),
    ("huge, 900 KB", _json({"apikey": KEY, "serviceofferingid": "o", "padding": _PADDING}),
     ["malformed request", "unknown field", "padding"]),
]


def signed(secret: str = SECRET, expires_in: float = 300, **fields: Any) -> DeployVirtualMachine:
    """A deploy request signed as a client signs it, expiring ``expires_in`` seconds from now."""
    expires = (datetime.now(UTC) + timedelta(seconds=expires_in)).strftime(
        "%Y-%m-%dT%H:%M:%S+0000")
    request = DeployVirtualMachine(apikey=KEY, expires=expires, **fields)
    return msgspec.structs.replace(request, signature=sign(request.signed_params(), secret))


async def test_a_deploy_request_must_be_signed_with_the_keys_secret_and_unexpired(
    door: Door,
) -> None:
    """The API key alone is public: a request on NATS is signed like an HTTP call, over its
    fields, and expires. Each forgery is a 401; the same request signed right gets past
    authentication to the parameter checks (here a 431 naming the offering, which does not
    exist)."""
    rows_before = await _event_rows(door.store)
    offering = str(uuid.uuid4())
    fields: dict[str, Any] = {"serviceofferingid": offering, "vmsnapshotid": str(uuid.uuid4()),
                              "name": "n"}
    good = signed(**fields)
    forgeries = {
        "the API key alone": DeployVirtualMachine(apikey=KEY, **fields),
        "no expires": msgspec.structs.replace(good, expires=""),
        "signed with another secret": signed("not-the-secret", **fields),
        "a field changed after signing": msgspec.structs.replace(good, name="other"),
        "a field added after signing": msgspec.structs.replace(good, hostid=str(uuid.uuid4())),
        "expires changed after signing": msgspec.structs.replace(
            good, expires="2099-01-01T00:00:00+0000"),
        "expired": signed(expires_in=-60, **fields),
        "the signature of another request": msgspec.structs.replace(
            signed(**{**fields, "name": "other"}), name="n"),
    }
    for what, request in forgeries.items():
        rejected = await _ask(door, _json(request))
        assert rejected.errorcode == 401, (what, rejected)
        assert "unable to verify user credentials" in rejected.errortext, (what, rejected)
    expired = await _ask(door, _json(forgeries["expired"]))
    assert "expired" in expired.errortext
    accepted_by_auth = await _ask(door, _json(good))
    assert accepted_by_auth.errorcode == 431, accepted_by_auth
    assert "serviceofferingid" in accepted_by_auth.errortext
    assert await _event_rows(door.store) == rows_before


async def test_malformed_deploy_requests_are_refused_counted_and_never_stored(
    door: Door,
) -> None:
    malformed_before = _count(metrics.MALFORMED_MESSAGES.labels("gateway"))
    rows_before = await _event_rows(door.store)

    for what, payload, words in MALFORMED:
        rejected = await _ask(door, payload)
        assert rejected.errorcode == 431, (what, rejected)
        for word in words:
            assert word in rejected.errortext, (what, word, rejected.errortext[:300])
        # Clear means short, too: the reason, not the payload echoed back.
        assert len(rejected.errortext) < 500, (what, len(rejected.errortext))

    # A well-formed request with a key nobody holds: 401, with CloudStack's text.
    stranger = await _ask(door, _json({"apikey": "no-such-key", "serviceofferingid": "o",
                                       "vmsnapshotid": str(uuid.uuid4())}))
    assert stranger.errorcode == 401
    assert "unable to verify user credentials" in stranger.errortext
    # Well-formed, signed with the right key, unicode where an id belongs: refused naming
    # the parameter.
    odd = await _ask(door, _json(signed(serviceofferingid="\U0001f600\u202e",
                                        vmsnapshotid="снимок")))
    assert odd.errorcode == 431 and "serviceofferingid" in odd.errortext, odd

    assert _count(metrics.MALFORMED_MESSAGES.labels("gateway")) - malformed_before == len(
        MALFORMED)
    assert await _event_rows(door.store) == rows_before


async def test_a_nul_character_in_a_well_formed_request_is_refused_not_dropped(
    door: Door,
) -> None:
    """JSON allows ``\\u0000`` in a string; PostgreSQL's text does not. The door must still
    answer (401 for such a key, or 431), not leave the caller waiting for a reply."""
    rows_before = await _event_rows(door.store)
    for payload in (
        _json({"apikey": "nul\u0000key", "serviceofferingid": "o", "vmsnapshotid": "s"}),
        _json({"apikey": KEY, "serviceofferingid": "o\u0000", "vmsnapshotid": "s"}),
    ):
        rejected = await _ask(door, payload)
        assert rejected.errorcode in (401, 431), rejected
        assert rejected.errortext
    assert await _event_rows(door.store) == rows_before


async def test_an_unknown_field_name_near_the_payload_limit_still_gets_a_reply(
    door: Door,
) -> None:
    """The largest request NATS carries, refused for an unknown field: the refusal must fit
    in a reply too (the door must not echo the whole request back)."""
    limit = door.client.max_payload
    shell = _json({"apikey": KEY, "serviceofferingid": "o", "": 1})
    name = "f" * (limit - len(shell) - 16)
    payload = _json({"apikey": KEY, "serviceofferingid": "o", name: 1})
    assert len(payload) <= limit
    rejected = await _ask(door, payload)
    assert rejected.errorcode == 431 and "unknown field" in rejected.errortext
    # The door still answers afterwards.
    again = await _ask(door, b"{}")
    assert again.errorcode == 431


# ---- event subjects --------------------------------------------------------------------


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Recorder:
    """A handler for one event type that checks its payload, as the services' handlers do,
    and answers with a VmDestroyed on the event's stream."""

    def __init__(self, kind: type[Event]) -> None:
        self.kind = kind
        self.seen: list[EventEnvelope] = []

    async def __call__(self, envelope: EventEnvelope) -> Sequence[Append]:
        self.seen.append(envelope)
        assert isinstance(envelope.data, self.kind), envelope.data
        return [Append(envelope.stream_id, [VmDestroyed(vm_id=envelope.stream_id)],
                       envelope.version)]


def _envelope(stream_id: str, event_type: str, data: object) -> bytes:
    return _json({
        "id": str(uuid.uuid4()), "stream_id": stream_id, "version": 1, "position": 1,
        "type": event_type, "schema": 1, "recorded_at": "2024-05-01T12:00:00Z",
        "metadata": {"correlation_id": "junk"}, "data": data,
    })


HANDLED: dict[str, type[Event]] = {
    "VmStopped": VmStopped,
    "VmDestroyRequested": VmDestroyRequested,
    "TemplateSeedStarted": TemplateSeedStarted,
}
VALID: dict[str, Event] = {
    "VmStopped": VmStopped(vm_id="good"),
    "VmDestroyRequested": VmDestroyRequested(vm_id="good", job_id="job-good", expunge=False),
    "TemplateSeedStarted": TemplateSeedStarted(vm_snapshot_id="snap", pool_id="pool",
                                               template_id="tpl", name="good"),
}


def _junk_for(event_type: str, stream_id: str) -> list[bytes]:
    """Malformed messages for one subject that test_consumer.py does not already send."""
    return [
        _json([event_type, stream_id]),
        "\U0001f600 событие \u202e".encode(),
        _envelope(stream_id, event_type, {"type": "NoSuchEvent", "vm_id": "x"}),
        _envelope(stream_id, event_type, {"type": event_type, "vm_id": {"nested": True},
                                          "vm_snapshot_id": 7}),
        _envelope(stream_id, event_type, "\U0001f600"),
        _envelope(stream_id, event_type, {"type": event_type, "padding": "y" * (800 * 1024)}),
    ]


async def _handled(consumer: str, event_type: str, n: int) -> bool:
    return _count(metrics.MESSAGES_HANDLED.labels(consumer, event_type, "handled")) >= n


async def _malformed_at_least(consumer: str, n: int) -> bool:
    return _count(metrics.MALFORMED_MESSAGES.labels(consumer)) >= n


async def test_malformed_events_on_several_subjects_are_rejected_counted_and_harmless(
    store: EventStore, nc: NATS, relay: None
) -> None:
    name = "test-malformed-subjects"
    handlers = {t: Recorder(kind) for t, kind in HANDLED.items()}
    consumer = Consumer(name, nc.jetstream(), store, dict(handlers))
    task = asyncio.create_task(consumer.run())
    js = nc.jetstream()
    sent = 0
    try:
        for event_type in HANDLED:
            stream_id = f"vm-junk-{event_type.lower()}"
            for n, junk in enumerate(_junk_for(event_type, stream_id)):
                await js.publish(subjects.event_subject(stream_id, event_type), junk,
                                 headers={"Nats-Msg-Id": f"junk-{event_type}-{n}"})
                sent += 1
        # Then one valid event of each type, through the store and the relay as in
        # production: each is handled, so the consumer went through all the junk alive.
        for event_type, event in VALID.items():
            await store.append(f"vm-good-{event_type.lower()}",
                               [NewEvent(event, Metadata(correlation_id="good"))])
        for event_type in HANDLED:
            await eventually(functools.partial(_handled, name, event_type, 1),
                             what=f"the valid {event_type} handled")
        # Messages of different streams are handled concurrently: the junk of other streams
        # may still be in hand when the valid events are done.
        await eventually(functools.partial(_malformed_at_least, name, sent),
                         what=f"{sent} malformed messages counted")
        assert not task.done(), "the consumer stopped"
    finally:
        await _stop(task)

    assert _count(metrics.MALFORMED_MESSAGES.labels(name)) == sent
    for event_type, handler in handlers.items():
        assert [e.type for e in handler.seen] == [event_type]
    for event_type in HANDLED:
        failures = metrics.HANDLER_FAILURES.labels(name, event_type)
        assert _count(failures) == 0, event_type
    # Only the valid events and what their handlers answered: nothing malformed was stored.
    assert await store.head() == 2 * len(VALID)
    assert await _event_rows(store) == 2 * len(VALID)


async def test_an_envelope_whose_type_disagrees_with_its_payload_is_rejected_as_malformed(
    store: EventStore, nc: NATS, relay: None
) -> None:
    """``type`` says VmStopped (so the message is on the VmStopped subject and goes to the
    VmStopped handler) but ``data`` is another event. That is not a snapdeploy event: it
    must be rejected and counted like any malformed message at once, no handler may run on
    it, and nothing it carries (such as a job id) may reach the event store."""
    name = "test-type-mismatch"
    handler = Recorder(VmStopped)
    # Two deliveries at most, so that a message the consumer gives up on is settled quickly.
    consumer = Consumer(name, nc.jetstream(), store, {"VmStopped": handler}, max_deliver=2)
    task = asyncio.create_task(consumer.run())
    stream_id = "vm-mismatch"
    lies = [
        _envelope(stream_id, "VmStopped", {"type": "VmDestroyed", "vm_id": "m"}),
        _envelope(stream_id, "VmStopped", {"type": "VmDestroyRequested", "vm_id": "m",
                                           "job_id": "forged-job", "expunge": True}),
    ]

    lie_ids = [str(msgspec.json.decode(lie)["id"]) for lie in lies]

    async def lies_settled() -> bool:
        """Each lie counted as malformed, or given up on (its inbox row, committed with
        whatever the consumer wrote when it gave up)."""
        async with store.pool.acquire() as conn:
            given_up: int = await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
                name, lie_ids)
        return _count(metrics.MALFORMED_MESSAGES.labels(name)) + given_up >= len(lies)

    try:
        js = nc.jetstream()
        for n, lie in enumerate(lies):
            await js.publish(subjects.event_subject(stream_id, "VmStopped"), lie,
                             headers={"Nats-Msg-Id": f"lie-{n}"})
        await store.append(stream_id, [NewEvent(VmStopped(vm_id="m"),
                                                Metadata(correlation_id="good"))])
        await eventually(lambda: _handled(name, "VmStopped", 1), what="the valid VmStopped")
        # Each lie ends either rejected as malformed or given up on after its deliveries.
        await eventually(lies_settled, what="the lies rejected or given up on")
    finally:
        await _stop(task)

    outcome = {
        "payloads the handler ran on": [type(e.data).__name__ for e in handler.seen],
        "counted malformed": _count(metrics.MALFORMED_MESSAGES.labels(name)),
        "handler failures": _count(metrics.HANDLER_FAILURES.labels(name, "VmStopped")),
        "events stored": [e.type for e in await store.read_stream(stream_id)],
    }
    assert outcome == {
        "payloads the handler ran on": ["VmStopped"],
        "counted malformed": len(lies),
        "handler failures": 0,
        "events stored": ["VmStopped", "VmDestroyed"],
    }
