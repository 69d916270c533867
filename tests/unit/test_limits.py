"""Per-account resource limits: pure rules, no I/O."""

from __future__ import annotations

import pytest

from shared.domain import limits
from shared.domain.limits import LimitExceeded, Usage, check


def test_defaults_are_cloudstacks_and_an_accounts_own_setting_wins() -> None:
    assert limits.limit_of(limits.INSTANCE, {}) == 20
    assert limits.limit_of(limits.MEMORY, {}) == 40960
    assert limits.limit_of(limits.CPU, {"cpu": 4}) == 4


def test_a_request_within_every_limit_passes() -> None:
    check("bob", Usage(user_vm=19, cpu=30), Usage(user_vm=1, cpu=10), {})
    check("bob", Usage(user_vm=500), Usage(user_vm=1), {"user_vm": -1})  # unlimited


def test_the_first_exceeded_resource_is_named_with_the_figures() -> None:
    with pytest.raises(LimitExceeded) as caught:
        check("bob", Usage(user_vm=1, memory=1024), Usage(user_vm=1, memory=2048),
              {"memory": 2048})
    assert caught.value.code == 535
    text = caught.value.text
    assert "'memory'" in text and "name=bob" in text
    assert "1024 MB allocated, 2048 MB requested, limit 2048 MB" in text
    assert "resourcetype=9" in text


def test_what_a_request_does_not_ask_for_is_not_checked() -> None:
    """An account already over a lowered limit may still take what is not limited."""
    check("bob", Usage(user_vm=5), Usage(volume=1), {"user_vm": 2})
    with pytest.raises(LimitExceeded):
        check("bob", Usage(user_vm=5), Usage(user_vm=1), {"user_vm": 2})


def test_resource_types_by_number_or_name() -> None:
    assert limits.resource("0") is limits.INSTANCE
    assert limits.resource("cpu") is limits.CPU
    assert limits.resource(" Memory ") is limits.MEMORY
    assert limits.resource("7") is None and limits.resource("vpc") is None
    assert Usage(cpu=1) + Usage(cpu=2, volume=1) == Usage(cpu=3, volume=1)
