"""Audit streams (GET /client/events) on a gateway app over real PostgreSQL, with a pool of
the size the gateway's runtime opens: more open streams than the pool holds leave the API
answering, an account's streams beyond its cap are refused with 429, hostile Last-Event-ID
headers get a 431, new events reach exactly the streams that may see them, and a client
that does not keep up is dropped without holding up the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from proto import streams
from proto.envelope import Metadata
from proto.events import AccountCreated
from services.gateway.app import HANDLER_ARGS, build, ensure_admin_keys, ensure_defaults
from services.gateway.auth import sign
from services.gateway.fanout import Fanout, FellBehind
from services.gateway.http import CONTEXT
from shared.config import load
from shared.db import Notifications, create_pool, migrate
from shared.eventstore import NOTIFY_CHANNEL, EventStore, NewEvent, RecordedEvent
from shared.projections import ALL, Projector
from shared.runtime import Runtime
from tests.helpers import eventually

ADMIN_KEY, ADMIN_SECRET = "admin-key", "admin-secret"
CAP = 5
# Generous: a call that answers at all answers in milliseconds; without the shared reader
# it never answers, because every pool connection is held by a stream.
ANSWERS_WITHIN_S = 30.0


class Gateway:
    def __init__(self, client: Any, store: EventStore) -> None:
        self.client: Any = client
        self.store = store
        self.keys: dict[str, tuple[str, str]] = {"admin": (ADMIN_KEY, ADMIN_SECRET)}
        self.accounts: dict[str, str] = {}

    async def add_user(self, name: str) -> str:
        """A user account made through the API, with its key pair; returns its id."""
        status, body = await self.call("createAccount", username=name, password="not-kept",
                                       email=f"{name}@example.com", firstname=name,
                                       lastname="Example", accounttype="0")
        assert status == 200, body
        account = body["createaccountresponse"]["account"]
        status, body = await self.call("registerUserKeys", id=account["user"][0]["id"])
        assert status == 200, body
        keys = body["registeruserkeysresponse"]["userkeys"]
        self.keys[name] = (keys["apikey"], keys["secretkey"])
        self.accounts[name] = account["id"]
        return str(account["id"])

    def signed(self, who: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        key, secret = self.keys[who]
        pairs = [*params, ("apikey", key)]
        return [*pairs, ("signature", sign(pairs, secret))]

    async def call(self, command: str, **params: str) -> tuple[int, dict[str, Any]]:
        pairs = self.signed("admin", [("command", command), ("response", "json"),
                                      *params.items()])
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            response = await self.client.get("/client/api", params=pairs)
            body: dict[str, Any] = await response.json()
        return response.status, body

    async def open(self, who: str, last_event_id: str | None = None) -> Any:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            return await self.client.get("/client/events", params=self.signed(who, []),
                                         headers=headers)

    async def append(self, account_id: str, name: str) -> RecordedEvent:
        meta = Metadata(correlation_id=str(uuid.uuid4()), actor="test", account_id=account_id)
        event = AccountCreated(account_id=account_id, name=name, role="user")
        [recorded] = await self.store.append(streams.account(str(uuid.uuid4())),
                                             [NewEvent(event, meta)])
        return recorded


class Reader:
    """Collects the events one open stream sends: (id, type, data)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "id" in fields:
                    self.events.append((int(fields["id"]), fields["event"],
                                        json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def names(self) -> list[str]:
        return [data["data"]["name"] for _, kind, data in self.events if kind == "AccountCreated"]

    async def until(self, name: str) -> list[str]:
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            while name not in self.names():
                if self.task.done():
                    raise AssertionError(f"stream ended before {name}: {self.task!r}")
                await asyncio.sleep(0.05)
        return self.names()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.response.close()


@pytest.fixture
async def gateway(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    # The gateway's own pool, as Runtime.postgres() opens it (asyncpg's default size, 10);
    # the projector runs on the fixture's separate pool, as it runs in its own process.
    gateway_pool = await create_pool(database_url, timeout=5)
    assert gateway_pool.get_max_size() == 10
    async with gateway_pool.acquire() as conn:
        await migrate(conn)
    store = EventStore(gateway_pool)
    settings = load({"SNAPDEPLOY_ADMIN_API_KEY": ADMIN_KEY,
                     "SNAPDEPLOY_ADMIN_SECRET_KEY": ADMIN_SECRET,
                     "SNAPDEPLOY_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
                     "SNAPDEPLOY_MAX_EVENT_STREAMS_PER_ACCOUNT": str(CAP)})
    await ensure_admin_keys(store, settings)
    await ensure_defaults(store)
    projector = asyncio.create_task(Projector(EventStore(pool), ALL).run())
    server = TestServer(build(Runtime("gateway", settings), store))
    await server.start_server(max_line_size=HANDLER_ARGS["max_line_size"],
                              max_field_size=HANDLER_ARGS["max_field_size"])
    client = TestClient(server)
    try:
        yield Gateway(client, store)
    finally:
        await client.close()
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
        await gateway_pool.close()


async def test_the_gateway_listens_on_one_connection_of_its_pool(gateway: Gateway) -> None:
    """The audit streams' reader, the projector's progress and the API keys kept all hear
    PostgreSQL on one connection: with it listening and every other connection but one
    taken, the API answers on that one."""
    context = gateway.client.server.app[CONTEXT]

    async def listening() -> bool:
        return bool(context.notifications.live and context.progress.live)

    await eventually(listening, ANSWERS_WITHIN_S, "the gateway listening")
    pool = gateway.store.pool
    taken = [await pool.acquire() for _ in range(pool.get_max_size() - 2)]
    try:
        status, body = await gateway.call("listZones")
        assert status == 200, body
        response = await gateway.open("admin")  # a stream costs no connection of its own
        assert response.status == 200
        reader = Reader(response)
        try:
            account_id = await gateway.add_user("erin")
            await gateway.append(account_id, "heard")
            assert "heard" in await reader.until("heard")
        finally:
            await reader.close()
    finally:
        for conn in taken:
            await pool.release(conn)


async def test_more_streams_than_the_pool_leave_the_api_answering_and_stay_apart(
    gateway: Gateway,
) -> None:
    names = ["alice", "bob", "carol"]
    for name in names:
        await gateway.add_user(name)
    readers: dict[str, list[Reader]] = {}
    for who in [*names, "admin"]:
        readers[who] = []
        for _ in range(CAP if who != "admin" else 2):
            response = await gateway.open(who)
            assert response.status == 200, await response.text()
            readers[who].append(Reader(response))
    open_streams = sum(len(r) for r in readers.values())
    assert open_streams > gateway.store.pool.get_max_size()

    try:
        # The API answers, reads and writes, with every stream open.
        status, body = await gateway.call("listServiceOfferings")
        assert status == 200 and body["listserviceofferingsresponse"]["count"] >= 1
        status, body = await gateway.call("createServiceOffering", name="streams-open",
                                          displaytext="x", cpunumber="1", cpuspeed="100",
                                          memory="128")
        assert status == 200, body

        # One stream more than the cap is refused, for each account at its cap, in
        # CloudStack's envelope, naming the account and the cap.
        for who in ("alice", "bob"):
            refused = await gateway.open(who)
            assert refused.status == 429
            error = (await refused.json())["streameventsresponse"]
            assert error["errorcode"] == 429 and error["cserrorcode"] == 4545
            assert who in error["errortext"] and f"limit of {CAP}" in error["errortext"]

        # Events appended now reach every stream of their account, and no other account's.
        for name in names:
            await gateway.append(gateway.accounts[name], f"{name}-event")
        for name in names:
            for reader in readers[name]:
                seen = await reader.until(f"{name}-event")
                assert seen == [f"{name}-event"], (name, seen)
        for reader in readers["admin"]:
            seen = await reader.until("carol-event")
            assert {"alice-event", "bob-event", "carol-event"} <= set(seen)

        # A closed stream frees its place under the cap.
        await readers["alice"].pop().close()
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            while True:
                again = await gateway.open("alice")
                if again.status == 200:
                    readers["alice"].append(Reader(again))
                    break
                assert again.status == 429
                again.close()
                await asyncio.sleep(0.2)
        status, _ = await gateway.call("listZones")
        assert status == 200
    finally:
        for group in readers.values():
            for reader in group:
                await reader.close()


async def test_hostile_last_event_ids_get_a_431_and_one_above_the_head_waits(
    gateway: Gateway,
) -> None:
    account_id = await gateway.add_user("dave")
    for header, why in (("9" * 5000, "beyond any event position"),
                        ("1" + "0" * 19, "beyond any event position"),
                        (str(2**63), "beyond any event position"),
                        ("\u00b2", "not a position"),
                        ("-1", "not a position")):
        response = await gateway.open("dave", last_event_id=header)
        body = await response.json()
        assert response.status == 431, (header[:30], body)
        error = body["streameventsresponse"]
        assert error["errorcode"] == 431
        assert "Last-Event-ID" in error["errortext"] and why in error["errortext"]

    # A position in range but above the newest event: nothing after it yet. The stream
    # stays open and sends the first event whose position passes it.
    head = (await gateway.append(account_id, "before")).position
    response = await gateway.open("dave", last_event_id=str(head + 2))
    assert response.status == 200
    reader = Reader(response)
    try:
        for name in ("skipped-1", "skipped-2", "after"):
            await gateway.append(account_id, name)
        assert await reader.until("after") == ["after"]
        assert reader.events[0][0] == head + 3
    finally:
        await reader.close()


async def test_a_client_that_falls_behind_is_dropped_and_resumes_without_a_gap(
    store: EventStore,
) -> None:
    notifications = Notifications(store.pool, (NOTIFY_CHANNEL,))
    fanout = Fanout(store, notifications, max_per_account=CAP, max_behind=3, idle_poll=0.2)
    listening = asyncio.create_task(notifications.run())
    running = asyncio.create_task(fanout.run())
    meta = Metadata(correlation_id="c", actor="test", account_id="acct")

    made = 0

    async def append(n: int) -> None:
        nonlocal made
        for _ in range(n):  # accounts e0, e1, ...: names are unique in the store
            await store.append(streams.account(str(uuid.uuid4())),
                               [NewEvent(AccountCreated(account_id="acct", name=f"e{made}",
                                                        role="user"), meta)])
            made += 1

    try:
        await append(2)
        slow = fanout.open("acct", sees_all=False, after=0)
        brisk = fanout.open("acct", sees_all=False, after=0)
        caught_up: list[RecordedEvent] = []
        for sub in (slow, brisk):
            got: list[RecordedEvent] = []
            # The two events come by catching up or, if the stream went live before the
            # reader handed them out, by the live feed: wait for both, and for live.
            async with asyncio.timeout(ANSWERS_WITHIN_S):
                while len(got) < 2 or not sub.live:
                    got += await sub.next(1.0)
            assert [e.event().name for e in got] == ["e0", "e1"]  # type: ignore[union-attr]
            caught_up = got
        last_seen_by_slow = caught_up[-1].position

        # The slow client reads nothing while 5 events arrive; the brisk one gets them all.
        brisk_got: list[RecordedEvent] = []
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            for n in range(1, 6):
                await append(1)
                while len(brisk_got) < n:
                    brisk_got += await brisk.next(1.0)
        assert slow.dropped
        with pytest.raises(FellBehind):
            await slow.next(1.0)
        slow.close()
        assert fanout.open_streams("acct") == 1

        # It reconnects from the last id it received and gets exactly what it missed.
        resumed = fanout.open("acct", sees_all=False, after=last_seen_by_slow)
        again: list[RecordedEvent] = []
        async with asyncio.timeout(ANSWERS_WITHIN_S):
            while len(again) < 5:
                again += await resumed.next(1.0)
        assert [e.position for e in again] == [e.position for e in brisk_got]
        resumed.close()
        brisk.close()
        assert fanout.open_streams("acct") == 0
    finally:
        for task in (running, listening):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
