"""Secret keys sealed at rest: AES-GCM with the api key as associated data; the launcher's
key encryption key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared import config
from shared.apikeys import SealError, SecretBox, box
from shared.stack.launcher import _secrets

KEK = "k" * 32
OTHER_KEK = "o" * 32
SECRET = "Xy3-secret_key~value"


def test_a_sealed_secret_opens_for_its_api_key() -> None:
    secrets = SecretBox(KEK)
    sealed = secrets.seal("api-1", SECRET)
    assert secrets.open("api-1", sealed) == SECRET
    assert SecretBox(KEK).open("api-1", sealed) == SECRET  # same key, another process


def test_sealed_bytes_hide_the_secret_and_never_repeat() -> None:
    secrets = SecretBox(KEK)
    first, second = secrets.seal("api-1", SECRET), secrets.seal("api-1", SECRET)
    assert first != second  # a fresh nonce each time
    assert SECRET.encode() not in first and SECRET.encode() not in second


def test_another_rows_api_key_does_not_open_it() -> None:
    sealed = SecretBox(KEK).seal("api-1", SECRET)
    with pytest.raises(SealError):
        SecretBox(KEK).open("api-2", sealed)


def test_another_key_encryption_key_does_not_open_it() -> None:
    sealed = SecretBox(KEK).seal("api-1", SECRET)
    with pytest.raises(SealError):
        SecretBox(OTHER_KEK).open("api-1", sealed)


@pytest.mark.parametrize("damage", [
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # the tag
    lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # the ciphertext
    lambda b: b"\x02" + b[1:],  # an unknown layout
    lambda b: b[:10],  # cut short
    lambda b: b"",
])
def test_altered_bytes_do_not_open(damage) -> None:  # type: ignore[no-untyped-def]
    sealed = SecretBox(KEK).seal("api-1", SECRET)
    with pytest.raises(SealError):
        SecretBox(KEK).open("api-1", damage(sealed))


@pytest.mark.parametrize("kek", ["", "short", "x" * 31])
def test_a_short_key_encryption_key_is_refused_by_name(kek: str) -> None:
    with pytest.raises(ValueError, match="SNAPDEPLOY_KEY_ENCRYPTION_KEY"):
        box(config.Settings(key_encryption_key=kek))


def test_the_key_encryption_key_is_a_secret_setting() -> None:
    assert "key_encryption_key" in config.SECRET_FIELDS
    settings = config.load({"SNAPDEPLOY_KEY_ENCRYPTION_KEY": KEK,
                            "SNAPDEPLOY_SIGNATURE_MAX_EXPIRY_S": "600"})
    assert settings.key_encryption_key == KEK and settings.signature_max_expiry_s == 600
    assert config.load(config.as_env(settings)) == settings
    assert config.Settings().signature_max_expiry_s == 3600


def test_up_generates_the_key_encryption_key_on_first_start(tmp_path: Path) -> None:
    created = _secrets(tmp_path)
    assert len(created["key_encryption_key"]) >= 32
    assert SecretBox(created["key_encryption_key"])  # usable as it is
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    assert _secrets(tmp_path) == created  # and reuses it


def test_an_older_state_dir_gets_the_secrets_it_lacks_and_keeps_the_rest(
        tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    older = {"nats_user": "snapdeploy", "nats_password": "n", "postgres_password": "p",
             "vcenter_user": "v", "vcenter_password": "vp", "admin_api_key": "a",
             "admin_secret_key": "s"}
    path.touch(mode=0o600)
    path.write_text(json.dumps(older))
    found = _secrets(tmp_path)
    added = ("key_encryption_key", "postgres_service_password", "admin_password")
    assert {k: v for k, v in found.items() if k not in added} == older
    assert len(found["key_encryption_key"]) >= 32 and found["postgres_service_password"]
    assert json.loads(path.read_text()) == found
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
