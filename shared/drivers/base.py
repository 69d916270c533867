"""What snapdeploy needs from a hypervisor, in its own terms: pools, hosts, networks, VMs,
snapshots, templates, clones and volumes.

Object handles (``ref``) are the hypervisor's own ids, opaque to snapdeploy. A volume is
named by its *location* on a pool, a string the driver makes (``DriverKind.volume_location``)
and reads back; snapdeploy stores it and hands it back unchanged. Calls that change
something answer the hypervisor's id of the operation that did it (an *operation id*, kept
in the audit events), or ``None`` where nothing had to be done.

Every driver is checked by one contract suite (``tests/contract/test_driver_contract.py``)
against the promises written below; ``shared.drivers.fake`` keeps them in memory.

Errors: every failure is a ``HypervisorError``. ``transient`` is true when the hypervisor
did not answer (a timeout, a broken connection, a lost session that could not be renewed):
what was asked may or may not have happened, and the call may be made again once the caller
has made that safe (the promises below say where it already is). A refusal (bad input, an
object that does not exist, a fault the hypervisor reports) is not transient: the same call
would fail the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shared.config import Settings


class HypervisorError(Exception):
    """A hypervisor call failed; the message says which call, on what, and why."""

    def __init__(self, text: str, *, task_id: str | None = None, transient: bool = False,
                 fault: str | None = None):
        super().__init__(text)
        self.task_id = task_id  # the operation that failed, if one was started
        self.transient = transient
        self.fault = fault  # the hypervisor's own name for the fault, e.g. "DuplicateName"


class SessionLost(HypervisorError):
    """The hypervisor no longer knows this session (it restarted, or the session expired or
    was ended) and logging in again failed; a later call tries again. Transient."""

    def __init__(self, reason: str, *, hypervisor: str = "vCenter") -> None:
        super().__init__(f"{hypervisor} session lost; logging in again failed: {reason}",
                         transient=True)


@dataclass(frozen=True)
class DiskInfo:
    """A virtual disk of a VM (or of a VM snapshot). ``key`` is the driver's name for the
    disk on its VM, opaque to snapdeploy (vSphere: its device key, e.g. "2000"; libvirt: its
    target name, e.g. "vda"), stable while it stays attached and the same in every report of
    it: with the VM's id it names the volume. ``path`` is the disk's location on
    ``pool_ref``."""

    key: str
    path: str
    pool_ref: str
    size_bytes: int


@dataclass(frozen=True)
class NicInfo:
    """A network card: ``key`` is the driver's name for it on its VM, opaque and stable
    like ``DiskInfo.key`` (vSphere: its device key, e.g. "4000"); with the VM's id it names
    the NIC."""

    key: str
    network_ref: str
    mac: str


@dataclass(frozen=True)
class SnapshotInfo:
    ref: str
    name: str
    description: str
    created: datetime
    memory: bool
    parent_ref: str | None
    cpu_number: int
    memory_mb: int
    disks: list[DiskInfo]  # the root disk first
    nics: list[NicInfo]


@dataclass(frozen=True)
class VmInfo:
    ref: str
    name: str
    uuid: str
    template: bool
    host_ref: str | None
    cpu_number: int
    memory_mb: int
    powered_on: bool
    disks: list[DiskInfo]  # the root disk first
    nics: list[NicInfo]
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    current_snapshot_ref: str | None = None


@dataclass(frozen=True)
class HostInfo:
    ref: str
    name: str
    cluster: str
    cpu_cores: int
    cpu_mhz: int
    memory_bytes: int
    pool_refs: list[str]


@dataclass(frozen=True)
class PoolInfo:
    ref: str
    name: str
    url: str
    capacity_bytes: int
    free_bytes: int
    host_refs: list[str]


@dataclass(frozen=True)
class NetworkInfo:
    """A network VMs can be attached to. ``binding`` is the driver's own detail of how to
    attach to it (None: by ``ref`` alone), opaque to snapdeploy: stored as reported and
    given back to the driver unchanged (``NetworkBinding``, ``network_uri``). vSphere writes
    a distributed port group's switch and key in it (``proto.events.dvs_binding``)."""

    ref: str
    name: str
    binding: str | None = None


@dataclass(frozen=True)
class Inventory:
    """One datacenter (a zone) and what is in it."""

    datacenter_ref: str
    datacenter_name: str
    hosts: list[HostInfo]
    pools: list[PoolInfo]
    networks: list[NetworkInfo]
    vms: list[VmInfo]


