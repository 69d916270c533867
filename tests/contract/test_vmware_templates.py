"""The vSphere driver reads the devices of what it clones from once per session: a seeded
template has no NICs, so its clones' devices are not read before their NICs are added. A
template that gains NICs afterwards (edited in vCenter: turned into a VM, given a NIC, marked
a template again) is noticed at the power-on of a full clone, read again, and the clone made
again with exactly the NICs asked for (on vcsim)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from pyVmomi import vim

from shared.drivers import vmware
from shared.drivers.base import CloneProgress, CloneRequest, HypervisorError, NetworkBinding
from shared.stack._servers import Server
from tests.harness.vsphere import Vcsim

HOST, POOL = "DC0_C0_H0", "LocalDS_0"
ConfigSpec: Any = vim.vm.ConfigSpec  # an untyped constructor


async def test_a_template_that_gained_nics_is_read_again(vcsim_server: Server) -> None:
    prefix = f"tmpl-{secrets.token_hex(3)}"
    harness = await asyncio.to_thread(Vcsim, vcsim_server.url, vcsim_server.user,
                                      vcsim_server.password)
    driver = await vmware.VSphere.connect(vcsim_server.url, vcsim_server.user,
                                          vcsim_server.password, verify_tls=False,
                                          call_timeout=30)
    try:
        source = await asyncio.to_thread(harness.create_vm, f"{prefix}-source", HOST, POOL,
                                         [], ["VM Network"])
        [inventory] = await driver.inventory()
        host = next(h for h in inventory.hosts if h.name == HOST)
        pool = next(p for p in inventory.pools if p.name == POOL)
        network = next(n for n in inventory.networks if n.name == "DC0_DVPG0")
        snapshot, _ = await driver.create_snapshot(source, "s", "", False, False)
        seeded = await driver.seed_template(source, snapshot, pool.ref, f"{prefix}-t")

        def request(name: str) -> CloneRequest:
            return CloneRequest(
                name=name, template_ref=seeded.template_ref,
                base_snapshot_ref=seeded.base_snapshot_ref, host_ref=host.ref,
                pool_ref=pool.ref, linked=False, cpu_number=1, cpu_mhz=1000, memory_mb=256,
                networks=[NetworkBinding(network.ref, network.name, network.binding)])

        first = CloneProgress()
        await driver.clone(request(f"{prefix}-a"), first)
        assert [n.network_ref for n in first.nics] == [network.ref]

        # Edited in vCenter: the template gets a NIC of its own on "VM Network".
        template: Any = harness.ref(vim.VirtualMachine, f"{prefix}-t")
        nic = vmware.nic_spec(NetworkBinding(harness.ref(vim.Network, "VM Network")._moId,
                                             "VM Network"), -1)

        def edit() -> None:
            on: Any = harness.ref(vim.HostSystem, HOST)
            template.MarkAsVirtualMachine(pool=on.parent.resourcePool, host=on)
            harness.wait(template.ReconfigVM_Task(ConfigSpec(deviceChange=[nic])))
            template.MarkAsTemplate()

        await asyncio.to_thread(edit)

        with pytest.raises(HypervisorError) as caught:
            await driver.clone(request(f"{prefix}-b"), CloneProgress())
        assert caught.value.transient
        assert f"{seeded.template_ref} has NICs of its own" in str(caught.value)

        # The retry removes the half-made VM, reads the template again and replaces its NIC.
        again = CloneProgress()
        await driver.clone(request(f"{prefix}-b"), again)
        assert [n.network_ref for n in again.nics] == [network.ref]
        made = await asyncio.to_thread(harness.vm, f"{prefix}-b")
        assert made["nics"] == [vmware.dvs_portgroup(network.binding)[1]]  # type: ignore[index]
        assert await asyncio.to_thread(harness.count_named, f"{prefix}-b") == 1
    finally:
        await driver.close()
