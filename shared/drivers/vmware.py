"""VMware vSphere through pyvmomi: the first hypervisor driver.

pyvmomi blocks, so every call runs on a thread of this session's own executor and the event
loop never waits on vCenter. Properties are read through the PropertyCollector with
explicit paths (never whole ``runtime`` or ``summary`` objects, which some vCenter
versions and the simulator fill with values older clients cannot parse). A task's state is
read at once and then polled with a pause growing by half from 1 ms, so a task of a few
milliseconds costs a few reads and is seen done soon after it ends; one that is still
running after ``POLL_PHASE_S`` is followed through the session's task collector (one filter
per task, ``WaitForUpdatesEx``).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from proto.events import DVS_BINDING, dvs_binding
from shared.config import Settings, VCenter, vcenters
from shared.drivers.base import (
    CLONE,
    POWER_ON,
    RECONFIGURE,
    CloneProgress,
    CloneRequest,
    Connection,
    DiskInfo,
    DriverKind,
    HostInfo,
    Hypervisor,
    HypervisorError,
    Inventory,
    NetworkBinding,
    NetworkInfo,
    NicInfo,
    PoolInfo,
    Seeded,
    SessionLost,
    SnapshotInfo,
    VmInfo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
PC = vmodl.query.PropertyCollector

BASE_SNAPSHOT = "snapdeploy-base"
FULL_CLONE = "moveAllDiskBackingsAndDisallowSharing"
LINKED_CLONE = "createNewChildDiskBacking"
TASK_TIMEOUT_S = 600
# A task is polled (its state read, then read again after a pause growing by POLL_GROWTH from
# POLL_FIRST_S up to POLL_CAP_S) for POLL_PHASE_S; past that it is followed by the task
# collector. Growing by half, not doubling: each pause is about half the time waited so far
# (doubling: about all of it), so a task that ends after t is seen done by about 1.5 t, not
# 2 t (vcsim's clone, done in about 10 ms, is read at 11 ms, not 18), for a read or two more.
POLL_FIRST_S = 0.001
POLL_GROWTH = 1.5
POLL_CAP_S = 0.05
POLL_PHASE_S = 1.5
_TASK_PATHS = ["info.state", "info.error", "info.result"]
_TASK_DONE = ("success", "error")


def poll_pauses() -> Iterator[float]:
    """The pauses between reads of a running task's state, in seconds: ``POLL_FIRST_S``,
    each next one ``POLL_GROWTH`` times longer, up to ``POLL_CAP_S``."""
    pause = POLL_FIRST_S
    while True:
        yield pause
        pause = min(pause * POLL_GROWTH, POLL_CAP_S)


_KINDS: dict[str, Any] = {
    "vm": vim.VirtualMachine,
    "snapshot": vim.vm.Snapshot,
    "host": vim.HostSystem,
    "datastore": vim.Datastore,
    "network": vim.Network,
    "dvportgroup": vim.dvs.DistributedVirtualPortgroup,
    "resgroup": vim.ResourcePool,
    "task": vim.Task,
    "group": vim.Folder,
    "datacenter": vim.Datacenter,
}


__all__ = ["KIND", "SessionLost", "VSphere", "clone_spec", "reconfigure_spec", "seed_spec"]


def volume_location(pool_name: str, volume_id: str) -> str:
    """Where a volume made by snapdeploy lives on its datastore."""
    return f"[{pool_name}] snapdeploy-volumes/{volume_id}.vmdk"


def dvs_portgroup(binding: str | None) -> tuple[str, str] | None:
    """(switch uuid, port group key) of a distributed port group's binding (written by
    ``proto.events.dvs_binding``); None for a standard port group's."""
    if binding is None or not binding.startswith(DVS_BINDING):
        return None
    portgroup_key, _, switch_uuid = binding[len(DVS_BINDING):].partition("@")
    if not portgroup_key or not switch_uuid:
        raise HypervisorError(f"not a distributed port group's binding: {binding!r}")
    return switch_uuid, portgroup_key


def network_uri(network: NetworkInfo) -> str:
    """CloudStack's broadcast URI of a vSphere network: its port group key, or its id."""
    dvs = dvs_portgroup(network.binding)
    return f"vmware://{network.ref if dvs is None else dvs[1]}"


async def connect(settings: Settings, vcenter: VCenter | None = None) -> VSphere:
    """A session with ``vcenter`` (one of ``shared.config.vcenters(settings)``), by default
    the vCenter of ``vcenter_url``."""
    vc = vcenter or VCenter("", settings.vcenter_url, settings.vcenter_user,
                            settings.vcenter_password, settings.vcenter_verify_tls)
    return await VSphere.connect(vc.url, vc.user, vc.password, verify_tls=vc.verify_tls,
                                 threads=settings.vcenter_threads,
                                 call_timeout=settings.vcenter_timeout, scope=vc.name)


def connections(settings: Settings) -> list[Connection]:
    """One session per vCenter the settings name (``shared.config.vcenters``: the one of
    ``vcenter_url`` first, named "vcenter" in ``/healthz``; then each of ``vcenters``,
    "vcenter <name>"), every datacenter of each a zone; none when no vCenter is named.

    Raises:
        ValueError: ``vcenters`` is malformed (the message names the bad part).
    """
    out = []
    for vc in vcenters(settings):

        async def open_session(vc: VCenter = vc) -> Hypervisor:
            return await connect(settings, vc)

        out.append(Connection(f"vcenter {vc.name}" if vc.name else "vcenter", open_session,
                              KIND, vc.name))
    return out


KIND = DriverKind(
    name="vmware", hypervisor="VMware", manager="vCenter", template_format="OVA",
    pool_type="VMFS",
    full_clone_setting="vmware.create.full.clone", volume_location=volume_location,
    network_uri=network_uri, connections=connections)


# Calls that are not retried after logging in again: they are the login itself.
_SESSION_CALLS = frozenset({"Login", "Logout", "LoginByToken", "LoginExtensionByCertificate"})
# Calls that change nothing in vCenter (reads, and views and collectors of this session),
# sent once more when the connection they went out on turns out dead: after a restart of
# vCenter the connections pyVmomi keeps open are all dead, and the first call meets one.
_SAFE_TO_RESEND = frozenset({
    "RetrieveContents", "RetrieveProperties", "RetrievePropertiesEx",
    "ContinueRetrievePropertiesEx", "RetrieveServiceContent", "CurrentTime",
    "CreateContainerView", "DestroyView", "CreatePropertyCollector",
})