@dataclass(frozen=True)
class Seeded:
    """A seeded template: linked clones are made from ``base_snapshot_ref``."""

    template_ref: str
    base_snapshot_ref: str
    install_path: str  # the template's root disk location on its pool
    task_ids: list[str]  # the operations that made it (empty if it was there already)


@dataclass(frozen=True)
class NetworkBinding:
    """A network to attach, as the inventory reported it (see ``NetworkInfo``)."""

    ref: str
    name: str
    binding: str | None = None


@dataclass(frozen=True)
class CloneRequest:
    name: str
    template_ref: str
    base_snapshot_ref: str | None
    host_ref: str
    pool_ref: str
    linked: bool
    cpu_number: int
    cpu_mhz: int
    memory_mb: int
    networks: list[NetworkBinding]


# The steps of a clone, in order: the names a failed deploy reports.
CLONE = "clone"
RECONFIGURE = "reconfigure"
POWER_ON = "power-on"
CLONE_STEPS = (CLONE, RECONFIGURE, POWER_ON)


@dataclass
class CloneProgress:
    """What a clone has done so far, so a failure can say which step and clean up."""

    vm_ref: str | None = None
    # step -> the operation that did it, filled in as each step of CLONE_STEPS finishes
    operations: dict[str, str] = field(default_factory=dict)
    nics: list[NicInfo] = field(default_factory=list)
    root_disk: DiskInfo | None = None

    def failed_step(self) -> str:
        """The first step not finished: where a failure happened."""
        return next((s for s in CLONE_STEPS if s not in self.operations), POWER_ON)

    def operation_ids(self) -> list[str]:
        return [self.operations[s] for s in CLONE_STEPS if s in self.operations]


@dataclass(frozen=True)
class Connection:
    """One session the settings ask for: its name in ``/healthz`` (e.g. "vcenter",
    "libvirt KVM0"), how to open it (logged in; raises ``HypervisorError`` when the
    hypervisor does not answer, and is called again until it does), its kind, and the name
    messages give it beside its kind's manager (a further vCenter's, a KVM zone's; "" for
    the vCenter of ``vcenter_url``)."""

    name: str
    open: Callable[[], Awaitable[Hypervisor]]
    kind: DriverKind
    label: str = ""


@dataclass(frozen=True)
class DriverKind:
    """A kind of hypervisor: the facts snapdeploy shows for it and how to connect to one.
    Known without a session (the gateway renders them)."""

    name: str  # the registry key, e.g. "vmware"
    hypervisor: str  # CloudStack's hypervisor name, e.g. "VMware"
    manager: str  # what manages the hypervisors, as messages name it, e.g. "vCenter"
    template_format: str  # CloudStack's template format, e.g. "OVA"
    pool_type: str  # CloudStack's storage pool type, e.g. "VMFS"
    full_clone_setting: str  # the per-pool setting that asks for full clones
    # Where a volume snapdeploy makes lives: (pool name, volume id) -> location.
    volume_location: Callable[[str, str], str]
    # A network's broadcast URI as CloudStack shows it.
    network_uri: Callable[[NetworkInfo], str]
    # The sessions of this kind the process's settings ask for (none: this kind is not
    # configured).
    connections: Callable[[Settings], list[Connection]]


