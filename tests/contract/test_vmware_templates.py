"""The vSphere driver does not read the devices of a linked clone before adding its NICs: a
seeded template's base snapshot has none. A template that gains a NIC afterwards (edited in
vCenter: turned into a VM, given a NIC, marked a template again): its full clones (the
template as it is now) and its linked clones (its base snapshot) get exactly the NICs asked
for.

vCenter makes a linked clone from its base snapshot's configuration, which never changes;
vcsim makes it from the template's as it is now. So on vcsim the first linked clone after
the edit shows a NIC its base snapshot does not: it is refused as transient, and made again
with the clone's own devices read, as are the later ones (on vCenter that does not
happen: a template snapdeploy did not seed would do the same)."""

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


async def test_a_template_that_gained_a_nic_still_gives_clones_only_the_nics_asked_for(
        vcsim_server: Server) -> None:
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

        def request(name: str, linked: bool = True) -> CloneRequest:
            return CloneRequest(
                name=name, template_ref=seeded.template_ref,
                base_snapshot_ref=seeded.base_snapshot_ref, host_ref=host.ref,
                pool_ref=pool.ref, linked=linked, cpu_number=1, cpu_mhz=1000, memory_mb=256,
                networks=[NetworkBinding(network.ref, network.name, network.binding)])

        async def cloned(name: str, linked: bool = True) -> CloneProgress:
            progress = CloneProgress()
            await driver.clone(request(name, linked), progress)
            assert [n.network_ref for n in progress.nics] == [network.ref]
            made = await asyncio.to_thread(harness.vm, name)
            assert made["nics"] == [vmware.dvs_portgroup(network.binding)[1]]  # type: ignore[index]
            assert await asyncio.to_thread(harness.count_named, name) == 1
            return progress

        await cloned(f"{prefix}-a")

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
        await cloned(f"{prefix}-full", linked=False)

        with pytest.raises(HypervisorError) as caught:  # vcsim only: see above
            await driver.clone(request(f"{prefix}-b"), CloneProgress())
        assert caught.value.transient
        assert f"its template {seeded.template_ref} has NICs of its own" in str(caught.value)
        await cloned(f"{prefix}-b")  # the half-made VM removed, the clone's devices read
        await cloned(f"{prefix}-c")
    finally:
        await driver.close()
