"""Test-harness access to vcsim: look at what the product did, set up what it must cope with.

Straight pyvmomi against the stack's vCenter, independent of the product's driver, plus
the fault rules our vcsim build serves on /harness/faults.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyVim.connect import SmartConnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


class Vcsim:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.si = SmartConnect(host=parts.hostname, port=parts.port, user=user, pwd=password,
                               sslContext=ssl._create_unverified_context())
        self.content = self.si.RetrieveContent()

    def props(self, kind: Any, paths: list[str],
              obj: Any = None) -> list[tuple[Any, dict[str, Any]]]:
        if obj is None:
            view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [kind],
                                                                True)
            spec = PC.ObjectSpec(obj=view, skip=True, selectSet=[PC.TraversalSpec(
                name="v", path="view", skip=False, type=vim.view.ContainerView)])
        else:
            spec = PC.ObjectSpec(obj=obj, skip=False)
        found = self.content.propertyCollector.RetrieveContents([PC.FilterSpec(
            objectSet=[spec], propSet=[PC.PropertySpec(type=kind, pathSet=paths)])])
        return [(r.obj, {p.name: p.val for p in r.propSet}) for r in found]

    def vm_names(self) -> set[str]:
        return {p["name"] for _, p in self.props(vim.VirtualMachine, ["name"])}

    def count_named(self, name: str) -> int:
        """How many VMs carry ``name`` (vCenter allows the same name in other folders)."""
        return sum(p["name"] == name for _, p in self.props(vim.VirtualMachine, ["name"]))

    def vm(self, name: str) -> dict[str, Any]:
        """What a VM looks like in vCenter: host, datastores, NICs, CPU, memory, power."""
        for obj, p in self.props(vim.VirtualMachine, [
                "name", "runtime.host", "runtime.powerState", "config.hardware.numCPU",
                "config.hardware.memoryMB", "config.hardware.device", "datastore"]):
            if p["name"] != name:
                continue
            devices = p["config.hardware.device"]
            nics = []
            for d in devices:
                if isinstance(d, vim.vm.device.VirtualEthernetCard):
                    backing: Any = d.backing
                    port = getattr(backing, "port", None)
                    nics.append(port.portgroupKey if port is not None else backing.deviceName)
            return {
                "ref": obj._moId, "host": p["runtime.host"]._moId,
                "power": p["runtime.powerState"], "cpu": p["config.hardware.numCPU"],
                "memory": p["config.hardware.memoryMB"],
                "datastores": sorted(d._moId for d in p["datastore"]), "nics": nics,
                "disks": [getattr(d.backing, "fileName", None) for d in devices
                          if isinstance(d, vim.vm.device.VirtualDisk)],
            }
        raise AssertionError(f"no VM named {name} in vcsim")

    def ref_of_host(self, name: str) -> str:
        return str(self.ref(vim.HostSystem, name)._moId)

    def ref_of_vm(self, name: str) -> str:
        return str(self.ref(vim.VirtualMachine, name)._moId)

    def ref(self, kind: Any, name: str) -> Any:
        for obj, p in self.props(kind, ["name"]):
            if p["name"] == name:
                return obj
        raise AssertionError(f"no {kind.__name__} named {name}")

    def wait(self, task: Any) -> Any:
        for _ in range(600):
            state = self.props(vim.Task, ["info.state", "info.error", "info.result"], task)[0][1]
            if state["info.state"] == "success":
                return state.get("info.result")
            if state["info.state"] == "error":
                raise AssertionError(f"vcsim task failed: {state.get('info.error')}")
            time.sleep(0.02)
        raise AssertionError("vcsim task did not finish")

    def set_cpus(self, vm_name: str, cpus: int) -> None:
        vm = self.ref(vim.VirtualMachine, vm_name)
        self.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(numCPUs=cpus)))

    def add_local_datastore(self, host_name: str, name: str, path: Path) -> str:
        """A datastore only ``host_name`` mounts."""
        path.mkdir(parents=True, exist_ok=True)
        host = self.ref(vim.HostSystem, host_name)
        system = self.props(vim.HostSystem, ["configManager.datastoreSystem"], host)[0][1][
            "configManager.datastoreSystem"]
        return str(system.CreateLocalDatastore(name=name, path=str(path))._moId)

    def create_vm(self, name: str, host_name: str, root_ds: str, data_ds: list[str],
                  networks: list[str]) -> str:
        """A VM with its root disk on ``root_ds``, one data disk on each of ``data_ds`` and
        one NIC on each standard network in ``networks``."""
        host = self.ref(vim.HostSystem, host_name)
        compute = self.props(vim.HostSystem, ["parent"], host)[0][1]["parent"]
        pool = self.props(vim.ComputeResource, ["resourcePool"], compute)[0][1]["resourcePool"]
        dc_obj, dc = self.props(vim.Datacenter, ["vmFolder"])[0]
        for ds in data_ds:
            self.content.fileManager.MakeDirectory(name=f"[{ds}] {name}", datacenter=dc_obj,
                                                   createParentDirectories=True)
        controller = vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0,
                                                             sharedBus="noSharing")
        changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=controller)]
        for unit, ds in enumerate([root_ds, *data_ds]):
            disk = vim.vm.device.VirtualDisk(
                key=-(unit + 1), controllerKey=1000, unitNumber=unit, capacityInKB=1024 * 1024,
                backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                    fileName=f"[{ds}] {name}/disk{unit}.vmdk", diskMode="persistent",
                    thinProvisioned=True))
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add",
                                                           fileOperation="create", device=disk))
        for i, network in enumerate(networks):
            nic = vim.vm.device.VirtualVmxnet3(key=-(100 + i), backing=(
                vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                    deviceName=network, network=self.ref(vim.Network, network))))
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=nic))
        spec = vim.vm.ConfigSpec(name=name, numCPUs=1, memoryMB=256, guestId="otherGuest64",
                                 files=vim.vm.FileInfo(vmPathName=f"[{root_ds}]"),
                                 deviceChange=changes)
        vm = self.wait(dc["vmFolder"].CreateVM_Task(config=spec, pool=pool, host=host))
        self.wait(vm.PowerOnVM_Task())
        return str(vm._moId)

    def take_snapshot(self, vm_name: str, name: str) -> None:
        """A snapshot taken in vCenter, behind snapdeploy's back."""
        self.wait(self.ref(vim.VirtualMachine, vm_name).CreateSnapshot_Task(
            name=name, description="", memory=False, quiesce=False))

    def remove_snapshot(self, vm_name: str, name: str) -> None:
        tree = self.props(vim.VirtualMachine, ["snapshot"], self.ref(vim.VirtualMachine,
                                                                      vm_name))[0][1]["snapshot"]
        nodes = list(tree.rootSnapshotList)
        while nodes:
            node = nodes.pop()
            if node.name == name:
                self.wait(node.snapshot.RemoveSnapshot_Task(removeChildren=False))
                return
            nodes.extend(node.childSnapshotList)
        raise AssertionError(f"{vm_name} has no snapshot {name}")

    def add_portgroup(self, name: str, switch: str = "DVS0") -> None:
        dvs = self.ref(vim.DistributedVirtualSwitch, switch)
        self.wait(dvs.AddDVPortgroup_Task([vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
            name=name, type="earlyBinding", numPorts=8)]))

    def destroy_portgroup(self, name: str) -> None:
        self.wait(self.ref(vim.dvs.DistributedVirtualPortgroup, name).Destroy_Task())

    def destroy(self, vm_name: str) -> None:
        vm = self.ref(vim.VirtualMachine, vm_name)
        self.wait(vm.PowerOffVM_Task())
        self.wait(vm.Destroy_Task())

    # ---- fault rules of our vcsim build ----------------------------------------------

    def _harness(self, what: str, method: str, body: dict[str, Any] | None = None) -> None:
        parts = urlsplit(self.url)
        request = urllib.request.Request(
            f"{parts.scheme}://{parts.netloc}/harness/{what}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(),
                                    timeout=10) as response:
            assert response.status == 204

    def fail(self, method: str, message: str, *, max_count: int = 1, delay_ms: int = 0,
             probability: float = 1.0) -> None:
        """Make the next ``max_count`` calls of ``method`` (0: all) fail with ``message``,
        after hanging ``delay_ms``; with ``probability`` < 1, only that share of them."""
        self._harness("faults", "POST", {"method": method, "message": message,
                                         "max_count": max_count, "delay_ms": delay_ms,
                                         "probability": probability})

    def clear_faults(self) -> None:
        self._harness("faults", "DELETE")

    def delay(self, method: str, delay_ms: int, for_ms: int) -> None:
        """Calls of ``method`` made in the next ``for_ms`` hang ``delay_ms``, then succeed."""
        self._harness("delays", "POST", {"method": method, "delay_ms": delay_ms,
                                         "for_ms": for_ms})
