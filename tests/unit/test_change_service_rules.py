"""changeServiceForVirtualMachine's pure rule, and a VM as of one of its snapshots (what a
revert brings back)."""

from __future__ import annotations

import pytest

from proto.events import (
    AnyEvent,
    VmDeployRequested,
    VmReconfigured,
    VmServiceChanged,
    VmSnapshotRequested,
    VmStarted,
    VmStopped,
)
from shared.domain import vm as _vm
from shared.domain.deploy import HostView, OfferingView
from shared.errors import ApiError

DEPLOY = VmDeployRequested(
    vm_id="v1", job_id="j", account_id="a", user_id="u", name="web", display_name="web",
    instance_name="i-web", zone_id="z", service_offering_id="small", cpu_number=1,
    cpu_speed=500, memory_mb=512, pool_id="p", network_ids=[])
LARGE = OfferingView("large", "Large", 2, 1000, 2048)
HOST = HostView(id="h", name="host-1", zone_id="z", pool_ids=["p"], cpu_mhz_total=3000,
                memory_mb_total=4096, reserved_cpu_mhz=500, reserved_memory_mb=512)


def stopped(*more: AnyEvent) -> _vm.Vm:
    return _vm.fold("v1", [DEPLOY, VmStarted(vm_id="v1", host_id="h", hypervisor_ref="r"),
                           VmStopped(vm_id="v1"), *more])


def test_a_stopped_vm_takes_another_offering_within_its_hosts_room() -> None:
    changed = _vm.check_change_service(stopped(), "large", LARGE, HOST)
    assert changed == VmServiceChanged(vm_id="v1", service_offering_id="large", cpu_number=2,
                                       cpu_speed=1000, memory_mb=2048)
    after = _vm.evolve(stopped(), changed)
    assert (after.cpu_number, after.memory_mb, after.applied) == (2, 2048, False)
    assert _vm.evolve(after, VmReconfigured(vm_id="v1", cpu_number=2, memory_mb=2048)).applied


def test_refusals_name_the_state_the_offering_or_the_room() -> None:
    running = _vm.fold("v1", [DEPLOY, VmStarted(vm_id="v1", host_id="h", hypervisor_ref="r")])
    with pytest.raises(ApiError) as state:
        _vm.check_change_service(running, "large", LARGE, HOST)
    assert state.value.code == 536 and "Running" in state.value.text
    with pytest.raises(ApiError, match="no service offering nope exists"):
        _vm.check_change_service(stopped(), "nope", None, HOST)
    same = OfferingView("small", "Small", 1, 500, 512)
    with pytest.raises(ApiError, match="has compute offering Small already"):
        _vm.check_change_service(stopped(), "small", same, HOST)
    full = HostView(id="h", name="host-1", zone_id="z", pool_ids=["p"], cpu_mhz_total=1500,
                    memory_mb_total=4096, reserved_cpu_mhz=500, reserved_memory_mb=512)
    with pytest.raises(ApiError) as room:
        _vm.check_change_service(stopped(), "large", LARGE, full)
    assert room.value.text == ("invalid parameter serviceofferingid: host host-1 has 1500 MHz "
                               "and 4096 MB for virtual machine v1; offering Large needs "
                               "2000 MHz and 2048 MB")


def test_a_vm_as_of_its_snapshot_has_the_offering_it_had_then() -> None:
    taken = VmSnapshotRequested(job_id="j2", snapshot_id="s1", vm_id="v1", name="s",
                                description="", memory=False, quiesce=False)
    history: list[AnyEvent] = [DEPLOY, taken, VmServiceChanged(
        vm_id="v1", service_offering_id="large", cpu_number=2, cpu_speed=1000,
        memory_mb=2048)]
    then = _vm.as_of_snapshot("v1", history, "s1")
    assert then is not None and (then.service_offering_id, then.cpu_number) == ("small", 1)
    assert _vm.as_of_snapshot("v1", history, "imported-snapshot") is None
