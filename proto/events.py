"""Domain events: the facts snapdeploy records in its event store.

Every event is a tagged ``msgspec.Struct``; the tag (the class name) is the event type
stored beside the payload and used in NATS subjects. ``SCHEMA`` is the payload's schema
version; bump it when a field changes meaning and keep decoders for the old one.

Streams, by id prefix: ``zone-``, ``host-``, ``pool-``, ``network-``, ``offering-``,
``diskoffering-``, ``template-``, ``vm-`` (a VM, its jobs and its snapshots' requests),
``vmsnapshot-``, ``volume-``, ``spoolref-<snapshot>-<pool>`` (one seed of a snapshot on a
pool), ``inventory`` (sync requests), ``setting-``.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec


class Event(msgspec.Struct, tag=True):
    """Base of every event payload."""

    SCHEMA: ClassVar[int] = 1


class Part(msgspec.Struct):
    """A value nested inside an event."""


# ---- asynchronous jobs (on the stream of the object they work on) -----------------------


class JobSubmitted(Event):
    """CloudStack's async job for a command; pending until a JobCompleted."""

    job_id: str
    cmd: str
    instance_type: str
    instance_id: str
    account_id: str
    user_id: str


class JobCompleted(Event):
    job_id: str
    succeeded: bool
    error_code: int | None = None
    error_text: str | None = None


# ---- inventory imported from vCenter ---------------------------------------------------

LEGACY_DRIVER_KIND = "vmware"  # the kind of a zone imported before zones had kinds


class ZoneImported(Event):
    """A datacenter of a hypervisor manager (a vCenter datacenter, a KVM zone), as a
    CloudStack zone. ``driver_kind`` is the driver kind of the hypervisor that holds it
    (``shared.drivers.KINDS``: "vmware", "kvm"); None in events recorded before zones of
    several kinds, which were all vCenter datacenters ("vmware")."""

    zone_id: str
    name: str
    ref: str
    driver_kind: str | None = None

    @property
    def kind(self) -> str:
        """The zone's driver kind, "vmware" for an event recorded before kinds were."""
        return self.driver_kind or LEGACY_DRIVER_KIND


class HostImported(Event):
    host_id: str
    zone_id: str
    name: str
    ref: str
    cluster: str
    cpu_cores: int
    cpu_mhz: int
    memory_bytes: int
    pool_ids: list[str]


class PoolImported(Event):
    """A datastore, as a primary storage pool, and the hosts that mount it."""

    pool_id: str
    zone_id: str
    name: str
    ref: str
    url: str
    capacity_bytes: int
    free_bytes: int
    host_ids: list[str]


DVS_BINDING = "dvs:"


def dvs_binding(switch_uuid: str, portgroup_key: str) -> str:
    """The binding of a port group on a vSphere distributed switch, as the vSphere driver
    writes it (and as events recorded before bindings were opaque are read back)."""
    return f"{DVS_BINDING}{portgroup_key}@{switch_uuid}"


def legacy_key(key: str) -> int | None:
    """The number the old ``device_key`` field holds for a driver's key: vSphere's keys are
    numbers, other drivers' are not (None)."""
    return int(key) if key.isascii() and key.isdecimal() else None


class NetworkImported(Event):
    """A network. ``binding`` is the driver's own detail of how to attach to it (None: by
    ``ref`` alone), opaque to snapdeploy. Events recorded before it was there hold vSphere's
    ``switch_uuid`` and ``portgroup_key`` instead (set for distributed port groups); they
    are kept, read through ``network_binding``."""

    network_id: str
    zone_id: str
    name: str
    ref: str
    switch_uuid: str | None = None
    portgroup_key: str | None = None
    binding: str | None = None

    def network_binding(self) -> str | None:
        if self.binding is not None:
            return self.binding
        if self.switch_uuid and self.portgroup_key:
            return dvs_binding(self.switch_uuid, self.portgroup_key)
        return None


class Nic(Part):
    """A network card. ``key`` is the driver's name for it on its VM (``NicInfo.key``);
    NICs recorded before it was there hold vSphere's number in ``device_key`` alone (kept
    filled in whenever the key is a number); ``nic_key`` reads either."""

    nic_id: str
    network_id: str
    mac: str
    device_key: int | None = None
    key: str | None = None

    @property
    def nic_key(self) -> str:
        return self.key if self.key is not None else str(self.device_key)


class Disk(Part):
    """A virtual disk of a VM (or of a VM snapshot's configuration). ``key`` is the
    driver's name for it on its VM (``DiskInfo.key``); disks recorded before it was there
    hold vSphere's number in ``device_key`` alone (kept filled in whenever the key is a
    number); ``disk_key`` reads either."""

    volume_id: str
    path: str
    pool_id: str
    size_bytes: int
    root: bool
    device_key: int | None = None
    key: str | None = None

    @property
    def disk_key(self) -> str:
        return self.key if self.key is not None else str(self.device_key)


