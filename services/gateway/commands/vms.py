"""Virtual machine commands: deploy (from a VM snapshot or a seeded template), list, destroy."""

from __future__ import annotations

import uuid
from typing import Any

from proto import streams
from proto.commands import CommandAccepted, DeployVirtualMachine
from proto.events import (
    CapacityReserved,
    JobSubmitted,
    VmAssigned,
    VmDeployRequested,
    VmDestroyRequested,
    VmPowerRequested,
    VmRecovered,
)
from proto.streams import stable_id
from services.gateway import schema, views
from services.gateway.api import (
    ADMIN,
    OURS,
    PAGING,
    Caller,
    Context,
    Param,
    Params,
    command,
    listing,
)
from services.gateway.commands import targets
from services.gateway.commands.catalog import ids_param
from services.gateway.commands.limits import within_limits
from shared.domain.accounts import ROOT_DOMAIN_ID
from shared.domain.deploy import check_deploy
from shared.domain.job import (
    DEPLOY_VM_CMD,
    DESTROY_VM_CMD,
    REBOOT_VM_CMD,
    START_VM_CMD,
    STOP_VM_CMD,
)
from shared.domain.limits import Usage
from shared.domain.vm import (
    check_change_service,
    check_destroy,
    check_power,
    check_recover,
    instance_name,
)
from shared.errors import PARAM_ERROR, ApiError
from shared.eventstore import NO_STREAM, Append, ConcurrencyError, Repository


async def submit_deploy(ctx: Context, caller: Caller,
                        request: DeployVirtualMachine) -> CommandAccepted:
    """Validate a deploy request and record it; the services take it from there. What it
    names is loaded from the event store, never from the read models.

    Raises:
        ApiError: 431 naming the parameter and the reason, before any work is done.
    """
    repo = Repository(ctx.store)
    named = await repo.deploy_inputs(
        snapshot_id=request.vmsnapshotid, template_id=request.templateid,
        offering_id=request.serviceofferingid, host_id=request.hostid,
        network_ids=request.networkids, known=ctx.snapshot_streams)
    owner = await deploy_owner(ctx, caller, request)
    source = check_deploy(
        account_id=caller.account_id, is_admin=caller.is_admin,
        vm_snapshot_id=request.vmsnapshotid, template_id=request.templateid,
        snapshot=named.snapshot, template=named.template, offering=named.offering,
        offering_id=request.serviceofferingid, host_id=request.hostid, host=named.host,
        network_ids=request.networkids, known_networks=named.known_networks,
        name=request.name,
    )
    offering = named.offering
    assert offering is not None
    network_ids = source.network_ids or await default_network(repo, source.zone_id,
                                                               named.known_networks)
    if request.diskofferingid is not None and \
            await repo.disk_offering(request.diskofferingid) is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter diskofferingid: no disk offering "
                       f"{request.diskofferingid} exists")
    if request.requestid:
        vm_id = stable_id("deploy-request", caller.account_id, request.requestid)
        job_id = stable_id("deploy-job", caller.account_id, request.requestid)
    else:
        vm_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = request.name or f"VM-{vm_id}"
    deploy = VmDeployRequested(
        vm_id=vm_id, job_id=job_id, account_id=owner, user_id=caller.user_id,
        name=name, display_name=request.displayname or name,
        instance_name=instance_name(vm_id, owner), zone_id=source.zone_id,
        service_offering_id=offering.id, cpu_number=offering.cpu_number,
        cpu_speed=offering.cpu_speed, memory_mb=offering.memory_mb,
        pool_id=source.pool_id, network_ids=network_ids,
        vm_snapshot_id=request.vmsnapshotid, template_id=request.templateid,
        source_vm_id=source.source_vm_id, root_template_id=source.root_template_id,
        disk_offering_id=source.disk_offering_id, host_id=request.hostid,
        start=request.startvm is not False, data_disk_offering_id=request.diskofferingid,
    )

    async def repeated() -> bool:
        """Whether this is a repeated requestid: answered as the first time, if it asks
        for the same."""
        recorded = await ctx.store.read_stream(streams.vm(vm_id))
        if recorded and not same_deploy(recorded[0].event(), deploy):
            raise ApiError(PARAM_ERROR, f"invalid parameter requestid: {request.requestid!r} "
                           "was used for a different deployVirtualMachine request")
        return bool(recorded)

    async def accept() -> None:
        try:
            await ctx.append(caller, Append(streams.vm(vm_id), [deploy, JobSubmitted(
                job_id=job_id, cmd=DEPLOY_VM_CMD, instance_type="VirtualMachine",
                instance_id=vm_id, account_id=caller.account_id, user_id=caller.user_id)],
                NO_STREAM))
        except ConcurrencyError:
            # Only a repeated requestid can meet an existing stream (sent twice at once).
            await repeated()

    if not (request.requestid and await repeated()):
        wanted = Usage(user_vm=1, volume=1, cpu=offering.cpu_number, memory=offering.memory_mb)
        async with within_limits(ctx, caller, wanted):
            await accept()
    return CommandAccepted(id=vm_id, jobid=job_id)


