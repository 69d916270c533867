"""Password hashes (shared.passwords): salted, checked in constant time, never the password."""

from __future__ import annotations

from shared import passwords


def test_a_hash_is_salted_and_checks_only_its_password() -> None:
    first, second = passwords.hash_password("s3cret"), passwords.hash_password("s3cret")
    assert first != second  # a new salt each time
    assert "s3cret" not in first and first.startswith("scrypt$")
    assert passwords.verify_password("s3cret", first)
    assert passwords.verify_password("s3cret", second)
    assert not passwords.verify_password("s3cret!", first)
    assert not passwords.verify_password("", first)


def test_no_hash_or_a_malformed_one_checks_nothing() -> None:
    assert not passwords.verify_password("anything", None)
    assert not passwords.verify_password("anything", "")
    assert not passwords.verify_password("anything", "plain-text-password")
    assert not passwords.verify_password("anything", "md5$abc$def")
    assert not passwords.verify_password("x" * (passwords.MAX_PASSWORD_LENGTH + 1),
                                         passwords.hash_password("x"))
