"""The audit trail's pure rules: every stored event type is either shown as one of
CloudStack's event types or deliberately not; filters by type, level and keyword; who an
actor names; what a description says."""

from __future__ import annotations

from proto.events import EVENT_TYPES
from shared.domain import audit


def test_every_stored_event_type_is_shown_or_deliberately_not() -> None:
    assert set(audit.SHOWN) | audit.NOT_SHOWN == set(EVENT_TYPES)
    assert not set(audit.SHOWN) & audit.NOT_SHOWN


def test_the_types_cloudstack_names_are_shown() -> None:
    shown = {kind: cs for kind, (cs, _) in audit.SHOWN.items()}
    assert shown["VmStopped"] == "VM.STOP"
    assert shown["VmRebooted"] == "VM.REBOOT"
    assert shown["VolumeAttached"] == "VOLUME.ATTACH"
    assert shown["VolumeDetached"] == "VOLUME.DETACH"
    assert shown["VmRecovered"] == "VM.RECOVER"
    assert shown["VolumeDeleted"] == "VOLUME.DELETE"
    assert shown["AccountCreated"] == "ACCOUNT.CREATE"
    assert shown["UserCreated"] == "USER.CREATE"
    assert shown["DiskOfferingCreated"] == "DISK.OFFERING.CREATE"
    assert shown["VmServiceChanged"] == "VM.UPGRADE"


def test_type_and_level_narrow_the_stored_types() -> None:
    assert audit.stored_types("vm.create") == ["VmCreated", "VmDeployFailed",
                                               "VmDeployRequested"]
    assert audit.stored_types("VM.CREATE", "error") == ["VmDeployFailed"]
    assert audit.stored_types("NO.SUCH.TYPE") == []
    assert set(audit.stored_types()) == set(audit.SHOWN)
    assert all(audit.SHOWN[t][1] == audit.ERROR for t in audit.stored_types(level="ERROR"))


def test_keyword_matches_cloudstack_types() -> None:
    assert "VolumeAttached" in audit.types_matching("attach")
    assert "VmStopped" in audit.types_matching("vm.st")
    assert audit.types_matching("nothing-like-it") == []


def test_username_is_the_user_an_actor_names() -> None:
    assert audit.username("acme/alice") == "alice"
    assert audit.username("cloner") == "system"
    assert audit.username(None) == "system"


def test_description_names_the_subject_the_reason_and_the_operations() -> None:
    text = audit.describe("VmDeployFailed", {"vm_id": "v1", "reason": "no host",
                                             "task_ids": ["t1", "t2"]})
    assert text == "VmDeployFailed vm_id v1: no host (hypervisor operations t1, t2)"
    assert audit.describe("AccountCreated", {"account_id": "a1", "name": "acme"}) == \
        "AccountCreated account_id a1"
