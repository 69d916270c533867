"""The pure rules of deleteAccount, deleteServiceOffering and deleteDiskOffering."""

from __future__ import annotations

import pytest

from proto.events import (
    AccountCreated,
    AccountDeleted,
    AnyEvent,
    DiskOfferingCreated,
    DiskOfferingDeleted,
    ServiceOfferingCreated,
    ServiceOfferingDeleted,
)
from shared.domain import accounts, offerings
from shared.domain.limits import Usage
from shared.errors import ApiError

ACME = AccountCreated(account_id="a1", name="acme", role="user")


def test_a_deleted_account_is_no_account() -> None:
    assert accounts.account([ACME]) == accounts.Account("a1", "acme", "user")
    assert accounts.account([ACME, AccountDeleted(account_id="a1", name="acme")]) is None


def test_an_account_that_holds_nothing_is_deleted_with_its_users() -> None:
    found = accounts.account([ACME])
    deleted = accounts.check_delete("a1", found, Usage(), "admin", ["u2", "u1"])
    assert deleted == AccountDeleted(account_id="a1", name="acme", user_ids=["u1", "u2"])


@pytest.mark.parametrize(("held", "says"), [
    (Usage(user_vm=2, cpu=2, memory=1024), "still holds 2 VM(s);"),
    (Usage(volume=1, template=3), "still holds 1 volume(s), 3 template(s);"),
])
def test_an_account_holding_something_is_refused_naming_it(held: Usage, says: str) -> None:
    with pytest.raises(ApiError) as caught:
        accounts.check_delete("a1", accounts.account([ACME]), held, "admin", [])
    assert caught.value.code == 536 and says in caught.value.text


def test_missing_builtin_and_own_accounts_are_refused() -> None:
    for account_id, found, caller in (
            ("a1", None, "admin"),
            (accounts.ADMIN_ACCOUNT_ID, accounts.Account(accounts.ADMIN_ACCOUNT_ID, "admin",
                                                         "admin"), "other"),
            ("a1", accounts.account([ACME]), "a1")):
        with pytest.raises(ApiError) as caught:
            accounts.check_delete(account_id, found, Usage(), caller, [])
        assert caught.value.code == 431 and caught.value.text.startswith(
            "invalid parameter id:")


def test_offerings_are_deleted_once() -> None:
    small = ServiceOfferingCreated(offering_id="o1", name="S", display_text="S",
                                   cpu_number=1, cpu_speed=500, memory_mb=512)
    assert offerings.check_delete_service("o1", [small]) == \
        ServiceOfferingDeleted(offering_id="o1")
    gone: list[AnyEvent] = [small, ServiceOfferingDeleted(offering_id="o1")]
    assert offerings.service_offering(gone) is None
    with pytest.raises(ApiError, match="no service offering o1 exists"):
        offerings.check_delete_service("o1", gone)
    disk = DiskOfferingCreated(offering_id="d1", name="D", display_text="D", disk_size_gb=5)
    assert offerings.check_delete_disk("d1", [disk]) == DiskOfferingDeleted(offering_id="d1")
    with pytest.raises(ApiError, match="no disk offering d1 exists"):
        offerings.check_delete_disk("d1", [])
