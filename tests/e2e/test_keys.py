"""Key pairs on a real stack: new keys revoke the old ones, secrets are sealed in the
database, and a signed request cannot be reshaped or replayed after it expires."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cs import CloudStack
from libcloud.compute.drivers.cloudstack import CloudStackNodeDriver

from services.gateway.auth import sign
from tests.e2e.helpers import refused

pytestmark = pytest.mark.stack

CS_TIME = "%Y-%m-%dT%H:%M:%S+0000"


def client(stack: dict[str, Any], keys: dict[str, str]) -> CloudStack:
    return CloudStack(endpoint=stack["api_url"], key=keys["apikey"], secret=keys["secretkey"])


def api_keys_rows(stack: dict[str, Any]) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack["database_url"])
        try:
            rows = await conn.fetch("SELECT *, row_to_json(k)::text AS as_text FROM api_keys k")
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def send(stack: dict[str, Any], pairs: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """A GET with exactly these parameters; the status and the error (or answer) body."""
    url = f"{stack['api_url']}?{urllib.parse.urlencode(pairs)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, body = error.code, json.loads(error.read())
    [(_, inner)] = body.items()
    return status, inner


def test_new_keys_revoke_the_old_ones_and_secrets_are_sealed(stack: dict[str, Any],
                                                             cloud: CloudStack) -> None:
    created = cloud.createAccount(username="dana", password="not-kept", email="d@example.com",
                                  firstname="Dana", lastname="Example", accounttype="0")
    user_id = created["account"]["user"][0]["id"]
    first = cloud.registerUserKeys(id=user_id)["userkeys"]
    assert client(stack, first).listZones()["zone"]

    # The user replaces their own pair: the old one stops at once, as an unknown key does.
    second = client(stack, first).registerUserKeys(id=user_id)["userkeys"]
    assert second["apikey"] != first["apikey"]
    old = refused(lambda: client(stack, first).listZones())
    unknown = refused(lambda: client(stack, {"apikey": "no-such-key",
                                             "secretkey": "x"}).listZones())
    assert old["errorcode"] == 401 and old == unknown
    assert client(stack, second).listZones()["zone"]

    # The admin replaces it again; the second pair goes the same way.
    third = cloud.registerUserKeys(id=user_id)["userkeys"]
    assert refused(lambda: client(stack, second).listZones())["errorcode"] == 401
    assert client(stack, third).listZones()["zone"]

    rows = {r["api_key"]: r for r in api_keys_rows(stack)}
    secrets = [first["secretkey"], second["secretkey"], third["secretkey"],
               stack["admin_secret_key"]]
    for row in rows.values():
        assert row["secret_key"] is None  # no column holds a secret in clear
        for secret in secrets:
            assert secret not in row["as_text"]
            assert secret.encode() not in (row["secret_sealed"] or b"")
    assert rows[third["apikey"]]["secret_sealed"] and rows[third["apikey"]]["revoked"] is None
    for gone in (first, second):
        assert rows[gone["apikey"]]["revoked"] is not None
        assert rows[gone["apikey"]]["secret_sealed"] is None
    assert rows[stack["admin_api_key"]]["secret_sealed"]


def test_a_folded_parameter_name_cannot_replay_an_expired_request(
        stack: dict[str, Any]) -> None:
    key, secret = stack["admin_api_key"], stack["admin_secret_key"]
    expired = (datetime.now(UTC) - timedelta(minutes=5)).strftime(CS_TIME)
    honest = [("apiKey", key), ("command", "listZones"), ("expires", expired),
              ("response", "json"), ("signatureVersion", "3")]
    signature = sign(honest, secret)
    status, error = send(stack, [*honest, ("signature", signature)])
    assert status == 401 and f"the request expired at {expired}; the server's time is " in \
        error["errortext"], error

    # One parameter named "response=json&signatureVersion" signs as the two it replaces.
    folded = [("apiKey", key), ("command", "listZones"), ("expires", expired),
              ("response=json&signatureVersion", "3"), ("signature", signature)]
    status, error = send(stack, folded)
    assert status == 431, error
    assert error["errortext"] == (
        "invalid parameter name 'response=json&signatureVersion': a parameter name has only "
        "letters, digits, '.', '_', '[' and ']'")

    # Nor can the version be dropped and expires kept.
    without = [("apiKey", key), ("command", "listZones"), ("expires", expired),
               ("response", "json")]
    status, error = send(stack, [*without, ("signature", sign(without, secret))])
    assert status == 401 and "expires is honoured only with signatureVersion=3" in \
        error["errortext"]


def test_expires_far_ahead_is_refused_and_near_ahead_served(stack: dict[str, Any]) -> None:
    key, secret = stack["admin_api_key"], stack["admin_secret_key"]

    def request(ahead: timedelta) -> tuple[int, dict[str, Any]]:
        params = [("apiKey", key), ("command", "listZones"), ("response", "json"),
                  ("signatureVersion", "3"),
                  ("expires", (datetime.now(UTC) + ahead).strftime(CS_TIME))]
        return send(stack, [*params, ("signature", sign(params, secret))])

    status, body = request(timedelta(minutes=10))
    assert status == 200 and body["zone"]
    status, error = request(timedelta(days=365))
    assert status == 401 and "is more than 3600 seconds after the server's time" in \
        error["errortext"]


def test_libcloud_drives_the_api(stack: dict[str, Any]) -> None:
    url = urllib.parse.urlsplit(stack["api_url"])
    driver = CloudStackNodeDriver(  # type: ignore[no-untyped-call]
        stack["admin_api_key"], stack["admin_secret_key"], secure=False, host=url.hostname,
        port=url.port, path=url.path)
    zones = driver.list_locations()  # type: ignore[no-untyped-call]
    assert zones and all(zone.name for zone in zones)
