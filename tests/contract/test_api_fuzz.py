"""Hostile input against the gateway (real PostgreSQL, the projector running): thousands of
generated requests, signed and unsigned, to every command and to made-up ones. None may
get a 5xx or anything but CloudStack's envelope."""

from __future__ import annotations

import asyncio
import contextlib
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.api import COMMANDS
from services.gateway.app import HANDLER_ARGS, build, ensure_admin_keys, ensure_defaults
from services.gateway.auth import sign
from shared.config import Settings
from shared.eventstore import EventStore
from shared.projections import ALL, Projector
from shared.runtime import Runtime

KEY, SECRET = "fuzz-key", "fuzz-secret"
PARAMS = sorted({
    "id", "name", "displayname", "zoneid", "vmsnapshotid", "templateid", "serviceofferingid",
    "hostid", "networkids", "virtualmachineid", "volumeid", "jobid", "storageid", "expunge",
    "snapshotmemory", "size", "page", "pagesize", "cpunumber", "cpuspeed", "memory", "disksize",
    "value", "username", "password", "email", "firstname", "lastname", "accounttype",
    "accountid", "keyword", "state", "type", "diskofferingid", "snapshotid", "templatefilter",
    "description", "quiescevm", "after",
})
HOSTILE = [
    "", " ", "0", "-1", "99999999999999999999", "1e309", "true", "null", "[]", "{}",
    "' OR 1=1 --", "'; DROP TABLE events; --", "../../etc/passwd", "<script>alert(1)</script>",
    "\u0000", "\u202e\u0645\u0631\u062d\u0628\u0627", "😀" * 50, "a" * 5000, "%00", "%s%s%s",
    str(uuid.UUID(int=0)), "00000000-0000-0000-0000-00000000000g", ",".join(["x"] * 100),
]
values = st.one_of(st.sampled_from(HOSTILE), st.uuids().map(str), st.integers().map(str),
                   st.text(max_size=300), st.text(alphabet=string.printable, max_size=40))
commands = st.one_of(st.sampled_from([c.name for c in COMMANDS.values()]),
                     st.text(max_size=30))
requests = st.tuples(commands, st.dictionaries(st.sampled_from(PARAMS), values, max_size=8),
                     st.sampled_from(["signed", "signed", "signed", "unsigned", "bad"]),
                     st.sampled_from(["GET", "POST"]))


@pytest.fixture
async def gateway(pool: asyncpg.Pool) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    store = EventStore(pool)
    settings_ = Settings(admin_api_key=KEY, admin_secret_key=SECRET, key_encryption_key="k" * 32)
    await ensure_admin_keys(store, settings_)
    await ensure_defaults(store)
    projector = asyncio.create_task(Projector(store, ALL).run())
    server = TestServer(build(Runtime("gateway", settings_), store))
    # as the gateway's own runner is set up
    await server.start_server(max_line_size=HANDLER_ARGS["max_line_size"],
                              max_field_size=HANDLER_ARGS["max_field_size"])
    client = TestClient(server)
    yield client
    await client.close()
    projector.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await projector


def test_ten_thousand_generated_requests_get_no_5xx(gateway: TestClient) -> None:  # type: ignore[type-arg]
    loop = asyncio.get_event_loop()
    seen: dict[int, int] = {}

    async def send(command: str, params: dict[str, str], auth: str, method: str) -> None:
        pairs = [("command", command), ("response", "json"), *params.items()]
        if auth != "unsigned":
            pairs.append(("apikey", KEY))
            pairs.append(("signature", sign(pairs, SECRET if auth == "signed" else "wrong")))
        if method == "GET":
            response = await gateway.get("/client/api", params=pairs)
        else:
            response = await gateway.post("/client/api", data=pairs)
        body: Any = await response.json()
        seen[response.status] = seen.get(response.status, 0) + 1
        assert response.status < 500, (command, params, response.status, body)
        [(key, value)] = body.items()
        assert key.endswith("response")
        if response.status != 200:
            assert value["errorcode"] == response.status and value["errortext"]

    @settings(max_examples=10_000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests)
    def check(request: tuple[str, dict[str, str], str, str]) -> None:
        loop.run_until_complete(send(*request))

    check()
    assert sum(seen.values()) >= 10_000
    assert {200, 401, 431} <= set(seen)