async def deploy_owner(ctx: Context, caller: Caller, request: DeployVirtualMachine) -> str:
    """The account the new VM belongs to: the caller's, or (an administrator's request) the
    one ``account`` names in ``domainid``, as CloudStack takes them.

    Raises:
        ApiError: 431 naming ``account`` or ``domainid``; 531 for a user naming another.
    """
    if request.account is None:
        if request.domainid is not None and request.domainid != ROOT_DOMAIN_ID:
            raise ApiError(PARAM_ERROR, f"invalid parameter domainid: no domain "
                           f"{request.domainid} exists")
        return caller.account_id
    return await named_account(ctx, caller, request.account, request.domainid)


async def named_account(ctx: Context, caller: Caller, name: str, domain_id: str | None) -> str:
    """The id of the account ``name`` in domain ``domain_id`` (ROOT, the only one), as
    CloudStack's ``account`` with ``domainid`` names one: visible to the caller, not
    deleted.

    Raises:
        ApiError: 431 naming ``domainid`` or ``account``.
    """
    if domain_id is None:
        raise ApiError(PARAM_ERROR, "missing parameter domainid: account is taken with the "
                       "domain it is in (ROOT)")
    if domain_id != ROOT_DOMAIN_ID:
        raise ApiError(PARAM_ERROR, f"invalid parameter domainid: no domain {domain_id} "
                       "exists")
    account_id = await ctx.store.account_named(name)
    if account_id is None or not (caller.is_admin or account_id == caller.account_id) \
            or await Repository(ctx.store).account(account_id) is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter account: no account {name!r} is "
                       "visible to your account")
    return account_id


async def default_network(repo: Repository, zone_id: str, known: set[str]) -> list[str]:
    """The zone's default network for a deploy that names none and whose source has none
    (a template): its first guest network by name."""
    networks = [await repo.network(n) for n in sorted(known)]
    in_zone = sorted((n.imported.name, n.id) for n in networks
                     if n.imported is not None and not n.gone
                     and n.imported.zone_id == zone_id)
    return [in_zone[0][1]] if in_zone else []


def same_deploy(first: object, again: VmDeployRequested) -> bool:
    """Whether a repeated request asks for what the first one asked for."""
    return isinstance(first, VmDeployRequested) and first == again


def deploy_params(params: Params, api_key: str = "") -> DeployVirtualMachine:
    """deployVirtualMachine's parameters, each checked (431 naming the first bad one)."""
    offering = params.uuid("serviceofferingid")
    assert offering is not None
    params.uuid("zoneid")  # accepted and checked; the source's zone is used
    return DeployVirtualMachine(
        apikey=api_key, serviceofferingid=offering, vmsnapshotid=params.uuid("vmsnapshotid"),
        templateid=params.uuid("templateid"), hostid=params.uuid("hostid"),
        networkids=params.uuids("networkids"), name=params.text("name"),
        displayname=params.text("displayname"),
        requestid=params.text("requestid"),
        startvm=params.boolean("startvm"), diskofferingid=params.uuid("diskofferingid"),
        account=params.text("account"), domainid=params.uuid("domainid"),
    )


_VM_ID = Param("id", "uuid", "the VM's ID", required=True, entity=schema.VM)


@command("deployVirtualMachine", is_async=True, response=schema.VM,
         description="Creates and starts a VM from a VM snapshot (seeded once as a template "
         "on its pool, then linked clones) or from a seeded template.", params=(
             Param("serviceofferingid", "uuid", "the compute offering: CPUs and memory",
                   required=True, entity=schema.SERVICE_OFFERING),
             Param("zoneid", "uuid", "accepted and checked; the VM is made in its source's "
                   "zone", entity=schema.ZONE),
             Param("vmsnapshotid", "uuid", "the VM snapshot to deploy from (or templateid)",
                   since=OURS, entity=schema.VM_SNAPSHOT),
             Param("templateid", "uuid", "a template seeded from a VM snapshot (or "
                   "vmsnapshotid)", entity=schema.TEMPLATE),
             Param("hostid", "uuid", "the host to run it on (default: the planner places it)",
                   entity=schema.HOST),
             Param("networkids", "list", "the networks of its NICs, comma-separated "
                   "(default: its source VM's)", items="uuid", length=4096,
                   entity=schema.NETWORK),
             Param("name", "string", "its host name (default: VM-<id>)", length=63),
             Param("displayname", "string", "its display name (default: its name)"),
             Param("requestid", "string", "makes a retried request answer with the first "
                   "one's VM and job", since=OURS),
             Param("startvm", "boolean", "false: the VM is made and left Stopped (default: "
                   "started)"),
             Param("diskofferingid", "uuid", "a data disk of this disk offering is made and "
                   "attached", entity=schema.DISK_OFFERING),
             Param("account", "string", "an administrator deploys for the account of this "
                   "name (with domainid)"),
             Param("domainid", "uuid", "the domain of account (ROOT)"),
         ))
