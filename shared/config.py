"""Settings of every snapdeploy process, from environment variables and an optional file.

Each field ``name`` is read from ``SNAPDEPLOY_<NAME>`` (``DATABASE_URL`` is also accepted
for ``database_url``). ``SNAPDEPLOY_CONFIG`` may name a TOML file with the same field
names; the environment wins over the file.
"""

from __future__ import annotations

import os
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
    kvm_zones: str = ""
    gateway_listen: str = "127.0.0.1:8080"
    health_listen: str = "127.0.0.1:0"
    admin_api_key: str = ""
    admin_secret_key: str = ""
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
                           "key_encryption_key"})


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``SNAPDEPLOY_CONFIG`` (if set) overlaid with the environment."""
    try:
        return msgspec.convert(given(env), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid snapdeploy setting: {exc}") from exc


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