class VmImported(Event):
    """A VM that exists in vCenter, found by an inventory sync."""

    vm_id: str
    zone_id: str
    account_id: str
    name: str
    ref: str
    host_id: str
    cpu_number: int
    memory_mb: int
    powered_on: bool
    disks: list[Disk]
    nics: list[Nic]
    template_id: str | None = None


class InventoryObjectGone(Event):
    """A zone, host, pool or network an earlier sync imported is no longer in vCenter."""

    kind: str  # "zone", "host", "pool" or "network", as in the catalog
    object_id: str


class VmSnapshotTaken(Event):
    """A VM snapshot and the VM's configuration at snapshot time (GetVmSnapshotConfigs)."""

    snapshot_id: str
    vm_id: str
    account_id: str
    name: str
    description: str
    ref: str
    parent_id: str | None
    created: datetime
    memory: bool
    cpu_number: int
    memory_mb: int
    disks: list[Disk]
    nics: list[Nic]
    current: bool = True


class VmSnapshotRequested(Event):
    """createVMSnapshot: the cloner takes it in vCenter."""

    job_id: str
    snapshot_id: str
    vm_id: str
    name: str
    description: str
    memory: bool
    quiesce: bool


class VmSnapshotFailed(Event):
    snapshot_id: str
    vm_id: str
    reason: str


class VmSnapshotDeleteRequested(Event):
    job_id: str
    snapshot_id: str
    vm_id: str


class VmSnapshotDeleted(Event):
    snapshot_id: str
    vm_id: str


class VmRevertRequested(Event):
    job_id: str
    snapshot_id: str
    vm_id: str


class VmReverted(Event):
    """The VM is back at the snapshot; it becomes the current one."""

    snapshot_id: str
    vm_id: str
    powered_on: bool


class InventorySyncRequested(Event):
    """An admin asked for vCenter to be read again (stream ``inventory``)."""

    job_id: str


# ---- accounts and users (streams ``account-<id>``, ``user-<id>``) ------------------------


class AccountCreated(Event):
    account_id: str
    name: str
    role: str  # "admin" or "user"


class AccountDeleted(Event):
    """deleteAccount: the account is removed with its users, and its API keys revoked; its
    VMs, volumes and templates were gone before (the command refuses otherwise). Its name
    and its users' names stay taken: the history keeps naming them."""

    account_id: str
    name: str
    user_ids: list[str] = []


class ResourceLimitUpdated(Event):
    """updateResourceLimit: the account may hold at most ``max`` of ``resource`` (CloudStack's
    resourcetypename, e.g. ``user_vm``, ``cpu``); -1 is unlimited."""

    account_id: str
    resource: str
    max: int


class UserCreated(Event):
    user_id: str
    account_id: str
    username: str
    email: str
    firstname: str
    lastname: str


class UserKeysRegistered(Event):
    """A new API key pair; the secret itself stays out of the event store."""

    user_id: str
    account_id: str
    api_key: str


class VmAssigned(Event):
    """assignVirtualMachine: the VM, its volumes in ``volume_ids`` and its VM snapshots in
    ``snapshot_ids`` (with the templates seeded from them) move to another account."""

    vm_id: str
    account_id: str
    volume_ids: list[str] = []
    snapshot_ids: list[str] = []


# ---- offerings and settings ------------------------------------------------------------


class ServiceOfferingCreated(Event):
    offering_id: str
    name: str
    display_text: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int


class DiskOfferingCreated(Event):
    offering_id: str
    name: str
    display_text: str
    disk_size_gb: int


class ServiceOfferingDeleted(Event):
    """deleteServiceOffering: no longer listed nor deployable; VMs that have it keep it."""

    offering_id: str


class DiskOfferingDeleted(Event):
    """deleteDiskOffering: no longer listed nor usable for new volumes; volumes that have
    it keep it."""

    offering_id: str


class PoolSettingChanged(Event):
    """A per-pool setting, e.g. ``vmware.create.full.clone``."""

    pool_id: str
    name: str
    value: str


# ---- deploying a VM (stream ``vm-<vm id>``) --------------------------------------------


