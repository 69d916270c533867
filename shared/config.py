"""Settings of every snapdeploy process, from environment variables and an optional file.

Each field ``name`` is read from ``SNAPDEPLOY_<NAME>`` (``DATABASE_URL`` is also accepted
for ``database_url``). ``SNAPDEPLOY_CONFIG`` may name a TOML file with the same field
names; the environment wins over the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # One NATS server, or the servers of a cluster comma-separated
    # ("nats://a:4222,nats://b:4222,nats://c:4222"): a client connects to one of them and
    # fails over to the others by itself.
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str = ""
    nats_password: str = ""
    database_url: str = "postgresql://snapdeploy@127.0.0.1:5432/snapdeploy"
    # The schema owner's URL, for `snapdeploy db migrate` and `projections rebuild` (the
    # services connect with database_url, a role that may not change the schema).
    database_admin_url: str = ""
    vcenter_url: str = ""
    vcenter_user: str = ""
    vcenter_password: str = ""
    vcenter_verify_tls: bool = True
    # Seconds one vCenter call may take before it counts as failed (and is retried where
    # that is safe). Tasks are waited for separately, for up to ten minutes.
    vcenter_timeout: float = 120.0
    # vCenter calls a process runs at once, per vCenter (each waits for its task on a thread
    # of its own): as many as a consumer holds messages, so one cloner drives as many
    # deploys at once as it is handed.
    vcenter_threads: int = 64
    # Further vCenters, each a zone per datacenter like the one above:
    # "<name>=https://<user>:<password>@<host>[:<port>]/sdk[?verify_tls=false]; ...".
    # Without user and password, vcenter_user's and vcenter_password's; without verify_tls,
    # vcenter_verify_tls. Read by vcenters() below.
    vcenters: str = ""
    # KVM zones through libvirt, each a set of libvirt hosts:
    # "<zone>: <host>=<libvirt URI>, <host>=<URI>; <zone>: ...". Empty: no KVM zone.
    # Read by kvm_zones() below.
    kvm_zones: str = ""
    gateway_listen: str = "127.0.0.1:8080"
    health_listen: str = "127.0.0.1:0"
    admin_api_key: str = ""
    admin_secret_key: str = ""
    # The admin user's password for login (the web console); `up` generates one.
    admin_password: str = ""
    # Seals the secret keys kept in the api_keys table (AES-GCM); `up` generates one. At
    # least 32 characters; the gateway refuses to start without it.
    key_encryption_key: str = ""
    # How far ahead of the server's clock a signed request's `expires` may lie.
    signature_max_expiry_s: int = 3600
    log_level: str = "INFO"
    # nats-server's authorization file that the gateway keeps current (one NATS user per API
    # key; see shared.natsauth); empty when the NATS server's configuration is kept elsewhere.
    nats_auth_file: str = ""
    # Open /client/events streams one account may hold in one gateway; one more is a 429.
    max_event_streams_per_account: int = 5
    # Copies of the events stream JetStream keeps (its num_replicas): 1 on a single server;
    # 3 on a cluster of three, so the stream outlives one node. `up --nats-nodes N` sets it.
    # An existing stream with fewer is scaled up; one with more is left as it is.
    nats_replicas: int = 1


SECRET_FIELDS = frozenset({"nats_password", "vcenter_password", "vcenters", "admin_secret_key",
                           "admin_password", "key_encryption_key"})


# A zone's or a host's name: what ids and messages carry, so no separator of the setting.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A libvirt URI starts with its scheme ("qemu:///system", "qemu+ssh://host/system").
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


def kvm_zones(text: str) -> dict[str, dict[str, str]]:
    """The KVM zones a ``kvm_zones`` setting names: zone -> {host name -> libvirt URI},
    in the order given.

    The format is ``"<zone>: <host>=<URI>, <host>=<URI>; <zone>: ..."``; spaces around the
    separators are ignored, and so is a trailing ``;`` or ``,``. Zone and host names are
    letters, digits, ``_``, ``.`` and ``-`` (the host's name is its id in the zone, and the
    zone's name its id, so a host belongs to one zone only).

    Raises:
        ValueError: a part is malformed; the message quotes it and says what is wrong.
    """
    zones: dict[str, dict[str, str]] = {}
    zone_of_host: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        zone, colon, hosts_text = (p.strip() for p in entry.partition(":"))
        if not colon or "=" in zone:
            raise ValueError(f"kvm_zones: {entry!r} does not start with a zone's name and ':' "
                             "(\"<zone>: <host>=<libvirt URI>, ...\")")
        if not _NAME.match(zone):
            raise ValueError(f"kvm_zones: zone name {zone!r} in {entry!r} is not letters, "
                             "digits, '_', '.' and '-'")
        if zone in zones:
            raise ValueError(f"kvm_zones: zone {zone!r} is named twice")
        hosts: dict[str, str] = {}
        for item in (i.strip() for i in hosts_text.split(",")):
            if not item:
                continue
            host, equals, uri = (p.strip() for p in item.partition("="))
            if not equals:
                raise ValueError(f"kvm_zones: {item!r} in zone {zone!r} is not "
                                 "<host>=<libvirt URI>")
            if not _NAME.match(host):
                raise ValueError(f"kvm_zones: host name {host!r} in zone {zone!r} is not "
                                 "letters, digits, '_', '.' and '-'")
            if not _URI.match(uri):
                raise ValueError(f"kvm_zones: {uri!r} (host {host!r} in zone {zone!r}) is not "
                                 "a libvirt URI such as qemu:///system")
            if host in hosts:
                raise ValueError(f"kvm_zones: host {host!r} is named twice in zone {zone!r}")
            if host in zone_of_host:
                raise ValueError(f"kvm_zones: host {host!r} is in zone {zone_of_host[host]!r} "
                                 f"and in zone {zone!r}; a host belongs to one zone")
            hosts[host] = uri
            zone_of_host[host] = zone
        if not hosts:
            raise ValueError(f"kvm_zones: zone {zone!r} has no host (\"{zone}: "
                             "<host>=<libvirt URI>\")")
        zones[zone] = hosts
    return zones


@dataclass(frozen=True)
class VCenter:
    """One vCenter to connect to. ``name`` is empty for the vCenter of ``vcenter_url``; a
    further vCenter's (of ``vcenters``) is its health check's and scopes the ids of its
    objects, so it is not to be changed once its inventory has been imported."""

    name: str
    url: str  # without credentials or query: https://host[:port]/sdk
    user: str
    password: str
    verify_tls: bool

    def __repr__(self) -> str:  # never the password
        return f"VCenter({self.name!r}, {self.url!r}, user={self.user!r})"


# A URL's password: what messages quoting a URL hide.
_USERINFO = re.compile(r"(://[^:/@\s]*:)[^/\s]*@")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def vcenters(settings: Settings) -> list[VCenter]:
    """Every vCenter the settings name: ``vcenter_url``'s first (named ""), then those of
    ``vcenters`` in the order given.

    ``vcenters`` is ``"<name>=<URL>; <name>=<URL>"``, each URL
    ``https://<user>:<password>@<host>[:<port>]/sdk`` with user and password
    percent-encoded (``%3B`` for ``;``), optionally ending in ``?verify_tls=false``; spaces
    around the separators and a trailing ``;`` are ignored. A URL without user and
    password logs in with ``vcenter_user`` and ``vcenter_password``; one without
    ``verify_tls`` follows ``vcenter_verify_tls``. Names are letters, digits, ``_``, ``.``
    and ``-``; neither a name nor a vCenter (its host, port and path) may be named twice.

    Raises:
        ValueError: a part is malformed; the message quotes it (its password hidden) and
            says what is wrong.
    """
    out: list[VCenter] = []
    if settings.vcenter_url:
        out.append(VCenter("", settings.vcenter_url, settings.vcenter_user,
                           settings.vcenter_password, settings.vcenter_verify_tls))
    where = {_place(settings.vcenter_url): "SNAPDEPLOY_VCENTER_URL"} \
        if settings.vcenter_url else {}
    for entry in (e.strip() for e in settings.vcenters.split(";")):
        if not entry:
            continue
        name, equals, url = (p.strip() for p in entry.partition("="))
        # The entry and its URL as messages quote them: the password hidden.
        shown, hidden = (_USERINFO.sub(r"\1***@", text) for text in (entry, url))
        if not equals or "://" in name:
            raise ValueError(f"vcenters: {shown!r} does not start with a name and '=' "
                             "(\"<name>=https://<user>:<password>@<host>/sdk\")")
        if not _NAME.match(name):
            raise ValueError(f"vcenters: name {name!r} in {shown!r} is not letters, digits, "
                             "'_', '.' and '-'")
        if any(v.name == name for v in out):
            raise ValueError(f"vcenters: vCenter {name!r} is named twice")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"vcenters: the URL of {name!r} ({hidden!r}) is not a "
                             f"URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"vcenters: the URL of {name!r} ({hidden!r}) is not "
                             "https://<host>[:<port>]/sdk")
        if parts.fragment:
            raise ValueError(f"vcenters: the URL of {name!r} ({hidden!r}) has a "
                             f"fragment #{parts.fragment}")
        verify_tls = settings.vcenter_verify_tls
        for item in (i for i in parts.query.split("&") if i):
            key, _, value = item.partition("=")
            if key != "verify_tls":
                raise ValueError(f"vcenters: the URL of {name!r} has {key!r} in its query; "
                                 "only verify_tls=true|false is known")
            if value.lower() not in _TRUE:
                raise ValueError(f"vcenters: verify_tls={value!r} of {name!r} is not true "
                                 "or false")
            verify_tls = _TRUE[value.lower()]
        if (parts.username is None) != (parts.password is None):
            raise ValueError(f"vcenters: the URL of {name!r} ({hidden!r}) has a "
                             "user without a password or a password without a user")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if port is None else f"{host}:{port}"
        bare = urlunsplit((parts.scheme, netloc, parts.path or "/sdk", "", ""))
        place = _place(bare)
        if place in where:
            raise ValueError(f"vcenters: {name!r} is the vCenter of {where[place]} "
                             f"({bare}) again")
        where[place] = repr(name)
        out.append(VCenter(
            name, bare,
            settings.vcenter_user if parts.username is None else unquote(parts.username),
            settings.vcenter_password if parts.password is None else unquote(parts.password),
            verify_tls))
    return out


def _place(url: str) -> tuple[str, int | None, str]:
    """Host, port and path of a vCenter URL: what tells two vCenters apart."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return ((parts.hostname or "").lower(), port, parts.path.rstrip("/") or "/sdk")


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``SNAPDEPLOY_CONFIG`` (if set) overlaid with the environment."""
    try:
        settings = msgspec.convert(given(env), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid snapdeploy setting: {exc}") from exc
    try:
        kvm_zones(settings.kvm_zones)
        vcenters(settings)
    except ValueError as exc:
        raise SystemExit(f"invalid snapdeploy setting: {exc}") from exc
    return settings


def given(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings that were given explicitly, by the file or the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_file = env.get("SNAPDEPLOY_CONFIG")
    if config_file:
        values.update(tomllib.loads(Path(config_file).read_text()))
    if env.get("DATABASE_URL"):
        values["database_url"] = env["DATABASE_URL"]
    for name in Settings.__struct_fields__:
        key = f"SNAPDEPLOY_{name.upper()}"
        if key in env:
            values[name] = env[key]
    return values


def as_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process."""
    out = {}
    for name in Settings.__struct_fields__:
        value = getattr(settings, name)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out[f"SNAPDEPLOY_{name.upper()}"] = text
    return out


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and error texts."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
