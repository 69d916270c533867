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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
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


SECRET_FIELDS = frozenset({"nats_password", "vcenter_password", "admin_secret_key",
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


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``SNAPDEPLOY_CONFIG`` (if set) overlaid with the environment."""
    try:
        settings = msgspec.convert(given(env), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid snapdeploy setting: {exc}") from exc
    try:
        kvm_zones(settings.kvm_zones)
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
