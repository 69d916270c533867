# Libcloud's driver methods carry no annotations.
# mypy: disable-error-code="no-untyped-call"
"""Apache Libcloud's CloudStack driver, unchanged, against a stack from `snapdeploy up`: it
lists what the cloud is made of, makes a VM from a seeded template (left Stopped as asked),
starts, reboots and destroys it, and makes, attaches, detaches and destroys a volume."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from cs import CloudStack
from libcloud.compute.drivers.cloudstack import CloudStackNodeDriver
from libcloud.compute.types import NodeState, StorageVolumeState

from tests.e2e.helpers import snapshot, vm_named

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def driver(stack: dict[str, Any]) -> CloudStackNodeDriver:
    url = urllib.parse.urlsplit(stack["api_url"])
    return CloudStackNodeDriver(
        stack["admin_api_key"], stack["admin_secret_key"], secure=False, host=url.hostname,
        port=url.port, path=url.path)


@pytest.fixture(scope="module")
def template_id(cloud: CloudStack) -> str:
    """A template seeded from a snapshot of one of vCenter's VMs."""
    source = vm_named(cloud, "DC0_H0_VM0")
    snap = snapshot(cloud, source["id"], "libcloud-base")
    prepared = cloud.prepareTemplate(vmsnapshotid=snap)
    return str(prepared["template"][0]["id"])


def gone_by(done: Callable[[], bool], within: float = 30) -> None:
    """Wait until ``done`` (a deleted volume's disk, an expunged VM, go shortly after)."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "still listed"
        time.sleep(0.5)


def node_state(driver: CloudStackNodeDriver, node_id: str) -> Any:
    return driver.ex_get_node(node_id).state


def test_libcloud_lists_the_cloud(driver: CloudStackNodeDriver, template_id: str) -> None:
    locations = driver.list_locations()
    assert [z.name for z in locations] == ["DC0"]
    sizes = {s.name: s for s in driver.list_sizes()}
    assert sizes["Small Instance"].ram == 512 and sizes["Small Instance"].extra["cpu"] == 1
    images = driver.list_images(locations[0])
    image = next(i for i in images if i.id == template_id)
    assert image.extra["os"] and image.extra["hypervisor"] == "VMware"
    networks = driver.ex_list_networks()
    assert networks and all(n.networkofferingid and n.zoneid == locations[0].id
                            for n in networks)
    offerings = driver.ex_list_disk_offerings()
    assert {o.name: o.size for o in offerings}["Small"] == 5
    assert not any(o.customizable for o in offerings)
    nodes = driver.list_nodes()
    assert any(n.name == "DC0_H0_VM0" for n in nodes)


def test_libcloud_runs_a_node_and_its_volume(driver: CloudStackNodeDriver,
                                            template_id: str) -> None:
    size = next(s for s in driver.list_sizes()
                if s.name == "Small Instance")
    image = next(i for i in driver.list_images()
                 if i.id == template_id)
    node = driver.create_node(name="libcloud-1", size=size, image=image, ex_start_vm=False)
    assert node.state == NodeState.STOPPED, node.extra
    assert node.private_ips and node.private_ips[0].startswith("10."), node.private_ips
    assert node_state(driver, node.id) == NodeState.STOPPED

    assert driver.ex_start(node) == "Running"
    [(running, addresses)] = driver.wait_until_running(
        [node], wait_period=1, timeout=60, ssh_interface="private_ips")
    assert running.id == node.id and addresses == node.private_ips
    assert running.extra["size_name"] == "Small Instance"
    assert running.extra["image_name"] == image.name and running.extra["zone_name"] == "DC0"

    assert driver.reboot_node(running) is True
    assert node_state(driver, node.id) == NodeState.RUNNING

    volume = driver.create_volume(5, "libcloud-data")
    assert volume.state == StorageVolumeState.AVAILABLE
    assert driver.attach_volume(running, volume) is True
    attached = driver.list_volumes(running)
    assert {v.id for v in attached} >= {volume.id}
    assert next(v for v in attached if v.id == volume.id).state == StorageVolumeState.INUSE
    assert driver.detach_volume(volume) is True
    assert driver.destroy_volume(volume) is True
    gone_by(lambda: volume.id not in {v.id for v in driver.list_volumes()})

    assert driver.destroy_node(running, ex_expunge=True) is True
    gone_by(lambda: all(n.id != node.id for n in driver.list_nodes()))