async def deploy_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    accepted = await submit_deploy(ctx, caller, deploy_params(params))
    return {"id": accepted.id, "jobid": accepted.jobid}


@command("listVirtualMachines", response=schema.VM,
         description="Lists the caller's VMs (every account's for an admin).", params=(
             Param("id", "uuid", "only the VM with this ID", entity=schema.VM),
             ids_param(schema.VM, "VM", "4.4"),
             Param("state", "string", "only VMs in this state (Running, Stopped, ...)"),
             Param("name", "string", "only VMs with this name"),
             Param("hostid", "uuid", "only VMs on this host", entity=schema.HOST),
             Param("zoneid", "uuid", "only VMs in this zone", entity=schema.ZONE),
             Param("keyword", "string", "only VMs whose name contains this"),
             *PAGING,
         ))
async def list_virtual_machines(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    found = await ctx.read.vms(
        caller.viewer, vm_id=params.uuid("id"), ids=params.uuids("ids"),
        state=params.text("state"),
        name=params.text("name"), host_id=params.uuid("hostid"), zone_id=params.uuid("zoneid"),
        keyword=params.text("keyword"), paging=params.page())
    names = await ctx.read.names(views.ids_of(found.items))
    return listing("virtualmachine", [views.vm(vm, names) for vm in found.items], found.total)


@command("destroyVirtualMachine", is_async=True, response=schema.VM,
         description="Destroys a VM (recoverable until expunged), or expunges it.", params=(
             _VM_ID,
             Param("expunge", "boolean", "also remove it and its disks now"),
         ))
async def destroy_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("id")
    assert vm_id is not None
    expunge = bool(params.boolean("expunge"))
    vm = await targets.vm(ctx, caller, vm_id, "id")
    check_destroy(vm, expunge)
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.vm(vm_id), [
        VmDestroyRequested(vm_id=vm_id, job_id=job_id, expunge=expunge),
        JobSubmitted(job_id=job_id, cmd=DESTROY_VM_CMD, instance_type="VirtualMachine",
                     instance_id=vm_id, account_id=caller.account_id, user_id=caller.user_id),
    ], vm.version))
    return {"id": vm_id, "jobid": job_id}


async def _power(ctx: Context, params: Params, caller: Caller, action: str,
                 cmd: str) -> dict[str, Any]:
    vm_id = params.uuid("id")
    assert vm_id is not None
    vm = await targets.vm(ctx, caller, vm_id, "id")
    check_power(vm, action)
    job_id = str(uuid.uuid4())
    await ctx.append(caller, Append(streams.vm(vm_id), [
        VmPowerRequested(vm_id=vm_id, job_id=job_id, action=action),
        JobSubmitted(job_id=job_id, cmd=cmd, instance_type="VirtualMachine",
                     instance_id=vm_id, account_id=caller.account_id, user_id=caller.user_id),
    ], vm.version))
    return {"id": vm_id, "jobid": job_id}


@command("stopVirtualMachine", is_async=True, response=schema.VM,
         description="Stops a running VM.", params=(
             _VM_ID,
             Param("forced", "boolean", "accepted; the VM is powered off"),
         ))
async def stop_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    params.boolean("forced")
    return await _power(ctx, params, caller, "stop", STOP_VM_CMD)


@command("startVirtualMachine", is_async=True, response=schema.VM,
         description="Starts a stopped VM.", params=(_VM_ID,))
async def start_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _power(ctx, params, caller, "start", START_VM_CMD)


@command("rebootVirtualMachine", is_async=True, response=schema.VM,
         description="Reboots a running VM.", params=(_VM_ID,))
async def reboot_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    return await _power(ctx, params, caller, "reboot", REBOOT_VM_CMD)


@command("recoverVirtualMachine", response=schema.VM,
         description="Recovers a destroyed VM that is not expunged yet (it stays stopped).",
         params=(_VM_ID,))
async def recover_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("id")
    assert vm_id is not None
    vm = await targets.vm(ctx, caller, vm_id, "id")
    check_recover(vm)
    await ctx.change(caller, Append(streams.vm(vm_id), [VmRecovered(vm_id=vm_id)], vm.version))
    return await _vm_view(ctx, caller, vm_id)