class VmDeployRequested(Event):
    """A user asked for a VM; it exists from now on, in state Starting.

    ``source_vm_id``, ``pool_id``, ``root_template_id`` and ``disk_offering_id`` were
    derived from the source when the request was validated (spec items 8-10).
    """

    vm_id: str
    job_id: str
    account_id: str
    user_id: str
    name: str
    display_name: str
    instance_name: str
    zone_id: str
    service_offering_id: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int
    pool_id: str
    network_ids: list[str]
    vm_snapshot_id: str | None = None
    template_id: str | None = None
    source_vm_id: str | None = None
    root_template_id: str | None = None
    disk_offering_id: str | None = None
    host_id: str | None = None
    start: bool = True  # startvm: False leaves the new VM Stopped
    data_disk_offering_id: str | None = None  # diskofferingid: a data disk made and attached


class VmPlaced(Event):
    """The planner chose a host that reaches the pool and reserved room on it."""

    vm_id: str
    host_id: str
    pool_id: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int


class VmSourceReady(Event):
    """The template to clone from is on the VM's pool; the cloner can start."""

    vm_id: str
    template_id: str
    template_ref: str
    base_snapshot_ref: str | None
    pool_id: str


class VmCreated(Event):
    """The clone exists in vCenter (named after the VM's instance name)."""

    vm_id: str
    ref: str
    host_id: str
    pool_id: str
    linked: bool
    task_id: str


class NicCreated(Event):
    vm_id: str
    nic: Nic
    task_id: str


class VmStarted(Event):
    """The VM is powered on."""

    vm_id: str
    host_id: str
    hypervisor_ref: str
    task_ids: list[str] = []


class VmDeployFailed(Event):
    """The deploy failed at ``step``; what it had created on the hypervisor is removed."""

    vm_id: str
    step: str
    reason: str
    # CloudStack's internal error, shared.errors.INTERNAL_ERROR (proto imports nothing of
    # shared; tests/unit/test_handlers_cloner.py checks the two agree).
    error_code: int = 530


class VmDestroyRequested(Event):
    """destroyVirtualMachine: the cloner powers it off, and removes it if ``expunge``."""

    vm_id: str
    job_id: str
    expunge: bool


class VmPowerRequested(Event):
    """stopVirtualMachine, startVirtualMachine or rebootVirtualMachine (``action``)."""

    vm_id: str
    job_id: str
    action: str


class VmStopped(Event):
    vm_id: str


class VmRebooted(Event):
    vm_id: str
    task_id: str


class VmServiceChanged(Event):
    """changeServiceForVirtualMachine: a stopped VM's compute offering, and the CPUs and
    memory it gives (the cloner reconfigures the VM on its hypervisor: VmReconfigured)."""

    vm_id: str
    service_offering_id: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int


class VmReconfigured(Event):
    """The VM's CPUs and memory on its hypervisor are those of its last VmServiceChanged
    (or, after a revert, its VM snapshot's)."""

    vm_id: str
    cpu_number: int
    memory_mb: int
    task_id: str | None = None


class VmRecovered(Event):
    """recoverVirtualMachine: a Destroyed VM is Stopped again."""

    vm_id: str


class VmDestroyed(Event):
    vm_id: str


class VmExpunged(Event):
    """The VM is gone from the hypervisor, with the volumes in ``volume_ids``."""

    vm_id: str
    volume_ids: list[str] = []


# ---- guest addresses (stream ``network-<network id>``) ----------------------------------


class NetworkRangeSet(Event):
    """updateNetwork cidr= gateway=: the IPv4 range the network's guest addresses come from
    (before it, a default range per network, ``shared.domain.network.default_range``)."""

    network_id: str
    cidr: str
    gateway: str


class AddressesAllocated(Event):
    """A VM's NICs on this network got ``addresses`` (in the order of its NICs on it), from
    the range ``cidr`` with ``gateway``; no other VM holds them until released."""

    network_id: str
    vm_id: str
    addresses: list[str]
    cidr: str
    gateway: str


class AddressesReleased(Event):
    """The VM's addresses on this network are free again (expunged, or its deploy failed)."""

    network_id: str
    vm_id: str


# ---- host capacity (stream ``host-<host id>``) -----------------------------------------


class CapacityReserved(Event):
    host_id: str
    vm_id: str
    cpu_mhz: int
    memory_mb: int


class CapacityReleased(Event):
    host_id: str
    vm_id: str


# ---- volumes (stream ``volume-<volume id>``) -------------------------------------------


class VolumeFromSnapshotRequested(Event):
    """createVolume with vmsnapshotid and volumeid: copy that disk as of the snapshot."""

    volume_id: str
    job_id: str
    account_id: str
    user_id: str
    name: str
    vm_snapshot_id: str
    source_volume_id: str
    source_path: str
    pool_id: str
    size_bytes: int


class VolumeAllocated(Event):
    """createVolume with diskofferingid: an empty data volume, made on the pool of the first
    VM it is attached to (CloudStack's Allocated state until then)."""

    volume_id: str
    job_id: str
    account_id: str
    user_id: str
    name: str
    zone_id: str
    disk_offering_id: str
    size_bytes: int