class Hypervisor(Protocol):
    """A session with one hypervisor manager (every datacenter it holds is a zone)."""

    kind: DriverKind

    async def check_session(self) -> None:
        """Ask whether the session still lives; log in again if it does not.

        Raises:
            SessionLost: the session is gone and logging in again failed.
            HypervisorError: no answer (transient).
        """

    async def close(self) -> None:
        """End the session. Calls after this fail."""

    async def datacenters(self) -> list[str]:
        """The names of the datacenters (zones). Read-only."""

    async def inventory(self) -> list[Inventory]:
        """What the hypervisor holds, one inventory per datacenter (a zone each). Read-only;
        templates are listed with ``template`` set; every VM's disks root disk first."""

    async def seed_template(self, vm_ref: str, snapshot_ref: str, pool_ref: str,
                            name: str) -> Seeded:
        """Full-clone the root disk of VM ``vm_ref`` as of ``snapshot_ref`` into a template
        called ``name`` on ``pool_ref`` (no data disks, no NICs), with a base snapshot for
        linked clones.

        Idempotent by ``name``: a finished template of that name is answered as it is
        (``task_ids`` empty); a half-made one (an attempt that died) is removed first and
        the seed is made again. A transient error may leave a half-made one behind, which
        the next call removes. A failed seed leaves nothing behind.
        """

    async def clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        """Make a VM called ``request.name`` from the template on ``request.host_ref`` and
        ``request.pool_ref`` (linked to the base snapshot if ``request.linked`` and there is
        one, else a full clone), with exactly ``request.networks`` as NICs, CPU and memory
        from the request, and power it on.

        ``progress`` is filled in as steps finish, so on an error it tells the step that
        failed and the VM made so far (for ``destroy_vm``). Idempotent by name: a VM of
        that name left by an earlier attempt is removed and the clone made again. On an
        error the VM made so far is left in place: the caller removes it.
        """

    async def find_vm(self, name: str) -> str | None:
        """The VM or template called ``name`` (None: there is none). Read-only."""

    async def destroy_vm(self, ref: str) -> str | None:
        """Remove the VM or template ``ref`` with its disks (powered off first if it was on).
        Idempotent: None if it was gone already."""

    async def power_off(self, ref: str) -> str | None:
        """Power the VM off (hard). Idempotent: None if it was off already. A VM that does
        not exist is an error (not transient)."""

    async def power_on(self, ref: str) -> str | None:
        """Power the VM on. Idempotent: None if it was on already. A VM that does not exist
        is an error (not transient)."""

    async def reboot(self, ref: str) -> str:
        """Reset the VM (hard). Not idempotent: each call resets it again."""

    async def vm_powered_on(self, vm_ref: str) -> bool:
        """Whether the VM is powered on. Read-only; a VM that does not exist is an error
        (not transient)."""

    async def reconfigure(self, vm_ref: str, cpu_number: int, memory_mb: int) -> str | None:
        """Give the powered-off VM ``cpu_number`` CPUs and ``memory_mb`` MiB of memory, from
        its next power-on (a compute offering changed). Idempotent: None if it has them
        already. A VM that is powered on, or does not exist, is an error (not transient)."""

    async def create_snapshot(self, vm_ref: str, name: str, description: str, memory: bool,
                              quiesce: bool) -> tuple[str, str]:
        """Take a snapshot of the VM, which becomes its current one: (snapshot ref,
        operation id). Not idempotent: each call takes another snapshot (a caller that must
        not take two tags ``description`` and finds it again in the inventory)."""

    async def snapshot_info(self, vm_ref: str, snapshot_ref: str) -> SnapshotInfo:
        """The VM's snapshot ``snapshot_ref`` with the configuration frozen in it. Read-only;
        a snapshot the VM does not have is an error (not transient)."""

    async def remove_snapshot(self, snapshot_ref: str) -> str:
        """Delete the snapshot, merging its changes into its child (the VM's disks are not
        changed); its children stay. A snapshot that does not exist (any more) is an error
        (not transient)."""

    async def revert_snapshot(self, snapshot_ref: str) -> str:
        """Bring the snapshot's VM back to it; it becomes the current snapshot. The power
        state afterwards is the hypervisor's to decide (vSphere: off unless the snapshot
        holds memory; ask ``vm_powered_on``). Repeatable: reverting twice gives the same VM.
        A snapshot that does not exist is an error (not transient)."""

    async def copy_volume(self, source: str, pool_ref: str, dest: str) -> str:
        """Copy the disk at location ``source`` (any disk of the pool's datacenter: a
        snapshot's own, not the VM's current one) to the new location ``dest`` on
        ``pool_ref``. Not idempotent: a ``dest`` that exists is an error (not transient)."""

    async def attach_volume(self, vm_ref: str, location: str, *,
                            create_bytes: int | None = None) -> tuple[str, str | None]:
        """Attach the disk at ``location`` to the VM (made new there first, thin, of
        ``create_bytes``, if given): its key on the VM (``DiskInfo.key``, as the VM's
        inventory reports it from then on) and the operation id. Idempotent: a disk attached
        already answers its key and None."""

    async def detach_volume(self, vm_ref: str, location: str, *,
                            missing_ok: bool = False) -> str | None:
        """Detach the disk at ``location`` from the VM, keeping it on its pool. A disk not
        attached (any more) is an error, or None with ``missing_ok`` (idempotent then)."""

    async def resize_volume(self, vm_ref: str | None, location: str, size_bytes: int,
                            pool_ref: str) -> str:
        """Grow the disk at ``location`` on ``pool_ref`` to ``size_bytes`` (through the VM
        ``vm_ref`` if it is attached to one). Repeatable with the same size; shrinking is
        refused (not transient)."""

    async def delete_volume(self, location: str, pool_ref: str) -> str | None:
        """Delete the detached disk at ``location`` on ``pool_ref``. Idempotent: None if it
        was gone already."""
