"""A vCenter with two datacenters: two zones, and each deploy and volume stays in its own."""

from __future__ import annotations

import pytest
from cs import CloudStack
from pyVmomi import vim

from tests.e2e.helpers import offering, snapshot, vm_named
from tests.harness.vsphere import Vcsim

pytestmark = pytest.mark.stack

VCSIM_ARGS = "-dc 2"


def test_each_datacenter_is_a_zone_and_its_deploys_stay_in_it(
    cloud: CloudStack, vcsim: Vcsim
) -> None:
    zones = {z["name"]: z["id"] for z in cloud.listZones()["zone"]}
    assert set(zones) == {"DC0", "DC1"}
    hosts = cloud.listHosts()["host"]
    assert {h["name"][:3] for h in hosts if h["zoneid"] == zones["DC1"]} == {"DC1"}
    assert {h["name"][:3] for h in hosts if h["zoneid"] == zones["DC0"]} == {"DC0"}
    # Both datacenters have a datastore named LocalDS_0 and a network named VM Network:
    # two pools and two networks each, one per zone.
    pools = cloud.listStoragePools()["storagepool"]
    assert sorted(p["zoneid"] for p in pools if p["name"] == "LocalDS_0") == sorted(zones.values())

    source = vm_named(cloud, "DC1_C0_RP0_VM0")
    assert source["zoneid"] == zones["DC1"]
    snap = snapshot(cloud, source["id"], "in-dc1")
    vm = cloud.deployVirtualMachine(vmsnapshotid=snap, name="dc1-clone",
                                    serviceofferingid=offering(cloud, "Small Instance"),
                                    )["virtualmachine"]
    assert vm["state"] == "Running" and vm["zoneid"] == zones["DC1"]
    host_names = {o._moId: p["name"] for o, p in vcsim.props(vim.HostSystem, ["name"])}
    assert host_names[vcsim.vm(vm["instancename"])["host"]].startswith("DC1_")

    [root] = [v for v in cloud.listVolumes(virtualmachineid=source["id"])["volume"]
              if v["type"] == "ROOT"]
    copy = cloud.createVolume(vmsnapshotid=snap, volumeid=root["id"], name="dc1-copy")["volume"]
    assert copy["state"] == "Ready" and copy["storageid"] == root["storageid"]
