"""The read API's typed views rendered as CloudStack's response objects: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from services.gateway import views
from shared.domain.job import (
    DEPLOY_VM_CMD,
    REVERT_VM_SNAPSHOT_CMD,
    SYNC_INVENTORY_CMD,
    JobStatus,
)
from shared.projections import read

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
VM = read.Vm(
    id="vm-1", account_id="alice", user_id="u-1", name="web-1", display_name="web-1",
    instance_name="i-alic-vm-1-VM", zone_id="z-1", service_offering_id="o-1",
    template_id=None, vm_snapshot_id="s-1", host_id="h-1", pool_id="p-1", cpu_number=2,
    cpu_speed=1000, memory_mb=2048, state="Running", error_text=None,
    current_snapshot_id=None, imported=False, created=NOW,
    nics=[read.Nic(id="n-1", network_id="net-1", mac="00:50:56:00:00:01"),
          read.Nic(id="n-2", network_id="net-2", mac="00:50:56:00:00:02")])


def job(cmd: str, status: JobStatus) -> read.Job:
    failed = status == JobStatus.FAILED
    return read.Job(id="j-1", account_id="alice", user_id="u-1", cmd=cmd,
                    instance_type="VirtualMachine", instance_id="vm-1", status=status,
                    result_code=530 if failed else 0, error_code=431 if failed else None,
                    error_text="no room" if failed else None, created=NOW,
                    completed=None if status == JobStatus.PENDING else NOW)


def test_a_vm_as_libcloud_reads_it() -> None:
    out = views.vm(VM)
    assert (out["id"], out["state"], out["created"]) == ("vm-1", "Running",
                                                          "2026-11-28T10:00:00+0000")
    assert "templateid" not in out and "errortext" not in out  # None is left out
    assert [(n["networkid"], n["isdefault"]) for n in out["nic"]] == [("net-1", True),
                                                                     ("net-2", False)]


def test_a_succeeded_job_carries_what_it_made_or_success() -> None:
    done = job(DEPLOY_VM_CMD, JobStatus.SUCCEEDED)
    assert views.job_result(done, VM) == {"virtualmachine": views.vm(VM)}
    assert views.job_result(done, None) is None  # its VM is gone
    assert views.job_result(job(SYNC_INVENTORY_CMD, JobStatus.SUCCEEDED), None) == {
        "success": True}
    assert views.job_result(job(DEPLOY_VM_CMD, JobStatus.PENDING), VM) is None


def test_a_failed_job_carries_its_error_and_a_pending_one_no_result() -> None:
    failed = views.job(job(DEPLOY_VM_CMD, JobStatus.FAILED), {"ignored": True})
    assert (failed["jobstatus"], failed["jobresultcode"]) == (2, 530)
    assert failed["jobresult"] == {"errorcode": 431, "errortext": "no room"}
    pending = views.job(job(DEPLOY_VM_CMD, JobStatus.PENDING))
    assert pending["jobstatus"] == 0 and "jobresult" not in pending and "completed" not in pending


def test_each_zones_facts_are_those_of_the_kind_its_import_recorded() -> None:
    def host(kind: str | None) -> read.Host:
        return read.Host(id="h", name="h", zone_id="z", state="Up", cluster="c", cpu_cores=4,
                         cpu_mhz=2000, memory_bytes=2**30, reserved_cpu_mhz=0,
                         reserved_memory_mb=0, pool_ids=["p"], created=NOW, zone_kind=kind)

    def pool(kind: str | None, settings: dict[str, str]) -> read.Pool:
        return read.Pool(id="p", name="pool0", zone_id="z", state="Up", url="file:///p",
                         capacity_bytes=10, free_bytes=4, host_ids=["h"], settings=settings,
                         created=NOW, zone_kind=kind)

    def template(kind: str | None) -> read.Template:
        return read.Template(id="t", name="t", account_id="a", zone_id="z",
                             vm_snapshot_id="s", pool_id="p", install_path="pool0/t.qcow2",
                             created=NOW, zone_kind=kind)

    network = read.Network(id="n", name="guest0", zone_id="z", state="Implemented",
                           ref="uuid-1", binding=None, created=NOW, zone_kind="kvm")
    zone = read.Zone(id="z", name="KVM0", created=NOW, zone_kind="kvm")

    assert views.zone(zone)["hypervisor"] == "KVM"
    assert views.zone(read.Zone(id="z", name="DC0", created=NOW))["hypervisor"] == "VMware"
    assert views.host(host("kvm"))["hypervisor"] == "KVM"
    assert views.host(host(None))["hypervisor"] == "VMware"  # recorded before zones had kinds
    assert views.vm(msgspec.structs.replace(VM, zone_kind="kvm"))["hypervisor"] == "KVM"
    assert views.vm(VM)["hypervisor"] == "VMware"
    kvm_pool = views.pool(pool("kvm", {"kvm.create.full.clone": "true"}))
    assert kvm_pool["type"] == "Filesystem" and kvm_pool["vmwarecreatefullclone"] is True
    assert views.pool(pool("kvm", {"vmware.create.full.clone": "true"}))[
        "vmwarecreatefullclone"] is False
    assert views.pool(pool(None, {}))["type"] == "VMFS"
    assert (views.template(template("kvm"))["hypervisor"],
            views.template(template("kvm"))["format"]) == ("KVM", "QCOW2")
    assert views.template(template(None))["format"] == "OVA"
    assert views.network(network)["broadcasturi"] == "kvm://guest0"


def test_a_vm_shows_names_beside_ids_and_its_nics_addresses() -> None:
    nic = read.Nic(id="nic-1", network_id="n-1", mac="00:50:56:00:00:01",
                   ip_address="10.1.2.3", cidr="10.1.2.0/24", gateway="10.1.2.1")
    shown = views.vm(msgspec.structs.replace(VM, nics=[nic]), {
        "alice": "alice-account", "z-1": "DC0", "o-1": "Small Instance", "h-1": "host-1",
        "n-1": "guest0"})
    assert (shown["account"], shown["accountid"], shown["zonename"],
            shown["serviceofferingname"], shown["hostname"], shown["domain"]) == (
        "alice-account", "alice", "DC0", "Small Instance", "host-1", "ROOT")
    assert shown["ipaddress"] == "10.1.2.3"
    assert shown["nic"][0].items() >= {"ipaddress": "10.1.2.3", "netmask": "255.255.255.0",
                                       "gateway": "10.1.2.1", "networkname": "guest0",
                                       "isdefault": True}.items()


def test_a_revert_answers_with_its_vm() -> None:
    done = job(REVERT_VM_SNAPSHOT_CMD, JobStatus.SUCCEEDED)
    assert views.job_result(done, VM) == {"virtualmachine": views.vm(VM)}