@command("assignVirtualMachine", role=ADMIN, response=schema.VM,
         description="Moves a VM with its volumes and VM snapshots to another account "
         "(admin): named by account and domainid, as CloudStack takes it, or by accountid.",
         params=(
             Param("virtualmachineid", "uuid", "the VM", required=True, entity=schema.VM),
             Param("account", "string", "the name of the account it goes to (with "
                   "domainid)"),
             Param("domainid", "uuid", "the domain of account (ROOT)"),
             Param("accountid", "uuid", "the account it goes to (or account and domainid)",
                   since=OURS, entity=schema.ACCOUNT),
             Param("networkids", "list", "accepted; the VM keeps its networks",
                   items="uuid", length=4096, entity=schema.NETWORK),
         ))
async def assign_virtual_machine(ctx: Context, params: Params, caller: Caller) -> dict[str, Any]:
    vm_id = params.uuid("virtualmachineid")
    account_id = params.uuid("accountid")
    name, domain_id = params.text("account"), params.uuid("domainid")
    params.uuids("networkids")
    assert vm_id is not None
    if name is not None:
        named = await named_account(ctx, caller, name, domain_id)
        if account_id is not None and account_id != named:
            raise ApiError(PARAM_ERROR, f"invalid parameter accountid: account {name!r} is "
                           f"{named}, not {account_id}; name it once")
        account_id = named
    elif account_id is None:
        raise ApiError(PARAM_ERROR, "missing parameter account: name the account the VM "
                       "goes to (account with domainid, or accountid)")
    vm = await targets.vm(ctx, caller, vm_id, "virtualmachineid")
    if await Repository(ctx.store).account(account_id) is None:
        raise ApiError(PARAM_ERROR, f"invalid parameter accountid: no account {account_id}")
    volumes = (await ctx.store.attached_volumes([vm_id])).get(vm_id, [])
    # Deleted snapshots too: a template seeded from one stays its owner's.
    snapshots = (await ctx.store.vm_snapshots([vm_id], deleted=True)).get(vm_id, [])
    await ctx.change(caller, Append(streams.vm(vm_id), [VmAssigned(
        vm_id=vm_id, account_id=account_id, volume_ids=volumes, snapshot_ids=snapshots)],
        vm.version))
    return await _vm_view(ctx, caller, vm_id)


@command("changeServiceForVirtualMachine", response=schema.VM,
         description="Changes a stopped VM's compute offering: its CPUs and memory from its "
         "next start (within the account's limits and its host's room); reverting to a VM "
         "snapshot brings back the offering it had then.", params=(
             Param("id", "uuid", "the VM", required=True, entity=schema.VM),
             Param("serviceofferingid", "uuid", "the new compute offering", required=True,
                   entity=schema.SERVICE_OFFERING),
             Param("details", "map", "accepted; offerings with custom CPU or memory are not "
                   "offered"),
             Param("automigrate", "boolean", "accepted; the VM stays on its host"),
             Param("maxiops", "long", "accepted"),
             Param("miniops", "long", "accepted"),
         ))
async def change_service_for_virtual_machine(ctx: Context, params: Params,
                                             caller: Caller) -> dict[str, Any]:
    vm_id, offering_id = params.uuid("id"), params.uuid("serviceofferingid")
    params.has("details")
    params.boolean("automigrate")
    params.integer("maxiops")
    params.integer("miniops")
    assert vm_id is not None and offering_id is not None
    repo = Repository(ctx.store)
    vm = await targets.vm(ctx, caller, vm_id, "id")
    offering = await repo.service_offering(offering_id)
    # A deployed VM holds its offering's CPU and memory on its host (an imported VM holds
    # nothing there): the reservation is replaced at the host's version.
    host = (await repo.host(vm.host_id)) if vm.request is not None and vm.host_id else None
    changed = check_change_service(vm, offering_id, offering,
                                   host.view() if host is not None else None)
    appends = [Append(streams.vm(vm_id), [changed], vm.version)]
    if host is not None:
        appends.append(Append(streams.host(host.id), [CapacityReserved(
            host_id=host.id, vm_id=vm_id, cpu_mhz=changed.cpu_number * changed.cpu_speed,
            memory_mb=changed.memory_mb)], host.version))
    wanted = Usage(cpu=max(0, changed.cpu_number - vm.cpu_number),
                   memory=max(0, changed.memory_mb - vm.memory_mb))
    async with within_limits(ctx, caller, wanted):
        await ctx.change(caller, *appends)
    return await _vm_view(ctx, caller, vm_id)


async def _vm_view(ctx: Context, caller: Caller, vm_id: str) -> dict[str, Any]:
    """A changed VM as listVirtualMachines shows it (the change is in the read models)."""
    shown = await ctx.read.vm(caller.viewer, vm_id)
    names = await ctx.read.names(views.ids_of([shown] if shown else []))
    return {"virtualmachine": views.vm(shown, names) if shown else {"id": vm_id}}
