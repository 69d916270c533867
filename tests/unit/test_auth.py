"""CloudStack request signing as the cs client, Libcloud and CloudMonkey compute it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest

from services.gateway import auth

SECRET = "s3cr3t-Key_with~tilde"
PARAMS = [
    ("command", "deployVirtualMachine"),
    ("apiKey", "KEY-1"),
    ("displayName", "web server*1 ~ café"),
    ("networkids", "a,b"),
    ("response", "json"),
]


def _b64hmac(text: str) -> str:
    digest = hmac.new(SECRET.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def cs_signature(params: list[tuple[str, str]]) -> str:
    # cs: sorted(items), quote(v, safe="*"), lower-cased
    text = "&".join(f"{k}={quote(v, safe='*')}" for k, v in sorted(params)).lower()
    return _b64hmac(text)


def libcloud_signature(params: list[tuple[str, str]]) -> str:
    # Libcloud: names lower-cased before sorting, urlencode, '+' as %20
    lowered = sorted((k.lower(), v) for k, v in params)
    return _b64hmac(urlencode(lowered).lower().replace("+", "%20"))


def cloudmonkey_signature(params: list[tuple[str, str]], star: bool) -> str:
    # Go's url.QueryEscape: space as '+', '*' as %2A, '~' kept; '+' then becomes %20
    def escape(v: str) -> str:
        out = quote(v, safe="~").replace("%20", "+").replace("+", "%20")
        return out.replace("%2A", "*") if star else out

    return _b64hmac("&".join(f"{k}={escape(v)}" for k, v in sorted(params)).lower())


def java_signature(params: list[tuple[str, str]]) -> str:
    text = "&".join(f"{k}={quote(v, safe='*').replace('~', '%7E')}" for k, v in sorted(params))
    return _b64hmac(text.lower())


@pytest.mark.parametrize("signer", [
    cs_signature, libcloud_signature, java_signature,
    lambda p: cloudmonkey_signature(p, star=False),
    lambda p: cloudmonkey_signature(p, star=True),
], ids=["cs", "libcloud", "java", "cloudmonkey-old", "cloudmonkey-new"])
def test_every_client_variant_verifies(signer) -> None:  # type: ignore[no-untyped-def]
    assert auth.verify(PARAMS, signer(PARAMS), SECRET)


def test_sign_matches_the_cs_client() -> None:
    assert auth.sign(PARAMS, SECRET) == cs_signature(PARAMS)


def test_wrong_secret_or_changed_value_fails() -> None:
    good = cs_signature(PARAMS)
    assert not auth.verify(PARAMS, good, "other-secret")
    tampered = [(k, "other" if k == "networkids" else v) for k, v in PARAMS]
    assert not auth.verify(tampered, good, SECRET)
    assert not auth.verify(PARAMS, "", SECRET)


@pytest.mark.parametrize("text", ["2026-11-28T10:00:00+0000", "2026-11-28T10:00:00Z",
                                  "2026-11-28T11:00:00+01:00"])
def test_expires_in_the_formats_clients_send(text: str) -> None:
    assert auth.parse_expires(text) == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-11-28T10:00:00"])
def test_expires_without_zone_or_garbage_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_expires(text)
