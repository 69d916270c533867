"""CloudStack request signing as the cs client, Libcloud, CloudMonkey and Marvin compute it,
and the request shapes refused before a signature is checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus, urlencode

import pytest
from libcloud.common.cloudstack import CloudStackConnection

from services.gateway import auth
from services.gateway.http import check_request
from shared.errors import ApiError

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


# ---- every client, with map parameters and the characters clients encode differently ------

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# What a deployVirtualMachine with details[] looks like; '*', '~', '[', ']', ':' and a space
# are where clients' encodings differ.
MAP_PARAMS = [
    ("command", "deployVirtualMachine"),
    ("apiKey", "KEY-1"),
    ("displayName", "web[1] *new* ~ café: été"),
    ("details[0].cpuNumber", "2"),
    ("details[0].memory", "2048"),
    ("response", "json"),
]
Signer = Callable[[list[tuple[str, str]]], str]


def libcloud_real_signature(params: list[tuple[str, str]]) -> str:
    """Libcloud's own CloudStack connection: its default parameters, then its signing hook."""
    # (Libcloud's connection methods carry no type annotations.)
    connection = CloudStackConnection(  # type: ignore[no-untyped-call]
        "KEY-1", SECRET, secure=False, host="cloud.example", port=8080)
    sent = connection.add_default_params(dict(params))  # type: ignore[no-untyped-call]
    assert sent["apiKey"] == "KEY-1" and sent["response"] == "json"  # its defaults
    signed, _ = connection.pre_connect_hook(sent, {})  # type: ignore[no-untyped-call]
    signature = signed["signature"]
    return signature.decode() if isinstance(signature, bytes) else str(signature)


def cmk_go_signature(params: list[tuple[str, str]], star_kept: bool) -> str:
    """CloudMonkey (Go, cmk): names sorted as they are (Go's sort.Strings), values through
    url.QueryEscape (space as '+', '~' kept, '*', '[', ']', ':' percent-encoded), '+' made
    %20; since 6.0 '%2A' is turned back into '*'; then the whole string lower-cased."""
    def query_escape(value: str) -> str:
        escaped = quote_plus(value, safe="~")
        escaped = escaped.replace("+", "%20")
        return escaped.replace("%2A", "*") if star_kept else escaped

    text = "&".join(f"{k}={query_escape(v)}" for k, v in sorted(params))
    return _b64hmac(text.lower())


def cloudmonkey_python_signature(params: list[tuple[str, str]]) -> str:
    """The Python CloudMonkey (5.x, Python 2): names lower-cased, sorted by their lower case;
    values through urllib.quote_plus(safe="*"), which in Python 2 also encodes '~' as %7E;
    the value lower-cased, '+' made %20 (its replace of '%3A' then matches nothing)."""
    def py2_quote_plus(value: str) -> str:
        return quote_plus(value, safe="*").replace("~", "%7E")

    ordered = sorted(params, key=lambda p: p[0].lower())
    text = "&".join(
        f"{k.lower()}=" + py2_quote_plus(v).lower().replace("+", "%20").replace("%3A", ":")
        for k, v in ordered)
    return _b64hmac(text)


def marvin_signature(params: list[tuple[str, str]], python2: bool) -> str:
    """Marvin's cloudstackConnection: names lower-cased and sorted by their lower case, values
    through quote_plus (with safe="*" in the Python 3 Marvin; with nothing safe, so '*' and
    '~' encoded, in the Python 2 one), lower-cased, '+' made %20."""
    def encode(value: str) -> str:
        if python2:
            return quote_plus(value, safe="").replace("~", "%7E")
        return quote_plus(value, safe="*")

    ordered = sorted(params, key=lambda p: p[0].lower())
    return _b64hmac("&".join(f"{k.lower()}={encode(v).lower().replace('+', '%20')}"
                             for k, v in ordered))


def with_expiry(params: list[tuple[str, str]], expires: str,
                version_name: str = "signatureVersion") -> list[tuple[str, str]]:
    return [*params, (version_name, "3"), ("expires", expires)]


