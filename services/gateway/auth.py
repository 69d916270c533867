"""CloudStack request signatures, as the server checks them and as real clients make them.

The server's string to sign: every parameter but ``signature``, sorted by name, each as
``name=urlencode(value)`` (spaces as ``%20``), joined with ``&``, lower-cased; the signature
is base64(HMAC-SHA1(secret, string)). Clients differ in small ways (``*`` and ``~``
encoding, Libcloud sorting lower-cased names), so each accepted variant is tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

Params = Sequence[tuple[str, str]]


def _encodings(value: str) -> Iterator[str]:
    plain = quote(value, safe="*")  # cs; newer CloudMonkey
    yield plain
    yield plain.replace("~", "%7E")  # Java's URLEncoder, the server's own
    yield quote(value, safe="")  # Libcloud, older CloudMonkey: '*' as %2A


def candidates(params: Params) -> set[str]:
    """Every accepted string to sign for ``params`` (without ``signature``)."""
    out = set()
    for by_lower_name in (False, True):
        ordered = sorted(params, key=(lambda p: p[0].lower()) if by_lower_name else None)
        for variant in range(3):
            parts = []
            for name, value in ordered:
                encoded = list(_encodings(value))[variant]
                parts.append(f"{name}={encoded}")
            out.add("&".join(parts).lower())
    return out


def sign(params: Params, secret: str) -> str:
    """The signature a client computes (the cs client's way)."""
    text = "&".join(f"{k}={quote(v, safe='*')}" for k, v in sorted(params)).lower()
    return _hmac(secret, text)


def _hmac(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(params: Params, signature: str, secret: str) -> bool:
    """True if ``signature`` signs ``params`` with ``secret`` in any accepted variant."""
    return any(
        hmac.compare_digest(_hmac(secret, text), signature) for text in candidates(params)
    )


def parse_expires(value: str) -> datetime:
    """An ``expires`` value as cs (``+0000``) or CloudMonkey (``Z``) write it.

    Raises:
        ValueError: not an ISO-8601 time with a zone.
    """
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        raise ValueError("expires needs a time zone, e.g. 2026-11-28T10:00:00+0000")
    return parsed.astimezone(UTC)
