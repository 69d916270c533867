"""CloudStack request signatures, as the server checks them and as real clients make them.

The server's string to sign: every parameter but ``signature``, sorted by name, each as
``name=urlencode(value)`` (spaces as ``%20``), joined with ``&``, lower-cased; the signature
is base64(HMAC-SHA1(secret, string)). Clients differ in small ways (whether ``*``, ``~``,
``[`` and ``]`` are percent-encoded; sorting by the name or by its lower case), so each
accepted variant is tried.

Names are not encoded in that string, so a name holding ``=`` or ``&`` could stand for
several parameters (``response=json&signatureversion`` signs like two). Every name must
therefore be made of the characters real parameter names use, checked before anything
else; and a name may appear once. Everything here is pure: the caller passes the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

Params = Sequence[tuple[str, str]]

# CloudStack's parameter names, map parameters included (``details[0].cpuNumber``).
NAME = re.compile(r"[A-Za-z0-9._\[\]]+")
NAME_RULE = "letters, digits, '.', '_', '[' and ']'"


class Refused(ValueError):
    """A request refused before or beside its signature; ``text`` says why."""

    def __init__(self, text: str, *, param_error: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.param_error = param_error  # a malformed request (431) rather than 401


def check_names(params: Params) -> None:
    """Refuse a parameter name outside CloudStack's alphabet, or one given twice.

    Raises:
        Refused: with ``param_error`` set; the text names the parameter.
    """
    seen: set[str] = set()
    for name, _ in params:
        if not NAME.fullmatch(name):
            raise Refused(f"invalid parameter name {name[:64]!r}: a parameter name has only "
                          f"{NAME_RULE}", param_error=True)
        folded = name.lower()
        if folded in seen:
            raise Refused(f"invalid parameter {name}: given more than once", param_error=True)
        seen.add(folded)


VARIANTS = list(itertools.product((True, False), repeat=3))
"""How a client percent-encodes a value: whether it keeps ``*``, ``~``, and ``[``/``]``;
the first is the cs client's (and the server's own Java) way."""
VARIANTS.sort(key=lambda v: v != (True, True, False))


def _encoded(value: str, star: bool, tilde: bool, brackets: bool) -> str:
    """``value`` percent-encoded as one kind of client does; '%20' for a space in all."""
    safe = ("*" if star else "") + ("~" if tilde else "") + ("[]" if brackets else "")
    encoded = quote(value, safe=safe)
    return encoded if tilde else encoded.replace("~", "%7E")


def candidates(params: Params) -> Iterator[str]:
    """Every accepted string to sign for ``params`` (without ``signature``), each once,
    the most common first (the cs client's), each made only when asked for.

    Variants: ``*`` kept (cs, Marvin, CloudMonkey, Libcloud, the server's own Java) or as
    ``%2A`` (CloudMonkey before 6.0, older Marvin); ``~`` kept (Python 3, Go) or as
    ``%7E`` (Java, Python 2 clients); ``[`` and ``]`` kept (Libcloud) or encoded; names
    sorted as they are (cs, the server, Go CloudMonkey) or by their lower case (Libcloud,
    Marvin, Python CloudMonkey).
    """
    seen: set[str] = set()
    for by_lower_name in (False, True):
        ordered = sorted(params, key=(lambda p: p[0].lower()) if by_lower_name
                         else (lambda p: (p[0], p[1])))
        for variant in VARIANTS:
            text = "&".join(f"{name}={_encoded(value, *variant)}"
                            for name, value in ordered).lower()
            if text not in seen:
                seen.add(text)
                yield text


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


def _cs_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def check_expiry(values: Mapping[str, str], now: datetime, max_ahead: timedelta) -> None:
    """Refuse what ``signatureVersion`` and ``expires`` (names lower-cased in ``values``)
    do not allow at ``now``.

    ``expires`` is honoured only with ``signatureVersion=3`` and then required; it must lie
    after ``now`` and at most ``max_ahead`` after it. Without either, the request is
    CloudStack's older kind, which never expires.

    Raises:
        Refused: the text says what is wrong and gives the server's time where it matters.
    """
    version, expires_text = values.get("signatureversion"), values.get("expires")
    if version != "3":
        if expires_text is not None:
            raise Refused(f"expires is honoured only with signatureVersion=3, not with "
                          f"signatureVersion={(version or '')[:16]!r}: send "
                          "signatureVersion=3 with expires, or neither")
        return
    try:
        expires = parse_expires(expires_text or "")
    except ValueError:
        raise Refused("signatureVersion 3 needs a valid expires parameter (an ISO-8601 "
                      "time with a zone, e.g. 2026-11-28T10:00:00+0000)") from None
    if expires <= now:
        raise Refused(f"the request expired at {_cs_time(expires)}; the server's time is "
                      f"{_cs_time(now)}")
    if expires > now + max_ahead:
        raise Refused(f"expires {_cs_time(expires)} is more than "
                      f"{int(max_ahead.total_seconds())} seconds after the server's time "
                      f"{_cs_time(now)}; sign requests to expire sooner")