CLIENTS: dict[str, Signer] = {
    "cs": cs_signature,
    "libcloud": libcloud_real_signature,
    "cloudmonkey-go": lambda p: cmk_go_signature(p, star_kept=True),
    "cloudmonkey-go-5": lambda p: cmk_go_signature(p, star_kept=False),
    "cloudmonkey-python": cloudmonkey_python_signature,
    "marvin": lambda p: marvin_signature(p, python2=False),
    "marvin-python2": lambda p: marvin_signature(p, python2=True),
    "java": java_signature,
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_each_client_signs_map_parameters_and_awkward_values(client: str) -> None:
    params = list(MAP_PARAMS)
    assert auth.verify(params, CLIENTS[client](params), SECRET)


@pytest.mark.parametrize(("client", "expires", "version_name"), [
    # cs: signatureVersion=3, expires 10 minutes ahead, written with +0000
    ("cs", (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S+0000"),
     "signatureVersion"),
    # cmk: signatureversion=3, expires 15 minutes ahead in RFC 3339 (Z)
    ("cloudmonkey-go", (NOW + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ"),
     "signatureversion"),
    # Python CloudMonkey: signatureversion=3, expires 600 s ahead with +0000
    ("cloudmonkey-python", (NOW + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%S+0000"),
     "signatureversion"),
])
def test_each_clients_v3_request_passes_the_expiry_rules(client: str, expires: str,
                                                         version_name: str) -> None:
    params = with_expiry(list(MAP_PARAMS), expires, version_name)
    signature = CLIENTS[client](params)
    api_key, sent_signature = check_request([*params, ("signature", signature)], NOW, HOUR)
    assert (api_key, sent_signature) == ("KEY-1", signature)
    assert auth.verify(params, signature, SECRET)


def test_real_libcloud_matches_its_documented_rule() -> None:
    """Libcloud 3.x: names lower-cased and sorted; '[', ']' and '*' kept in values."""
    lowered = sorted((k.lower(), v) for k, v in MAP_PARAMS)
    text = "&".join(f"{k}={quote(v, safe='[]*')}" for k, v in lowered).lower()
    assert libcloud_real_signature(list(MAP_PARAMS)) == _b64hmac(text)


# ---- reshaping: a name that stands for several parameters ------------------------------

def test_a_folded_name_signs_like_the_parameters_it_hides() -> None:
    """Why names are checked: without '=' and '&' refused, one parameter named
    ``response=json&signatureversion`` carries the signature of two parameters."""
    expired = "2020-01-01T00:00:00+0000"
    honest = [("apiKey", "KEY-1"), ("command", "listZones"), ("expires", expired),
              ("response", "json"), ("signatureversion", "3")]
    folded = [("apiKey", "KEY-1"), ("command", "listZones"), ("expires", expired),
              ("response=json&signatureversion", "3")]
    signature = cs_signature(honest)
    assert auth.verify(folded, signature, SECRET)  # the string to sign is the same
    with pytest.raises(auth.Refused, match="response=json&signatureversion") as refused:
        auth.check_names(folded)
    assert refused.value.param_error


@pytest.mark.parametrize("name", [
    "response=json&signatureversion", "a&b", "a=b", "", "name with space", "x%41", "名前",
    "a\x00b", "apikey;", "a-b", "a/b", "a+b", "a\nb",
])
def test_names_outside_the_alphabet_are_refused(name: str) -> None:
    with pytest.raises(auth.Refused, match="invalid parameter name") as refused:
        auth.check_names([("command", "listZones"), (name, "x")])
    assert "letters, digits" in refused.value.text


@pytest.mark.parametrize("name", ["command", "apiKey", "details[0].cpuNumber",
                                  "tags[12].value", "_", "signatureVersion", "page2"])
def test_real_parameter_names_pass(name: str) -> None:
    auth.check_names([(name, "x")])


def test_a_name_given_twice_is_refused_whatever_its_case() -> None:
    with pytest.raises(auth.Refused, match="signatureversion: given more than once"):
        auth.check_names([("signatureVersion", "3"), ("signatureversion", "2")])


# ---- signatureVersion and expires --------------------------------------------------------

def expiry(values: dict[str, str]) -> None:
    auth.check_expiry(values, NOW, HOUR)


def test_no_version_and_no_expires_is_the_older_kind_that_never_expires() -> None:
    expiry({})
    expiry({"signatureversion": "2"})


@pytest.mark.parametrize("version", [None, "2", "1", "", "3 "])
def test_expires_without_signature_version_3_is_refused(version: str | None) -> None:
    values = {"expires": "2026-11-28T10:05:00+0000"}
    if version is not None:
        values["signatureversion"] = version
    with pytest.raises(auth.Refused, match="only with signatureVersion=3"):
        expiry(values)


@pytest.mark.parametrize("expires", [None, "", "soon", "2026-11-28T10:05:00"])
def test_version_3_needs_a_valid_expires(expires: str | None) -> None:
    values = {"signatureversion": "3"}
    if expires is not None:
        values["expires"] = expires
    with pytest.raises(auth.Refused, match="needs a valid expires"):
        expiry(values)


def test_an_expired_request_names_the_servers_time() -> None:
    with pytest.raises(auth.Refused) as refused:
        expiry({"signatureversion": "3", "expires": "2026-11-28T09:59:59Z"})
    assert refused.value.text == ("the request expired at 2026-11-28T09:59:59+0000; the "
                                  "server's time is 2026-11-28T10:00:00+0000")
    assert not refused.value.param_error


def test_expires_too_far_ahead_is_refused() -> None:
    expiry({"signatureversion": "3", "expires": "2026-11-28T11:00:00+0000"})  # exactly 1 h
    with pytest.raises(auth.Refused) as refused:
        expiry({"signatureversion": "3", "expires": "2026-11-28T11:00:01+0000"})
    assert "more than 3600 seconds after the server's time 2026-11-28T10:00:00+0000" in \
        refused.value.text


# ---- the gateway's decision, before any key is looked up ---------------------------------

def refusal(pairs: list[tuple[str, str]]) -> ApiError:
    with pytest.raises(ApiError) as refused:
        check_request(pairs, NOW, HOUR)
    return refused.value


def test_a_folded_name_is_a_431_naming_it() -> None:
    error = refusal([("apiKey", "K"), ("command", "listZones"),
                     ("response=json&signatureversion", "3"),
                     ("expires", "2020-01-01T00:00:00+0000"), ("signature", "x")])
    assert error.code == 431
    assert error.body()["errortext"] == (
        "invalid parameter name 'response=json&signatureversion': a parameter name has only "
        "letters, digits, '.', '_', '[' and ']'")


def test_expiry_refusals_are_401_in_cloudstacks_words() -> None:
    error = refusal([("apiKey", "K"), ("command", "listZones"), ("signatureVersion", "3"),
                     ("expires", "2026-11-28T09:00:00+0000"), ("signature", "x")])
    assert error.code == 401
    assert error.body()["errortext"].startswith(
        "unable to verify user credentials and/or request signature: the request expired at "
        "2026-11-28T09:00:00+0000; the server's time is 2026-11-28T10:00:00+0000")


def test_a_request_without_key_or_signature_is_401() -> None:
    assert refusal([("command", "listZones"), ("apiKey", "K")]).code == 401
    assert refusal([("command", "listZones"), ("signature", "s")]).code == 401


def test_the_cs_clients_string_to_sign_is_tried_first_and_each_string_once() -> None:
    # The common case costs one HMAC: the string the cs client signs comes first.
    params = [*PARAMS, ("details[0].cpuNumber", "2")]
    cs_text = "&".join(f"{k}={quote(v, safe='*')}" for k, v in sorted(params)).lower()
    texts = list(auth.candidates(params))
    assert texts[0] == cs_text
    assert len(texts) == len(set(texts)) > 1
    assert auth.verify(params, auth.sign(params, SECRET), SECRET)