class _Relogin:
    """Wraps a pyVmomi stub so that a call vCenter refuses with ``NotAuthenticated`` logs
    in again on the same stub and is sent once more.

    Every SOAP call of the session, and so every driver call, goes through the stub's
    ``InvokeMethod`` (property reads too), so this covers them all. A refused call did not
    run, so sending it again is safe. The managed objects already held stay valid: they
    name the stub, whose session cookie the new login replaces.
    """

    def __init__(self, stub: Any, manager: Any, user: str, password: str,
                 on_login: Callable[[], None]) -> None:
        self._manager = manager
        self._invoke = stub.InvokeMethod
        self._user = user
        self._password = password
        self._on_login = on_login
        self._lock = threading.Lock()
        self.generation = 0  # logins since the first
        stub.InvokeMethod = self.invoke

    def invoke(self, mo: Any, info: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
        method = str(getattr(info, "wsdlName", ""))
        generation = self.generation
        try:
            return self._send(method, mo, info, args, *rest, **kwargs)
        except vim.fault.NotAuthenticated:
            if method in _SESSION_CALLS:
                raise
            self.log_in_again(generation, f"{method} was refused with NotAuthenticated")
        return self._send(method, mo, info, args, *rest, **kwargs)

    def _send(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._invoke(*args, **kwargs)
        except (OSError, http.client.HTTPException) as exc:
            # Not after a timeout: a call unanswered that long has had its time.
            if method not in _SAFE_TO_RESEND or isinstance(exc, TimeoutError):
                raise
            # pyVmomi dropped its pooled connections on that failure; this opens a new one.
            return self._invoke(*args, **kwargs)

    def log_in_again(self, generation: int, why: str) -> None:
        """Log in again, unless another thread did since ``generation`` was read.

        Raises:
            SessionLost: vCenter refused the login or did not answer it.
        """
        with self._lock:
            if self.generation != generation:
                return
            try:
                self._manager.Login(self._user, self._password, None)
            except vmodl.MethodFault as fault:
                reason = getattr(fault, "msg", None) or _fault_name(fault)
                raise SessionLost(f"{_fault_name(fault)}: {reason}") from fault
            except (OSError, http.client.HTTPException) as exc:
                raise SessionLost(f"vCenter did not answer: {type(exc).__name__}: {exc}") \
                    from exc
            self.generation += 1
            self._on_login()
            log.warning("vCenter session lost (%s); logged in again", why)


def ref_of(obj: Any) -> str:
    """vCenter's own id of a managed object ("host-21"): a ref of the session of
    ``vcenter_url`` (see ``VSphere.scope``)."""
    return str(obj._moId)


def scoped(scope: str, ref: str) -> str:
    """The ref a session of vCenter ``scope`` reports for vCenter's ``ref``: ``ref`` itself
    for the vCenter of ``vcenter_url`` (scope ""), else ``"<scope>/<ref>"``."""
    return f"{scope}/{ref}" if scope and ref else ref


def _fault_name(fault: Any) -> str:
    """``DuplicateName`` for a ``vim.fault.DuplicateName``."""
    return type(fault).__name__.rsplit(".", 1)[-1]


def _disks(devices: Sequence[Any]) -> list[Any]:
    """Virtual disks in boot order: the first is the root disk."""
    found = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    return sorted(found, key=lambda d: (d.controllerKey, d.unitNumber or 0, d.key))


def _disk_info(disk: Any, scope: str = "") -> DiskInfo:
    size = disk.capacityInBytes or (disk.capacityInKB or 0) * 1024
    return DiskInfo(str(disk.key), disk.backing.fileName,
                    scoped(scope, ref_of(disk.backing.datastore)), int(size))


def _nics(devices: Sequence[Any], by_portgroup: dict[str, str],
          scope: str = "") -> list[NicInfo]:
    """A VM's NICs; ``by_portgroup`` maps port group keys and network names to the refs
    the session reports (scoped already)."""
    out = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        backing: Any = dev.backing
        port = getattr(backing, "port", None)
        if port is not None:
            key = str(port.portgroupKey)
            network = by_portgroup.get(key, scoped(scope, key))
        elif getattr(backing, "network", None) is not None:
            network = scoped(scope, ref_of(backing.network))
        else:
            network = by_portgroup.get(str(getattr(backing, "deviceName", "")), "")
        out.append(NicInfo(str(dev.key), network, dev.macAddress or ""))
    return out


def nic_spec(binding: NetworkBinding, key: int) -> Any:
    """A new VMXNET3 NIC on ``binding``'s network (standard or distributed port group)."""
    backing: Any
    dvs = dvs_portgroup(binding.binding)
    if dvs is not None:
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey=dvs[1], switchUuid=dvs[0]))
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=binding.name, network=vim.Network(binding.ref))
    device = vim.vm.device.VirtualVmxnet3(
        key=key, backing=backing, addressType="generated",
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True,
                                                            allowGuestControl=True))
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=device)


def seed_spec(snapshot_ref: str, pool_ref: str, snapshot_devices: Sequence[Any]) -> Any:
    """Full clone of a snapshot's root disk only: data disks and NICs are left out."""
    disks = _disks(snapshot_devices)
    dropped = disks[1:] + [d for d in snapshot_devices
                           if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return vim.vm.CloneSpec(
        snapshot=vim.vm.Snapshot(snapshot_ref),
        template=False,
        powerOn=False,
        location=vim.vm.RelocateSpec(datastore=vim.Datastore(pool_ref), diskMoveType=FULL_CLONE),
        config=vim.vm.ConfigSpec(deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation="remove", device=d) for d in dropped]),
    )


def clone_spec(request: CloneRequest, resource_pool_ref: str) -> Any:
    """The CloneVM_Task spec for a deploy: onto the chosen host and pool, linked to the
    seeded template's base snapshot unless a full clone is asked for."""
    linked = request.linked and request.base_snapshot_ref is not None
    return vim.vm.CloneSpec(
        snapshot=vim.vm.Snapshot(request.base_snapshot_ref) if linked else None,
        template=False,
        powerOn=False,
        location=vim.vm.RelocateSpec(
            host=vim.HostSystem(request.host_ref),
            datastore=vim.Datastore(request.pool_ref),
            pool=vim.ResourcePool(resource_pool_ref),
            diskMoveType=LINKED_CLONE if linked else FULL_CLONE,
        ),
    )


