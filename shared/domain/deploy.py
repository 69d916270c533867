"""Deploying a VM from a VM snapshot (or a known template): what is checked before any
work, and where the VM goes. Pure functions over plain views of what the event store
holds (``shared.eventstore.Repository.deploy_inputs`` loads them)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from shared.domain.access import visible_to
from shared.domain.vm import valid_hostname
from shared.errors import INSUFFICIENT_CAPACITY, PARAM_ERROR, ApiError


class Rejected(ApiError):
    """A deploy rule refused the request; ``text`` names the parameter and the reason."""


def invalid(param: str, reason: str) -> Rejected:
    return Rejected(PARAM_ERROR, f"invalid parameter {param}: {reason}")


@dataclass(frozen=True)
class SnapshotView:
    id: str
    vm_id: str
    account_id: str | None
    zone_id: str
    cpu_number: int
    memory_mb: int
    root_pool_id: str | None
    root_template_id: str | None
    root_disk_offering_id: str | None
    network_ids: list[str]


@dataclass(frozen=True)
class TemplateView:
    """A seeded template; it belongs to the owner of the VM snapshot it was seeded from."""

    id: str
    account_id: str | None
    zone_id: str
    pool_id: str


@dataclass(frozen=True)
class OfferingView:
    id: str
    name: str
    cpu_number: int
    cpu_speed: int
    memory_mb: int


@dataclass(frozen=True)
class HostView:
    id: str
    name: str
    zone_id: str
    pool_ids: list[str]
    cpu_mhz_total: int
    memory_mb_total: int
    reserved_cpu_mhz: int = 0
    reserved_memory_mb: int = 0
    version: int = 0

    @property
    def cpu_mhz_free(self) -> int:
        return self.cpu_mhz_total - self.reserved_cpu_mhz

    @property
    def memory_mb_free(self) -> int:
        return self.memory_mb_total - self.reserved_memory_mb


@dataclass(frozen=True)
class DeployInputs:
    """What a deploy request names, for ``check_deploy`` (who may use the snapshot or the
    template is its to decide, from the owner each view carries)."""

    snapshot: SnapshotView | None
    template: TemplateView | None
    offering: OfferingView | None
    host: HostView | None
    known_networks: set[str]


@dataclass(frozen=True)
class DeploySource:
    """What a valid request deploys from, and what the new VM inherits (spec items 8-10)."""

    zone_id: str
    pool_id: str
    network_ids: list[str]
    source_vm_id: str | None
    root_template_id: str | None
    disk_offering_id: str | None


def check_deploy(
    *,
    account_id: str,
    is_admin: bool,
    vm_snapshot_id: str | None,
    template_id: str | None,
    snapshot: SnapshotView | None,
    template: TemplateView | None,
    offering: OfferingView | None,
    offering_id: str,
    host_id: str | None,
    host: HostView | None,
    network_ids: list[str],
    known_networks: set[str],
    name: str | None,
) -> DeploySource:
    """Every check the spec names, in the order a user would fix them.

    Raises:
        Rejected: with code 431 and a text naming the parameter and the reason.
    """
    if vm_snapshot_id is None and template_id is None:
        raise Rejected(PARAM_ERROR, "missing parameter vmsnapshotid or templateid: name the VM "
                       "snapshot (vmsnapshotid) or the seeded template (templateid) to deploy "
                       "from")
    if vm_snapshot_id is not None and template_id is not None:
        raise Rejected(PARAM_ERROR, "Please provide only one of the following parameters - "
                       "template ID or VM snapshot ID (vmsnapshotid or templateid)")
    if name is not None and not valid_hostname(name):
        raise invalid("name", f"{name[:64]!r} is not a valid host name: use letters, digits "
                      "and '-', start with a letter, 63 characters at most")
    if offering is None:
        raise invalid("serviceofferingid", f"no service offering {offering_id} exists")

    if vm_snapshot_id is not None:
        if snapshot is None or not visible_to(snapshot.account_id, account_id, is_admin):
            raise invalid("vmsnapshotid", f"no VM snapshot {vm_snapshot_id} is visible to "
                          "your account")
        if offering.cpu_number != snapshot.cpu_number:
            raise invalid("serviceofferingid", f"offering {offering.name} has "
                          f"{offering.cpu_number} CPU(s) but VM snapshot {snapshot.id} was taken "
                          f"with {snapshot.cpu_number} virtual CPU(s); choose an offering with "
                          f"{snapshot.cpu_number}")
        if snapshot.root_pool_id is None:
            raise invalid("vmsnapshotid", f"VM snapshot {snapshot.id} has no root disk to "
                          "deploy from")
        source = DeploySource(
            zone_id=snapshot.zone_id, pool_id=snapshot.root_pool_id,
            network_ids=network_ids or snapshot.network_ids, source_vm_id=snapshot.vm_id,
            root_template_id=snapshot.root_template_id,
            disk_offering_id=snapshot.root_disk_offering_id,
        )
    else:
        if template is None or not visible_to(template.account_id, account_id, is_admin):
            raise invalid("templateid", f"no template {template_id} is visible to your account")
        source = DeploySource(zone_id=template.zone_id, pool_id=template.pool_id,
                              network_ids=network_ids, source_vm_id=None,
                              root_template_id=template.id, disk_offering_id=None)

    if host_id is not None:
        if host is None:
            raise invalid("hostid", f"no host {host_id} exists")
        if source.pool_id not in host.pool_ids:
            raise invalid("hostid", f"host {host.name} cannot reach primary storage pool "
                          f"{source.pool_id} that holds the root volume to deploy from")
    for network_id in source.network_ids:
        if network_id not in known_networks:
            raise invalid("networkids", f"no network {network_id} exists in zone "
                          f"{source.zone_id}")
    return source


SPREAD = 4


def choose_host(hosts: list[HostView], pool_id: str, cpu_mhz: int, memory_mb: int,
                wanted: str | None = None, spread_key: str | None = None) -> HostView:
    """The host to place a VM on: it reaches ``pool_id`` and has room; the one with the
    most free memory wins (ties by id, so the choice is repeatable). With ``spread_key``
    (the VM's id) the pick is among the ``SPREAD`` roomiest, by the key: deploys decided
    at the same moment then rarely contend for one host's capacity stream.

    Raises:
        Rejected: 533 with the reason when no host qualifies.
    """
    reaching = [h for h in hosts if pool_id in h.pool_ids and (wanted is None or h.id == wanted)]
    if not reaching:
        raise Rejected(INSUFFICIENT_CAPACITY, f"no host can reach primary storage pool {pool_id}"
                       + (f" among the requested host {wanted}" if wanted else ""))
    roomy = [h for h in reaching if h.cpu_mhz_free >= cpu_mhz and h.memory_mb_free >= memory_mb]
    if not roomy:
        best = max(reaching, key=lambda h: h.memory_mb_free)
        raise Rejected(INSUFFICIENT_CAPACITY, f"no host that reaches pool {pool_id} has room for "
                       f"{cpu_mhz} MHz and {memory_mb} MB (most free: {best.name} with "
                       f"{best.cpu_mhz_free} MHz and {best.memory_mb_free} MB)")
    ranked = sorted(roomy, key=lambda h: (-h.memory_mb_free, h.id))
    if spread_key is None:
        return ranked[0]
    top = ranked[:SPREAD]
    return top[zlib.crc32(spread_key.encode()) % len(top)]
