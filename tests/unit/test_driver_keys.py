"""Disk and NIC keys and network bindings are the driver's opaque strings; events recorded
when they were vSphere's numbers and switch fields still load, and keep their ids."""

from __future__ import annotations

import msgspec
import pytest
from pyVmomi import vim

from proto.events import (
    AnyEvent,
    NetworkImported,
    Nic,
    VmImported,
    VolumeAttached,
    VolumeCreated,
    dvs_binding,
    legacy_key,
)
from proto.streams import stable_id
from shared.domain import network, volume
from shared.domain.inventory import disks_of, nics_of
from shared.domain.vm import nic_id, volume_id
from shared.drivers.base import DiskInfo, HypervisorError, NetworkBinding, NetworkInfo, NicInfo
from shared.drivers.vmware import dvs_portgroup, network_uri, nic_spec
from shared.projections.read._reader import _binding

decode = msgspec.json.Decoder(AnyEvent).decode
SWITCH = "50 2e 65 e4 5b 7b 1a 6f-b5 9d 3c 43 2a 16 0c 63"

# As the store holds them from before keys were strings.
OLD_IMPORT = (b'{"type":"VmImported","vm_id":"v1","zone_id":"z","account_id":"a","name":"web",'
              b'"ref":"vm-7","host_id":"h","cpu_number":1,"memory_mb":512,"powered_on":true,'
              b'"disks":[{"volume_id":"VOL","device_key":2000,"path":"[ds] web/web.vmdk",'
              b'"pool_id":"p","size_bytes":1024,"root":true}],'
              b'"nics":[{"nic_id":"NIC","network_id":"n","mac":"aa","device_key":4000}]}')
OLD_NETWORK = (b'{"type":"NetworkImported","network_id":"n","zone_id":"z","name":"DVPG0",'
               b'"ref":"dvportgroup-12","switch_uuid":"' + SWITCH.encode() +
               b'","portgroup_key":"dvportgroup-12"}')


def test_vsphere_keys_give_the_ids_they_gave_as_numbers() -> None:
    assert volume_id("v1", "2000") == stable_id("volume", "v1", str(2000))
    assert nic_id("v1", "4000") == stable_id("nic", "v1", str(4000))
    [disk] = disks_of("v1", [DiskInfo("2000", "[ds] web/web.vmdk", "datastore-1", 1024)])
    [nic] = nics_of("v1", [NicInfo("4000", "network-6", "aa")])
    assert (disk.volume_id, disk.key, disk.device_key) == (volume_id("v1", "2000"), "2000", 2000)
    assert (nic.nic_id, nic.key, nic.device_key) == (nic_id("v1", "4000"), "4000", 4000)


def test_keys_that_are_not_numbers_leave_the_old_field_empty() -> None:
    assert legacy_key("vda") is None and legacy_key("nic0") is None and legacy_key("") is None
    assert legacy_key("2001") == 2001
    [disk] = disks_of("v1", [DiskInfo("vda", "pool/web.qcow2", "pool-1", 1024)])
    assert (disk.key, disk.device_key, disk.disk_key) == ("vda", None, "vda")
    assert disk.volume_id == stable_id("volume", "v1", "vda")


def test_events_recorded_with_numbers_load_and_read_their_keys() -> None:
    event = decode(OLD_IMPORT)
    assert isinstance(event, VmImported)
    assert event.disks[0].disk_key == "2000" and event.nics[0].nic_key == "4000"
    assert volume.imported("VOL", event).name == "ROOT-web-2000"  # as it was named
    attached = decode(b'{"type":"VolumeAttached","volume_id":"d","vm_id":"v","device_key":2001,'
                      b'"task_id":"task-1"}')
    assert isinstance(attached, VolumeAttached) and attached.disk_key == "2001"
    created = decode(b'{"type":"VolumeCreated","volume_id":"d","account_id":"a","name":"x",'
                     b'"volume_type":"DATADISK","pool_id":"p","size_bytes":1,"path":"[ds] x",'
                     b'"device_key":2001}')
    assert isinstance(created, VolumeCreated) and created.disk_key == "2001"
    assert VolumeCreated(volume_id="d", account_id="a", name="x", volume_type="ROOT",
                         pool_id="p", size_bytes=1, path="x").disk_key is None
    assert Nic(nic_id="n", network_id="w", mac="m", key="nic0").nic_key == "nic0"


def test_a_network_recorded_with_switch_fields_binds_as_the_driver_now_reports_it() -> None:
    event = decode(OLD_NETWORK)
    assert isinstance(event, NetworkImported)
    assert event.network_binding() == dvs_binding(SWITCH, "dvportgroup-12")
    binding = network.Network("n", imported=event).binding
    assert binding == NetworkBinding("dvportgroup-12", "DVPG0", dvs_binding(SWITCH,
                                                                            "dvportgroup-12"))
    card = nic_spec(binding, -1).device
    assert isinstance(card.backing,
                      vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
    assert (card.backing.port.switchUuid, card.backing.port.portgroupKey) == (
        SWITCH, "dvportgroup-12")
    standard = NetworkImported(network_id="s", zone_id="z", name="VM Network", ref="network-6")
    assert standard.network_binding() is None
    assert NetworkImported(network_id="k", zone_id="z", name="default", ref="uuid",
                           binding="anything").network_binding() == "anything"


def test_vsphere_reads_its_own_bindings_and_refuses_others() -> None:
    assert dvs_portgroup(dvs_binding(SWITCH, "dvportgroup-12")) == (SWITCH, "dvportgroup-12")
    assert dvs_portgroup(None) is None and dvs_portgroup("elsewhere") is None
    with pytest.raises(HypervisorError):
        dvs_portgroup("dvs:dvportgroup-12")
    assert network_uri(NetworkInfo("dvportgroup-12", "DVPG0",
                                   dvs_binding(SWITCH, "dvportgroup-12"))) \
        == "vmware://dvportgroup-12"
    assert network_uri(NetworkInfo("network-6", "VM Network")) == "vmware://network-6"


def test_a_network_row_projected_before_bindings_reads_its_switch_fields() -> None:
    assert _binding({"switch_uuid": SWITCH, "portgroup_key": "dvportgroup-12"}) \
        == dvs_binding(SWITCH, "dvportgroup-12")
    assert _binding({"switch_uuid": None, "portgroup_key": None}) is None
    assert _binding({"binding": None, "switch_uuid": SWITCH, "portgroup_key": "pg"}) is None
    assert _binding({"binding": "b"}) == "b"