def reconfigure_spec(request: CloneRequest, current_devices: Sequence[Any]) -> Any:
    """CPU and memory from the offering; the NICs replaced by exactly the requested ones."""
    changes = [vim.vm.device.VirtualDeviceSpec(operation="remove", device=d)
               for d in current_devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    changes += [nic_spec(n, -(i + 1)) for i, n in enumerate(request.networks)]
    return vim.vm.ConfigSpec(
        numCPUs=request.cpu_number,
        memoryMB=request.memory_mb,
        cpuAllocation=vim.ResourceAllocationInfo(limit=request.cpu_mhz),
        deviceChange=changes,
    )


class _TaskCollector:
    """One property collector per session for the tasks that outlast polling.

    Each task waited for gets a filter of its own on the collector, destroyed once it has
    ended. One thread at a time calls ``WaitForUpdatesEx`` (vCenter answers one outstanding
    wait per collector) and hands every task's changes to the threads waiting for them; the
    others wait on a condition until it returns. No vCenter call is made while the
    condition's lock is held, so a call that logs in again (and resets this collector)
    never waits for it.

    Filters are made and destroyed one at a time per session (``_filter_calls``): vcsim's
    collector changes its list of filters without a lock, so a filter made while another
    was being destroyed could bring the destroyed one back into the list.
    """

    # A waiter re-creates its filter this many times when the collector is replaced (a new
    # login, vCenter restarted) before giving up.
    MAX_RENEWALS = 3

    def __init__(self, content: Any, poll_s: int) -> None:
        self._content = content
        self._poll_s = poll_s
        self._cond = threading.Condition(threading.Lock())
        self._filter_calls = threading.Lock()
        self._collector: Any = None
        self._epoch = 0  # incremented each time the collector is dropped
        self._version = ""
        self._leading = False
        self._watching: dict[str, int] = {}  # task ref -> filters on it
        self._seen: dict[str, str] = {}  # task ref -> the last state reported

    def reset(self) -> None:
        """Forget the collector (it belonged to a session that is gone)."""
        with self._cond:
            self._drop()

    def _drop(self) -> None:
        self._collector = None
        self._epoch += 1
        self._version = ""
        self._seen.clear()
        self._cond.notify_all()

    def wait(self, task: Any, ended: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``task`` has ended (True) or ``deadline`` (``time.monotonic``) has
        passed (False). ``ended`` reads the task's state from vCenter: it is called once the
        task's filter exists, so a task that ended before is not missed."""
        task_id = ref_of(task)
        for _ in range(self.MAX_RENEWALS + 1):
            epoch, collector, task_filter = self._watch(task)
            if collector is None:  # dropped while it was being made: make another
                continue
            try:
                if ended():
                    return True
                outcome = self._follow(task_id, epoch, deadline)
                if outcome is not None:
                    return outcome
            finally:
                self._unwatch(task_id, task_filter, collector)
        raise HypervisorError(f"task {task_id}: vCenter's property collector kept failing",
                              task_id=task_id, transient=True)

    def _watch(self, task: Any) -> tuple[int, Any, Any]:
        with self._cond:
            collector, epoch = self._collector, self._epoch
        if collector is None:
            made = self._content.propertyCollector.CreatePropertyCollector()
            with self._cond:
                if self._collector is None and self._epoch == epoch:
                    self._collector, self._version = made, ""
                    made = None
                collector, epoch = self._collector, self._epoch
            if made is not None:
                _quietly(made.DestroyPropertyCollector)
            if collector is None:  # dropped meanwhile: the caller's next round renews it
                return epoch, None, None
        with self._filter_calls:
            task_filter = collector.CreateFilter(PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=task, skip=False)],
                propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state"])],
            ), True)
        with self._cond:
            self._watching[ref_of(task)] = self._watching.get(ref_of(task), 0) + 1
        return epoch, collector, task_filter

    def _unwatch(self, task_id: str, task_filter: Any, collector: Any) -> None:
        with self._cond:
            left = self._watching.get(task_id, 0) - 1
            if left > 0:
                self._watching[task_id] = left
            else:
                self._watching.pop(task_id, None)
                self._seen.pop(task_id, None)
            current = collector is not None and self._collector is collector
        if task_filter is not None and current:
            with self._filter_calls:
                _quietly(task_filter.DestroyPropertyFilter)

    def _follow(self, task_id: str, epoch: int, deadline: float) -> bool | None:
        """True once the task's end is reported, False at the deadline, None when the
        collector was dropped (the filter is gone with it)."""
        with self._cond:
            while True:
                if self._epoch != epoch:
                    return None
                if self._seen.get(task_id) in _TASK_DONE:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._leading:
                    self._cond.wait(remaining)
                    continue
                self._leading = True
                collector, version = self._collector, self._version
                self._cond.release()
                update, failed = None, False
                try:
                    update = collector.WaitForUpdatesEx(version, PC.WaitOptions(
                        maxWaitSeconds=max(1, min(self._poll_s, int(remaining) + 1))))
                except vmodl.MethodFault as fault:
                    # The collector is gone (another login, vCenter restarted) or refused
                    # the wait: a new one is made and every task watched again.
                    log.warning("task collector failed (%s); making a new one",
                                _fault_name(fault))
                    failed = True
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
                if self._collector is not collector:
                    continue  # dropped while waiting; the epoch says so
                if failed:
                    self._drop()
                elif update is not None:
                    self._version = update.version
                    self._take(update)

    def _take(self, update: Any) -> None:
        for filter_set in update.filterSet:
            for change_set in filter_set.objectSet:
                ref = ref_of(change_set.obj)
                if ref not in self._watching:
                    continue
                if change_set.kind == "leave":  # the task is gone: read it to find out
                    self._seen[ref] = "error"
                for change in change_set.changeSet:
                    if change.name == "info.state":
                        self._seen[ref] = str(change.val)


def _quietly(call: Callable[[], Any]) -> None:
    """Clean-up whose failure changes nothing the caller needs: logged, not raised."""
    try:
        call()
    except (vmodl.MethodFault, OSError, http.client.HTTPException) as exc:
        log.debug("vCenter clean-up failed: %s", exc)