class VolumeDeleteRequested(Event):
    """deleteVolume: a detached data volume goes (state Destroy until its disk is deleted)."""

    volume_id: str


class VolumeDeleted(Event):
    """The volume's disk is deleted from its pool (none was made for an Allocated one)."""

    volume_id: str
    task_id: str | None = None


class VolumeFailed(Event):
    volume_id: str
    reason: str


class VolumeAttachRequested(Event):
    volume_id: str
    vm_id: str
    job_id: str
    attach: bool


class VolumeAttached(Event):
    """``key``: the driver's name for the disk on the VM; recorded before it was there,
    vSphere's number in ``device_key`` alone (see ``Disk``)."""

    volume_id: str
    vm_id: str
    device_key: int | None = None
    task_id: str | None = None  # None: found attached already (a rerun)
    key: str | None = None

    @property
    def disk_key(self) -> str:
        return self.key if self.key is not None else str(self.device_key)


class VolumeDetached(Event):
    volume_id: str
    vm_id: str
    task_id: str | None = None  # None: found detached already (a rerun)


class VolumeResizeRequested(Event):
    volume_id: str
    job_id: str
    size_bytes: int


class VolumeResized(Event):
    volume_id: str
    size_bytes: int
    task_id: str | None = None


class VolumeCreated(Event):
    volume_id: str
    account_id: str
    name: str
    volume_type: str
    pool_id: str
    size_bytes: int
    path: str
    vm_id: str | None = None
    template_id: str | None = None
    disk_offering_id: str | None = None
    device_key: int | None = None
    task_id: str | None = None
    key: str | None = None  # the driver's name for the disk on ``vm_id`` (see ``Disk``)

    @property
    def disk_key(self) -> str | None:
        return self.key if self.key is not None else \
            None if self.device_key is None else str(self.device_key)


# ---- templates seeded from VM snapshots (stream ``spoolref-<snapshot>-<pool>``) ---------


class TemplateSeedStarted(Event):
    """A VM snapshot's root disk is being full-cloned into a template on its pool."""

    vm_snapshot_id: str
    pool_id: str
    template_id: str
    name: str


class VmAwaitingTemplate(Event):
    """A placed VM waits for the seed in progress on its stream."""

    vm_snapshot_id: str
    pool_id: str
    vm_id: str


class TemplateSeeded(Event):
    """The seeded template is ready for linked clones."""

    vm_snapshot_id: str
    pool_id: str
    template_id: str
    template_ref: str
    base_snapshot_ref: str
    install_path: str
    task_ids: list[str]


class TemplateSeedFailed(Event):
    vm_snapshot_id: str
    pool_id: str
    reason: str


class TemplateRemoved(Event):
    """The seeded template was removed from its pool: no VM depends on it any more."""

    vm_snapshot_id: str
    pool_id: str


AnyEvent = (
    JobSubmitted
    | JobCompleted
    | ZoneImported
    | HostImported
    | PoolImported
    | NetworkImported
    | InventoryObjectGone
    | VmImported
    | VmSnapshotTaken
    | VmSnapshotRequested
    | VmSnapshotFailed
    | VmSnapshotDeleteRequested
    | VmSnapshotDeleted
    | VmRevertRequested
    | VmReverted
    | InventorySyncRequested
    | AccountCreated
    | AccountDeleted
    | ResourceLimitUpdated
    | UserCreated
    | UserKeysRegistered
    | VmAssigned
    | ServiceOfferingCreated
    | DiskOfferingCreated
    | ServiceOfferingDeleted
    | DiskOfferingDeleted
    | PoolSettingChanged
    | VmDeployRequested
    | VmPlaced
    | VmSourceReady
    | VmCreated
    | NicCreated
    | VmStarted
    | VmDeployFailed
    | VmDestroyRequested
    | VmPowerRequested
    | VmStopped
    | VmRebooted
    | VmRecovered
    | VmServiceChanged
    | VmReconfigured
    | VmDestroyed
    | VmExpunged
    | CapacityReserved
    | CapacityReleased
    | NetworkRangeSet
    | AddressesAllocated
    | AddressesReleased
    | VolumeCreated
    | VolumeFromSnapshotRequested
    | VolumeAllocated
    | VolumeDeleteRequested
    | VolumeDeleted
    | VolumeFailed
    | VolumeAttachRequested
    | VolumeAttached
    | VolumeDetached
    | VolumeResizeRequested
    | VolumeResized
    | TemplateSeedStarted
    | VmAwaitingTemplate
    | TemplateSeeded
    | TemplateSeedFailed
    | TemplateRemoved
)

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in AnyEvent.__args__}
