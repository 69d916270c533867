"""Which state a VM or a volume must be in for a user's command on it (pure rules)."""

from __future__ import annotations

import pytest

from proto.events import VolumeAllocated, VolumeDeleted, VolumeDeleteRequested, VolumeFailed
from shared.domain import vm as vms
from shared.domain import volume as volumes
from shared.domain.vm import VmState
from shared.errors import ApiError


def code(call: object) -> int | None:
    """The ApiError code ``call()`` raises, None if it passes."""
    assert callable(call)
    try:
        call()
    except ApiError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(("state", "stop", "start", "reboot", "snapshot", "recover"), [
    (VmState.STARTING, 536, 536, 536, 536, 431),
    (VmState.RUNNING, None, 536, None, None, 431),
    (VmState.STOPPED, 536, None, 536, None, 431),
    (VmState.DESTROYED, 536, 536, 536, 536, None),
    (VmState.ERROR, 536, 536, 536, 536, 431),
])
def test_vm_commands_by_state(state: VmState, stop: int | None, start: int | None,
                              reboot: int | None, snapshot: int | None,
                              recover: int | None) -> None:
    vm = vms.Vm("v1", state=state)
    assert [code(lambda a=a: vms.check_power(vm, a)) for a in ("stop", "start", "reboot")] == [
        stop, start, reboot]
    assert code(lambda: vms.check_snapshot(vm)) == snapshot
    assert code(lambda: vms.check_recover(vm)) == recover


def test_destroy_waits_for_a_deploy_and_asks_for_expunge_when_destroyed() -> None:
    assert code(lambda: vms.check_destroy(vms.Vm("v", state=VmState.STARTING), True)) == 536
    assert code(lambda: vms.check_destroy(vms.Vm("v", state=VmState.DESTROYED), False)) == 431
    assert code(lambda: vms.check_destroy(vms.Vm("v", state=VmState.DESTROYED), True)) is None
    assert code(lambda: vms.check_destroy(vms.Vm("v", state=VmState.ERROR), False)) is None
    with pytest.raises(ApiError, match="it can be stopped when Running"):
        vms.check_power(vms.Vm("v", state=VmState.STOPPED), "stop")


def test_volume_commands_by_state() -> None:
    ready = volumes.Volume("d", state=volumes.READY, known=True, size_bytes=2 * volumes.GB)
    attached = volumes.Volume("d", state=volumes.READY, known=True, vm_id="v")
    root = volumes.Volume("r", state=volumes.READY, known=True, vm_id="v",
                          volume_type=volumes.ROOT)
    deleting = volumes.Volume("d", state=volumes.DESTROY, known=True)
    assert [code(lambda v=v: volumes.check_delete(v)) for v in (
        ready, attached, root, deleting)] == [None, 431, 431, 431]
    assert [code(lambda v=v: volumes.check_attach(v)) for v in (
        ready, attached, deleting)] == [None, 431, 431]
    assert volumes.check_detach(attached) == "v"
    assert [code(lambda v=v: volumes.check_detach(v)) for v in (ready, root)] == [431, 431]
    assert code(lambda: volumes.check_resize(ready, 2)) == 431
    assert code(lambda: volumes.check_resize(ready, 3)) is None
    assert code(lambda: volumes.check_vm_without_snapshots("v", 1, "attachVolume")) == 536
    assert code(lambda: volumes.check_vm_without_snapshots("v", 0, "attachVolume")) is None


def test_a_volume_state_follows_its_stream() -> None:
    allocated = VolumeAllocated(volume_id="d", job_id="j", account_id="a", user_id="u",
                                name="d", zone_id="z", disk_offering_id="o", size_bytes=1)
    assert volumes.fold("d", [allocated]).state == volumes.ALLOCATED
    assert volumes.fold("d", [allocated, VolumeFailed(volume_id="d", reason="r")]).state == \
        volumes.ERROR
    gone = volumes.fold("d", [allocated, VolumeDeleteRequested(volume_id="d"),
                              VolumeDeleted(volume_id="d")])
    assert (gone.state, gone.live) == (volumes.EXPUNGED, False)
