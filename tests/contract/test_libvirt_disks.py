"""The libvirt driver's disks hold real bytes: what a VM's disk held at a snapshot is what a
template seeded from that snapshot, a linked clone of it and a volume copied from it hold,
on a private libvirt daemon with guests that boot (tests/harness/libvirt.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.drivers.base import CloneProgress, CloneRequest, HypervisorError, NetworkBinding
from shared.drivers.libvirt import LibvirtHypervisor
from tests.harness.libvirt import HOST, NETWORKS, KvmSite, qemu_img, read_marker, write_marker


@pytest.fixture
async def kvm(kvm_site: KvmSite) -> AsyncIterator[tuple[KvmSite, LibvirtHypervisor, str]]:
    prefix = f"bytes-{secrets.token_hex(3)}"
    driver = await LibvirtHypervisor.connect({HOST: kvm_site.uri})
    yield kvm_site, driver, prefix
    await driver.close()
    await asyncio.to_thread(kvm_site.remove_all, prefix)


def _disk_as_of(disk: Path, snapshot: str, out: Path) -> Path:
    done = qemu_img("convert", "-U", "-l", f"snapshot.name={snapshot}", "-O", "qcow2",
                    str(disk), str(out))
    assert done.returncode == 0, done.stderr
    return out


async def test_a_linked_clone_of_a_seeded_snapshot_is_the_disk_as_of_the_snapshot(
    kvm: tuple[KvmSite, LibvirtHypervisor, str],
) -> None:
    site, driver, prefix = kvm
    source = f"{prefix}-source"
    vm_ref = await asyncio.to_thread(site.create_vm, source, start=False)
    disk = site.pool_dir / f"{source}.qcow2"
    write_marker(disk, "marker A")
    await driver.power_on(vm_ref)
    await asyncio.to_thread(site.wait_for_console, source, "snapdeploy-marker vda: marker A")
    snapshot_ref, _ = await driver.create_snapshot(vm_ref, "S1", "with A", True, False)
    info = await driver.snapshot_info(vm_ref, snapshot_ref)
    assert info.memory and info.disks[0].path == f"pool0/{source}.qcow2@S1"

    # The VM goes on: its disk changes after the snapshot.
    await driver.power_off(vm_ref)
    write_marker(disk, "marker B")
    assert read_marker(disk) == "marker B" and read_marker(disk, "S1") == "marker A"

    [inventory] = await driver.inventory()
    pool = inventory.pools[0]
    seeded = await driver.seed_template(vm_ref, snapshot_ref, pool.ref, f"{prefix}-template")
    template_file = site.pool_dir / f"{prefix}-template.qcow2"
    assert seeded.install_path == f"pool0/{template_file.name}"
    networks = [NetworkBinding(n.ref, n.name) for n in inventory.networks if n.name in NETWORKS]
    clone = f"{prefix}-clone"
    progress = CloneProgress()
    await driver.clone(CloneRequest(
        name=clone, template_ref=seeded.template_ref, base_snapshot_ref=seeded.base_snapshot_ref,
        host_ref=HOST, pool_ref=pool.ref, linked=True, cpu_number=1, cpu_mhz=1000,
        memory_mb=256, networks=networks), progress)
    assert progress.root_disk is not None
    assert progress.root_disk.path == f"pool0/{clone}.qcow2"

    # The clone boots from the disk as it was at S1, and is that disk, byte for byte.
    console = await asyncio.to_thread(site.wait_for_console, clone, "snapdeploy-guest: ready")
    assert "snapdeploy-marker vda: marker A" in console
    clone_file = site.pool_dir / f"{clone}.qcow2"
    with tempfile.TemporaryDirectory() as work:
        as_of_s1 = _disk_as_of(disk, "S1", Path(work) / "s1.qcow2")
        same = qemu_img("compare", "-U", str(clone_file), str(as_of_s1))
        assert same.returncode == 0, same.stdout + same.stderr
        assert "identical" in same.stdout
        differs = qemu_img("compare", "-U", str(clone_file), str(disk))
        assert differs.returncode == 1, differs.stdout + differs.stderr

        # Its backing chain: the overlay, then the template, which stands alone.
        chain = json.loads(qemu_img("info", "-U", "--backing-chain", "--output=json",
                                    str(clone_file)).stdout)
        assert [Path(image["filename"]) for image in chain] == [clone_file, template_file]
        assert chain[0]["backing-filename"] == str(template_file)
        assert chain[0]["format"] == chain[1]["format"] == "qcow2"
        assert "backing-filename" not in chain[1]

        # A volume copied from the snapshot's disk is that disk as of the snapshot too.
        volume = f"pool0/{prefix}-volume.qcow2"
        assert await driver.copy_volume(info.disks[0].path, pool.ref, volume)
        copied = qemu_img("compare", "-U", str(site.pool_dir / f"{prefix}-volume.qcow2"),
                          str(as_of_s1))
        assert copied.returncode == 0, copied.stdout + copied.stderr

    # The template backs the clone: it cannot be removed before the clone is.
    assert read_marker(template_file) == "marker A"
    with pytest.raises(HypervisorError, match="backs") as refused:
        await driver.destroy_vm(seeded.template_ref)
    assert refused.value.fault == "FileInUse" and not refused.value.transient
    assert template_file.exists()
    assert progress.vm_ref is not None
    assert await driver.destroy_vm(progress.vm_ref)
    assert await driver.destroy_vm(seeded.template_ref)
    assert not template_file.exists() and not clone_file.exists()


async def test_a_snapshot_without_memory_of_a_running_vm_is_its_disks_at_that_instant(
    kvm: tuple[KvmSite, LibvirtHypervisor, str],
) -> None:
    site, driver, prefix = kvm
    source = f"{prefix}-running"
    vm_ref = await asyncio.to_thread(site.create_vm, source)
    disk = site.pool_dir / f"{source}.qcow2"
    await asyncio.to_thread(site.write_marker_live, source, "marker C")
    snapshot_ref, _ = await driver.create_snapshot(vm_ref, "disks", "", False, False)
    await asyncio.to_thread(site.write_marker_live, source, "marker D")
    info = await driver.snapshot_info(vm_ref, snapshot_ref)
    assert not info.memory and await driver.vm_powered_on(vm_ref)
    assert read_marker(disk, "disks") == "marker C" and read_marker(disk) == "marker D"

    # Without memory, the VM comes back off (as on vSphere), its disk as of the snapshot.
    assert await driver.revert_snapshot(snapshot_ref)
    assert not await driver.vm_powered_on(vm_ref)
    assert read_marker(disk) == "marker C"
    assert await driver.remove_snapshot(snapshot_ref)
    assert "disks" not in qemu_img("snapshot", "-U", "-l", str(disk)).stdout
