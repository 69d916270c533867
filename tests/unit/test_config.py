"""Settings from the environment and a file, and secrets kept out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import config


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    file = tmp_path / "snapdeploy.toml"
    file.write_text('nats_url = "nats://file:4222"\nvcenter_user = "from-file"\n')
    settings = config.load({
        "SNAPDEPLOY_CONFIG": str(file),
        "SNAPDEPLOY_NATS_URL": "nats://env:4222",
        "DATABASE_URL": "postgresql://u@db/x",
        "SNAPDEPLOY_VCENTER_VERIFY_TLS": "false",
    })
    assert settings.nats_url == "nats://env:4222"
    assert settings.vcenter_user == "from-file"
    assert settings.database_url == "postgresql://u@db/x"
    assert settings.vcenter_verify_tls is False
    assert settings.gateway_listen == "127.0.0.1:8080"


def test_as_env_round_trips() -> None:
    settings = config.Settings(nats_url="nats://x:1", vcenter_verify_tls=False)
    assert config.load(config.as_env(settings)) == settings


def test_invalid_setting_names_the_field() -> None:
    with pytest.raises(SystemExit, match="vcenter_verify_tls"):
        config.load({"SNAPDEPLOY_VCENTER_VERIFY_TLS": "maybe"})


def test_redact_url_hides_only_the_password() -> None:
    assert config.redact_url("postgresql://me:pw@h:5/db") == "postgresql://me:***@h:5/db"
    assert config.redact_url("nats://h:4222") == "nats://h:4222"