class VSphere:
    """One authenticated vCenter session, implementing ``shared.drivers.base.Hypervisor``.

    ``scope`` is the name of a further vCenter (``Settings.vcenters``; "" for the one of
    ``vcenter_url``). Every ref the session reports is ``scoped`` by it and every ref it is
    given must be: several vCenters hand out the same managed object ids (two simulators
    have identical inventories), and snapdeploy derives its ids of zones, hosts, pools,
    networks, VMs, their disks and snapshots from refs (``shared.domain.inventory``), so
    each vCenter's objects get ids of their own. The vCenter of ``vcenter_url`` reports
    vCenter's refs unchanged, so that its objects keep the ids they had before there could
    be several vCenters."""

    kind = KIND

    def __init__(self, service_instance: Any, executor: ThreadPoolExecutor,
                 call_timeout: float | None = None,
                 credentials: tuple[str, str] | None = None, scope: str = "") -> None:
        self._scope = scope
        self.scope = scope or None  # a further vCenter's name, as messages name the session
        self.si = service_instance
        # A task is waited for in long polls that must end before a call times out.
        self._poll_s = int(min(30, max(1, (call_timeout or 60) / 2)))
        self.content = service_instance.RetrieveContent()
        self._executor = executor
        self._tasks = _TaskCollector(self.content, self._poll_s)
        # Facts that do not change between deploys, read once per session.
        self._dcs: list[tuple[str, dict[str, Any]]] = []
        self._dc_of: dict[str, str] = {}  # object ref -> its datacenter's ref
        self._resource_pools: dict[str, str] = {}
        self._portgroup_map: dict[str, str] | None = None
        # Base snapshots whose linked clones turned out to have NICs of their own.
        self._nic_snapshots: set[str] = set()
        # With credentials, a session vCenter forgot is logged in again on first refusal.
        self._relogin = None if credentials is None else _Relogin(
            service_instance._stub, self.content.sessionManager, *credentials,
            on_login=self._forget_cached)

    def _forget_cached(self) -> None:
        """After a new login: vCenter may have restarted with another inventory."""
        self._dcs = []
        self._dc_of = {}
        self._resource_pools = {}
        self._portgroup_map = None
        self._nic_snapshots = set()
        self._tasks.reset()  # its collector was the old session's

    @classmethod
    async def connect(cls, url: str, user: str, password: str, *, verify_tls: bool = True,
                      threads: int = 16, call_timeout: float | None = None,
                      scope: str = "") -> VSphere:
        """Log in to the vCenter at ``url`` (``https://host[:port]/sdk``); each call then
        fails after ``call_timeout`` seconds without an answer. ``scope``: see the class."""
        parts = urlsplit(url)
        executor = ThreadPoolExecutor(threads, thread_name_prefix="vsphere")
        context = None if verify_tls else ssl._create_unverified_context()

        def login() -> Any:
            si = SmartConnect(
                host=parts.hostname, port=parts.port or 443, user=user, pwd=password,
                protocol=parts.scheme or "https", path=parts.path or "/sdk",
                sslContext=context, connectionPoolTimeout=30, httpConnectionTimeout=call_timeout,
            )
            # pyVmomi keeps 5 idle HTTPS connections and closes any other one after its
            # call: with more threads calling at once, each call over 5 opened a connection
            # (a TLS handshake, on both sides) and closed it. One kept per thread.
            si._stub.poolSize = threads
            return si

        loop = asyncio.get_running_loop()
        try:
            si = await loop.run_in_executor(executor, login)
            return await loop.run_in_executor(
                executor, lambda: cls(si, executor, call_timeout, (user, password), scope))
        except BaseException:
            executor.shutdown(wait=False)
            raise

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` on the session's threads. A call that vCenter did not answer
        (timeout, broken connection) raises a transient ``HypervisorError``: what it asked
        for may or may not have happened."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (OSError, http.client.HTTPException) as exc:
            raise HypervisorError(f"vCenter did not answer: {type(exc).__name__}: {exc}",
                                  transient=True) from exc

    async def check_session(self) -> None:
        """Ask vCenter whether this session is still logged in; log in again if not.

        Raises:
            SessionLost: the session is gone and logging in again failed.
            HypervisorError: vCenter did not answer (transient).
        """
        def check() -> None:
            generation = 0 if self._relogin is None else self._relogin.generation
            current = self._props(vim.SessionManager, ["currentSession"],
                                  self.content.sessionManager)
            if (not current or current[0][1].get("currentSession") is None) \
                    and self._relogin is not None:
                # A vCenter that lets an unauthenticated session read this says "none".
                self._relogin.log_in_again(generation, "no current session")

        await self.call(check)

    async def close(self) -> None:
        await self.call(Disconnect, self.si)
        self._executor.shutdown(wait=False)

    async def datacenters(self) -> list[str]:
        return await self.call(lambda: [p["name"] for _, p in self._datacenters()])

    # ---- blocking helpers (run on the executor) ----------------------------------------

    def _ref(self, obj: Any) -> str:
        """The ref this session reports for a managed object (``scoped``)."""
        return scoped(self._scope, ref_of(obj))

    def _raw(self, ref: str) -> str:
        """vCenter's own id of a ref this session reported.

        Raises:
            HypervisorError: ``ref`` is not one of this vCenter's (not transient).
        """
        if not self._scope:
            return ref
        scope, slash, raw = ref.partition("/")
        if not slash or scope != self._scope:
            raise HypervisorError(f"{ref!r} is not an object of vCenter {self._scope}")
        return raw

    def _unscoped(self, request: CloneRequest) -> CloneRequest:
        """``request`` with vCenter's own ids for this session's refs."""
        raw = self._raw
        return replace(
            request, template_ref=raw(request.template_ref),
            base_snapshot_ref=None if request.base_snapshot_ref is None
            else raw(request.base_snapshot_ref),
            host_ref=raw(request.host_ref), pool_ref=raw(request.pool_ref),
            networks=[replace(n, ref=raw(n.ref)) for n in request.networks])

    def _mo(self, ref: str) -> Any:
        raw = self._raw(ref)
        kind = _KINDS.get(raw.rsplit("-", 1)[0])
        if kind is None:
            raise HypervisorError(f"unknown vCenter object id {ref!r}")
        return kind(raw, self.si._stub)

    def _props(self, kind: Any, paths: list[str], obj: Any = None,
               root: Any = None) -> list[tuple[str, dict[str, Any]]]:
        """``paths`` of ``obj``, or of every ``kind`` below ``root`` (all of vCenter)."""
        view = None
        if obj is None:
            view = self.content.viewManager.CreateContainerView(
                root or self.content.rootFolder, [kind], True)
            spec_obj = PC.ObjectSpec(obj=view, skip=True, selectSet=[PC.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])
        else:
            spec_obj = PC.ObjectSpec(obj=obj, skip=False)
        try:
            result = self.content.propertyCollector.RetrieveContents([PC.FilterSpec(
                objectSet=[spec_obj], propSet=[PC.PropertySpec(type=kind, pathSet=paths)])])
        except vmodl.fault.ManagedObjectNotFound as exc:
            raise HypervisorError(f"vCenter object {self._ref(obj)} no longer exists") from exc
        finally:
            if view is not None:
                view.Destroy()
        return [(self._ref(r.obj), {p.name: p.val for p in r.propSet}) for r in result]

    def _one(self, ref: str, paths: list[str]) -> dict[str, Any]:
        obj = self._mo(ref)
        found = self._props(type(obj), paths, obj)
        if not found:
            raise HypervisorError(f"vCenter object {ref} not found")
        return found[0][1]

    def _wait(self, task: Any, what: str, also: dict[str, Any] | None = None) -> Any:
        """Wait for ``task``; its result, or raise.

        Its state is read at once, then again after a pause growing by ``POLL_GROWTH`` from
        ``POLL_FIRST_S`` up to ``POLL_CAP_S``; a task still running after ``POLL_PHASE_S``
        is followed by the session's task collector until it ends (``TASK_TIMEOUT_S`` at
        most). With ``also`` ({"ref": ..., "paths": [...]}), those properties of that
        object are read in the same call as the task's first state, and put in
        ``also["found"]``.
        """
        task_id = self._ref(task)
        started = time.monotonic()
        if also is None:
            info = self._task_info(task_id)
        else:
            info, also["found"] = self._task_info_and(task_id, also["ref"], also["paths"])
        pauses = poll_pauses()
        while info.get("info.state") not in _TASK_DONE:
            if time.monotonic() - started >= POLL_PHASE_S:
                info = self._follow(task, what, started + TASK_TIMEOUT_S)
                break
            time.sleep(next(pauses))
            info = self._task_info(task_id)
        if info.get("info.state") == "error":
            error = info.get("info.error")
            reason = getattr(error, "msg", None) or type(error).__name__
            raise HypervisorError(f"{what} failed (vCenter task {task_id}): {reason}",
                                  task_id=task_id, fault=_fault_name(error))
        return info.get("info.result")

    def _follow(self, task: Any, what: str, deadline: float) -> dict[str, Any]:
        """What ``_task_info`` reads once the task collector reports ``task`` ended."""
        task_id = self._ref(task)
        read: dict[str, Any] = {}

        def ended() -> bool:
            read.update(self._task_info(task_id))
            return read.get("info.state") in _TASK_DONE

        try:
            if not self._tasks.wait(task, ended, deadline):
                raise HypervisorError(f"{what}: task {task_id} did not finish within "
                                      f"{TASK_TIMEOUT_S}s", task_id=task_id, transient=True)
        except vmodl.MethodFault as fault:
            reason = getattr(fault, "msg", None) or _fault_name(fault)
            raise HypervisorError(f"{what}: waiting for vCenter task {task_id} failed: "
                                  f"{reason}", task_id=task_id, transient=True,
                                  fault=_fault_name(fault)) from fault
        return read if read.get("info.state") in _TASK_DONE else self._task_info(task_id)

    def _task_info(self, task_id: str) -> dict[str, Any]:
        """A task's state, error and result, in one read."""
        return self._one(task_id, _TASK_PATHS)

    def _task_info_and(self, task_id: str, ref: str,
                       paths: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``_task_info``, and ``paths`` of the object ``ref``, in one read."""
        task, obj = self._mo(task_id), self._mo(ref)
        try:
            result = self.content.propertyCollector.RetrieveContents([
                PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=task, skip=False)],
                              propSet=[PC.PropertySpec(type=vim.Task, pathSet=_TASK_PATHS)]),
                PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
                              propSet=[PC.PropertySpec(type=type(obj), pathSet=paths)])])
        except vmodl.fault.ManagedObjectNotFound as exc:
            raise HypervisorError(f"vCenter object {ref} or task {task_id} no longer exists"
                                  ) from exc
        found = {self._ref(r.obj): {p.name: p.val for p in r.propSet} for r in result}
        if task_id not in found or ref not in found:
            raise HypervisorError(f"vCenter object {ref} or task {task_id} not found")
        return found[task_id], found[ref]

    def _run(self, start: Callable[[], Any], what: str,
             also: dict[str, Any] | None = None) -> tuple[str, Any]:
        try:
            task = start()
        except vmodl.MethodFault as fault:
            reason = getattr(fault, "msg", None) or type(fault).__name__
            raise HypervisorError(f"{what} was refused: {reason}",
                                  fault=_fault_name(fault)) from fault
        return self._ref(task), self._wait(task, what, also)

    def _datacenters(self) -> list[tuple[str, dict[str, Any]]]:
        if not self._dcs:
            self._dcs = self._props(vim.Datacenter, ["name", "vmFolder", "datastore"])
            if not self._dcs:
                raise HypervisorError("vCenter has no datacenter")
        return self._dcs

    def _datacenter_of(self, ref: str) -> tuple[str, dict[str, Any]]:
        """The datacenter a VM (or any inventory object) is in: up its parents."""
        if ref not in self._dc_of:
            obj = self._mo(ref)
            while not isinstance(obj, vim.Datacenter):
                parent = self._props(type(obj), ["parent"], obj)[0][1].get("parent")
                if parent is None:
                    raise HypervisorError(f"vCenter object {ref} is in no datacenter")
                obj = parent
            self._dc_of[ref] = self._ref(obj)
        return next(dc for dc in self._datacenters() if dc[0] == self._dc_of[ref])

    def _portgroups(self, refresh: bool = False) -> dict[str, str]:
        """Distributed port group key (and standard network name) → network ref."""
        if self._portgroup_map is None or refresh:
            out = {p["name"]: ref for ref, p in self._props(vim.Network, ["name"])}
            out.update({p["key"]: ref for ref, p in
                        self._props(vim.dvs.DistributedVirtualPortgroup, ["key"])})
            self._portgroup_map = out
        return self._portgroup_map

    def _resource_pool(self, host_ref: str) -> str:
        if host_ref not in self._resource_pools:
            compute = self._one(host_ref, ["parent"])["parent"]
            self._resource_pools[host_ref] = self._ref(self._props(
                vim.ComputeResource, ["resourcePool"], compute)[0][1]["resourcePool"])
        return self._resource_pools[host_ref]

    # ---- inventory ---------------------------------------------------------------------

    async def inventory(self) -> list[Inventory]:
        """One inventory per datacenter (a zone each)."""
        return await self.call(lambda: [self._inventory(ref, dc)
                                        for ref, dc in self._datacenters()])

    def _inventory(self, dc_ref: str, dc: dict[str, Any]) -> Inventory:
        root = self._mo(dc_ref)
        parents = {ref: p["name"] for ref, p in self._props(vim.ComputeResource, ["name"],
                                                            root=root)}
        hosts = [
            HostInfo(ref, p["name"], parents.get(self._ref(p["parent"]), ""),
                     int(p["summary.hardware.numCpuCores"]), int(p["summary.hardware.cpuMhz"]),
                     int(p["summary.hardware.memorySize"]),
                     sorted(self._ref(d) for d in p.get("datastore", [])))
            for ref, p in self._props(vim.HostSystem, [
                "name", "parent", "summary.hardware.numCpuCores", "summary.hardware.cpuMhz",
                "summary.hardware.memorySize", "datastore"], root=root)
        ]
        pools = [
            PoolInfo(ref, p["name"], p["summary.url"], int(p["summary.capacity"]),
                     int(p["summary.freeSpace"]),
                     sorted(self._ref(m.key) for m in p.get("host", [])))
            for ref, p in self._props(vim.Datastore, [
                "name", "summary.url", "summary.capacity", "summary.freeSpace", "host"],
                root=root)
        ]
        switches = {ref: p["uuid"] for ref, p in
                    self._props(vim.DistributedVirtualSwitch, ["uuid"], root=root)}
        dvpgs = {ref: p for ref, p in self._props(vim.dvs.DistributedVirtualPortgroup, [
            "key", "config.distributedVirtualSwitch", "tag"], root=root)}
        networks = []
        for ref, p in self._props(vim.Network, ["name"], root=root):
            pg = dvpgs.get(ref)
            if pg is None:
                networks.append(NetworkInfo(ref, p["name"]))
            elif not any(t.key == "SYSTEM/DVS.UPLINKPG" for t in pg.get("tag", [])) \
                    and "DVUplinks" not in p["name"]:
                switch = switches.get(self._ref(pg["config.distributedVirtualSwitch"]))
                networks.append(NetworkInfo(ref, p["name"], None if switch is None
                                            else dvs_binding(switch, pg["key"])))
        portgroups = self._portgroups(refresh=True)
        vms = [self._vm_info(ref, p, portgroups) for ref, p in self._props(vim.VirtualMachine, [
            "name", "config.uuid", "config.template", "runtime.host", "config.hardware.numCPU",
            "config.hardware.memoryMB", "runtime.powerState", "config.hardware.device",
            "snapshot"], root=root)]
        return Inventory(dc_ref, dc["name"], hosts, pools, networks, vms)

    def _vm_info(self, ref: str, p: dict[str, Any], portgroups: dict[str, str]) -> VmInfo:
        devices = p.get("config.hardware.device", [])
        snapshots: list[SnapshotInfo] = []
        tree = p.get("snapshot")
        if tree is not None:
            self._walk(tree.rootSnapshotList, None, snapshots, portgroups)
        host = p.get("runtime.host")
        return VmInfo(
            ref=ref, name=p["name"], uuid=p.get("config.uuid") or ref,
            template=bool(p.get("config.template")),
            host_ref=self._ref(host) if host is not None else None,
            cpu_number=int(p.get("config.hardware.numCPU", 1)),
            memory_mb=int(p.get("config.hardware.memoryMB", 0)),
            powered_on=p.get("runtime.powerState") == "poweredOn",
            disks=[_disk_info(d, self._scope) for d in _disks(devices)],
            nics=_nics(devices, portgroups, self._scope),
            snapshots=snapshots,
            current_snapshot_ref=self._ref(tree.currentSnapshot)
            if tree is not None and tree.currentSnapshot is not None else None,
        )

    def _walk(self, nodes: Sequence[Any], parent: str | None, out: list[SnapshotInfo],
              portgroups: dict[str, str]) -> None:
        for node in nodes:
            out.append(self._snapshot(node, parent, portgroups))
            self._walk(node.childSnapshotList, self._ref(node.snapshot), out, portgroups)

    def _snapshot(self, node: Any, parent: str | None, portgroups: dict[str, str]) -> SnapshotInfo:
        # GetVmSnapshotConfigs: the VM's configuration frozen at snapshot time.
        config = self._one(self._ref(node.snapshot), ["config.hardware.numCPU",
                                                    "config.hardware.memoryMB",
                                                    "config.hardware.device"])
        devices = config.get("config.hardware.device", [])
        return SnapshotInfo(
            ref=self._ref(node.snapshot), name=node.name, description=node.description or "",
            created=node.createTime, memory=node.state == "poweredOn", parent_ref=parent,
            cpu_number=int(config["config.hardware.numCPU"]),
            memory_mb=int(config["config.hardware.memoryMB"]),
            disks=[_disk_info(d, self._scope) for d in _disks(devices)],
            nics=_nics(devices, portgroups, self._scope),
        )

    # ---- seeding a template from a snapshot ----------------------------------------------

    async def seed_template(self, vm_ref: str, snapshot_ref: str, pool_ref: str,
                            name: str) -> Seeded:
        return await self.call(self._seed, vm_ref, snapshot_ref, pool_ref, name)

    def _seed(self, vm_ref: str, snapshot_ref: str, pool_ref: str, name: str) -> Seeded:
        existing = self._find(name)
        if existing is not None:
            found = self._one(existing, ["config.template", "snapshot", "config.hardware.device"])
            tree = found.get("snapshot")
            if found.get("config.template") and tree is not None and tree.rootSnapshotList:
                root = _disks(found["config.hardware.device"])[0]
                return Seeded(existing, self._ref(tree.rootSnapshotList[0].snapshot),
                              root.backing.fileName, [])
            self._destroy(existing)  # a seed interrupted half-way: start again
        _, dc = self._datacenter_of(vm_ref)
        devices = self._one(snapshot_ref, ["config.hardware.device"])["config.hardware.device"]
        spec = seed_spec(self._raw(snapshot_ref), self._raw(pool_ref), devices)
        source = self._mo(vm_ref)
        clone_task, template = self._run(
            lambda: source.CloneVM_Task(folder=dc["vmFolder"], name=name, spec=spec),
            f"full clone of snapshot {snapshot_ref} to {name}")
        try:
            snap_task, base = self._run(
                lambda: template.CreateSnapshot_Task(BASE_SNAPSHOT, "base of linked clones",
                                                     False, False),
                f"base snapshot of {name}")
            template.MarkAsTemplate()
            root = _disks(self._one(self._ref(template), ["config.hardware.device"])
                          ["config.hardware.device"])[0]
        except BaseException:
            self._destroy(self._ref(template))
            raise
        return Seeded(self._ref(template), self._ref(base), root.backing.fileName,
                      [clone_task, snap_task])

    # ---- deploying a clone ---------------------------------------------------------------

    async def clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        await self.call(self._clone, request, progress)

    def _clone(self, request: CloneRequest, progress: CloneProgress) -> None:
        # The VM goes in the folder of the datacenter of the host it lands on: learned once
        # per host (a new template's would be two more calls on its first deploy).
        _, dc = self._datacenter_of(request.host_ref)
        template = self._mo(request.template_ref)
        # A linked clone gets its template's base snapshot's devices, and a seeded template's
        # has no NICs (``seed_spec``): none to remove, so its devices are not read first.
        # (A full clone has the template's as they are now: read.)
        base = request.base_snapshot_ref if request.linked else None
        bare = base is not None and base not in self._nic_snapshots
        resource_pool = self._raw(self._resource_pool(request.host_ref))
        request = self._unscoped(request)  # vCenter's own ids in the specs
        spec = clone_spec(request, resource_pool)

        def clone() -> tuple[str, Any]:
            return self._run(
                lambda: template.CloneVM_Task(folder=dc["vmFolder"], name=request.name,
                                              spec=spec),
                f"clone of {request.name} from template {request.template_ref}")

        try:
            task, vm = clone()
        except HypervisorError as exc:
            leftover = self._find(request.name) if exc.fault == "DuplicateName" else None
            if leftover is None:
                raise
            self._destroy(leftover)  # an earlier attempt died half-way: start again
            task, vm = clone()
        progress.operations[CLONE] = task
        progress.vm_ref = self._ref(vm)
        devices = [] if bare else self._one(progress.vm_ref, ["config.hardware.device"])[
            "config.hardware.device"]
        reconfigure = reconfigure_spec(request, devices)
        progress.operations[RECONFIGURE], _ = self._run(
            lambda: vm.ReconfigVM_Task(reconfigure), f"reconfigure of {request.name}")
        # The devices as reconfigured (the NICs' keys and MAC addresses vCenter gave them),
        # read with the power-on task's first state.
        read: dict[str, Any] = {"ref": progress.vm_ref, "paths": ["config.hardware.device"]}
        progress.operations[POWER_ON], _ = self._run(vm.PowerOnVM_Task,
                                                     f"power-on of {request.name}", read)
        reconfigured = read["found"].get("config.hardware.device") or []
        progress.nics = _nics(reconfigured, self._portgroups(), self._scope)
        if len(progress.nics) != len(request.networks):
            wrong = (f"clone of {request.name} has {len(progress.nics)} NICs where "
                     f"{len(request.networks)} were asked for")
            if base is None or not bare:
                raise HypervisorError(wrong)
            # NICs of its own after all (a template snapdeploy did not seed, or a vCenter
            # that clones the template as it is now): the clones of this base snapshot have
            # their devices read from now on, and this one, not left running with a NIC no
            # one asked for, is made again.
            self._nic_snapshots.add(base)
            self._destroy(progress.vm_ref)
            raise HypervisorError(f"{wrong}: its template {request.template_ref} has NICs of "
                                  "its own; cloning it again", transient=True)
        disks = _disks(reconfigured)
        progress.root_disk = _disk_info(disks[0], self._scope) if disks else None

    async def find_vm(self, name: str) -> str | None:
        return await self.call(self._find, name)

    def _find(self, name: str) -> str | None:
        """The VM or template called ``name``, read with the property collector (as
        CloudStack's VMware plugin does). Not SearchIndex.FindChild: vcsim's FindChild can
        meet a VM still being created and then leaves the SearchIndex locked for good."""
        for ref, p in self._props(vim.VirtualMachine, ["name"]):
            if p.get("name") == name:
                return ref
        return None

    async def destroy_vm(self, ref: str) -> str | None:
        return await self.call(self._destroy, ref)

    def _destroy(self, ref: str) -> str | None:
        vm = self._mo(ref)
        try:
            state = self._one(ref, ["runtime.powerState"]).get("runtime.powerState")
        except HypervisorError:
            return None  # already gone
        if state == "poweredOn":
            try:
                self._run(vm.PowerOffVM_Task, f"power-off of {ref}")
            except HypervisorError:
                pass  # destroying it anyway
        task_id, _ = self._run(vm.Destroy_Task, f"destroy of {ref}")
        return task_id

    async def power_off(self, ref: str) -> str | None:
        def off() -> str | None:
            state = self._one(ref, ["runtime.powerState"]).get("runtime.powerState")
            if state != "poweredOn":
                return None
            task_id, _ = self._run(self._mo(ref).PowerOffVM_Task, f"power-off of {ref}")
            return task_id

        return await self.call(off)

    async def reconfigure(self, vm_ref: str, cpu_number: int, memory_mb: int) -> str | None:
        def reconfig() -> str | None:
            found = self._one(vm_ref, ["runtime.powerState", "config.hardware.numCPU",
                                       "config.hardware.memoryMB"])
            if found.get("runtime.powerState") == "poweredOn":
                raise HypervisorError(f"VM {vm_ref} is powered on; its CPUs and memory "
                                      "change while it is off")
            if (found.get("config.hardware.numCPU"), found.get("config.hardware.memoryMB")) \
                    == (cpu_number, memory_mb):
                return None
            task_id, _ = self._run(lambda: self._mo(vm_ref).ReconfigVM_Task(vim.vm.ConfigSpec(
                numCPUs=cpu_number, memoryMB=memory_mb)), f"reconfigure of {vm_ref}")
            return task_id

        return await self.call(reconfig)

    async def power_on(self, ref: str) -> str | None:
        def on() -> str | None:
            state = self._one(ref, ["runtime.powerState"]).get("runtime.powerState")
            if state == "poweredOn":
                return None
            task_id, _ = self._run(self._mo(ref).PowerOnVM_Task, f"power-on of {ref}")
            return task_id

        return await self.call(on)

    async def reboot(self, ref: str) -> str:
        def reset() -> str:
            task_id, _ = self._run(self._mo(ref).ResetVM_Task, f"reset of {ref}")
            return task_id

        return await self.call(reset)

    # ---- virtual disks -------------------------------------------------------------------

    async def copy_volume(self, source: str, pool_ref: str, dest: str) -> str:
        source_path, dest_path = source, dest

        def copy() -> str:
            dc = self._mo(self._datacenter_of(pool_ref)[0])
            self._make_folder(dest_path, dc)
            manager = self.content.virtualDiskManager
            task_id, _ = self._run(
                lambda: manager.CopyVirtualDisk_Task(
                    sourceName=source_path, sourceDatacenter=dc, destName=dest_path,
                    destDatacenter=dc, force=False),
                f"copy of {source_path} to {dest_path}")
            return task_id

        return await self.call(copy)

    def _make_folder(self, file_path: str, dc: Any) -> None:
        """The datastore folder ``file_path`` ("[pool] dir/file.vmdk") will be in."""
        try:
            self.content.fileManager.MakeDirectory(
                name=file_path.rsplit("/", 1)[0], datacenter=dc, createParentDirectories=True)
        except vim.fault.FileAlreadyExists:
            pass

    def _device(self, vm_ref: str, path: str) -> Any:
        devices = self._one(vm_ref, ["config.hardware.device"])["config.hardware.device"]
        for disk in _disks(devices):
            if disk.backing.fileName == path:
                return disk
        raise HypervisorError(f"VM {vm_ref} has no disk {path}")

    async def attach_volume(self, vm_ref: str, location: str, *,
                            create_bytes: int | None = None) -> tuple[str, str | None]:
        path = location

        def attach() -> tuple[str, str | None]:
            disks = _disks(self._one(vm_ref, ["config.hardware.device"])[
                "config.hardware.device"])
            if not disks:
                raise HypervisorError(f"VM {vm_ref} has no disk controller to attach to")
            there = next((d for d in disks if d.backing.fileName == path), None)
            if there is not None:
                return str(there.key), None
            controller = disks[0].controllerKey
            used = {d.unitNumber for d in disks if d.controllerKey == controller} | {7}
            unit = next(u for u in range(16) if u not in used)
            disk = vim.vm.device.VirtualDisk(
                key=-1, controllerKey=controller, unitNumber=unit,
                backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                    fileName=path, diskMode="persistent",
                    thinProvisioned=True if create_bytes else None))
            change = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
            if create_bytes:
                disk.capacityInKB = create_bytes // 1024
                change.fileOperation = vim.vm.device.VirtualDeviceSpec.FileOperation.create
                self._make_folder(path, self._mo(self._datacenter_of(vm_ref)[0]))
            vm = self._mo(vm_ref)
            task_id, _ = self._run(
                lambda: vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])),
                f"{'creating and ' if create_bytes else ''}attaching {path} to {vm_ref}")
            return str(self._device(vm_ref, path).key), task_id

        return await self.call(attach)

    async def delete_volume(self, location: str, pool_ref: str) -> str | None:
        path = location

        def delete() -> str | None:
            dc = self._mo(self._datacenter_of(pool_ref)[0])
            manager = self.content.virtualDiskManager
            try:
                task_id, _ = self._run(
                    lambda: manager.DeleteVirtualDisk_Task(name=path, datacenter=dc),
                    f"deleting {path}")
            except HypervisorError as exc:
                if exc.fault in ("FileNotFound", "NotFound"):
                    return None
                raise
            return task_id

        return await self.call(delete)

    async def detach_volume(self, vm_ref: str, location: str, *,
                            missing_ok: bool = False) -> str | None:
        path = location

        def detach() -> str | None:
            try:
                disk = self._device(vm_ref, path)
            except HypervisorError:
                if missing_ok:
                    return None
                raise
            vm = self._mo(vm_ref)
            task_id, _ = self._run(lambda: vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[
                vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)])),
                f"detach of {path} from {vm_ref}")
            return task_id

        return await self.call(detach)

    async def resize_volume(self, vm_ref: str | None, location: str, size_bytes: int,
                            pool_ref: str) -> str:
        path = location

        def resize() -> str:
            if vm_ref is None:
                manager = self.content.virtualDiskManager
                task_id, _ = self._run(lambda: manager.ExtendVirtualDisk_Task(
                    name=path, datacenter=self._mo(self._datacenter_of(pool_ref)[0]),
                    newCapacityKb=size_bytes // 1024, eagerZero=False),
                    f"extension of {path}")
                return task_id
            disk = self._device(vm_ref, path)
            disk.capacityInKB = size_bytes // 1024
            disk.capacityInBytes = size_bytes
            vm = self._mo(vm_ref)
            task_id, _ = self._run(lambda: vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[
                vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])),
                f"resize of {path} on {vm_ref}")
            return task_id

        return await self.call(resize)

    async def vm_powered_on(self, vm_ref: str) -> bool:
        state = await self.call(self._one, vm_ref, ["runtime.powerState"])
        return bool(state.get("runtime.powerState") == "poweredOn")

    # ---- VM snapshots ------------------------------------------------------------------

    async def create_snapshot(self, vm_ref: str, name: str, description: str, memory: bool,
                              quiesce: bool) -> tuple[str, str]:
        def take() -> tuple[str, str]:
            vm = self._mo(vm_ref)
            task_id, snapshot = self._run(
                lambda: vm.CreateSnapshot_Task(name, description, memory, quiesce),
                f"snapshot {name!r} of {vm_ref}")
            return self._ref(snapshot), task_id

        return await self.call(take)

    async def snapshot_info(self, vm_ref: str, snapshot_ref: str) -> SnapshotInfo:
        def find() -> SnapshotInfo:
            tree = self._one(vm_ref, ["snapshot"]).get("snapshot")
            out: list[SnapshotInfo] = []
            if tree is not None:
                self._walk(tree.rootSnapshotList, None, out, self._portgroups())
            for info in out:
                if info.ref == snapshot_ref:
                    return info
            raise HypervisorError(f"snapshot {snapshot_ref} not found on {vm_ref}")

        return await self.call(find)

    async def remove_snapshot(self, snapshot_ref: str) -> str:
        def remove() -> str:
            snapshot = self._mo(snapshot_ref)
            task_id, _ = self._run(lambda: snapshot.RemoveSnapshot_Task(False),
                                   f"removal of snapshot {snapshot_ref}")
            return task_id

        return await self.call(remove)

    async def revert_snapshot(self, snapshot_ref: str) -> str:
        def revert() -> str:
            snapshot = self._mo(snapshot_ref)
            task_id, _ = self._run(lambda: snapshot.RevertToSnapshot_Task(),
                                   f"revert to snapshot {snapshot_ref}")
            return task_id

        return await self.call(revert)
