"""Hypervisor drivers, one module per hypervisor, all behind ``base.Hypervisor``.

``KINDS`` is the registry of driver kinds: ``vmware`` (VMware vSphere through pyvmomi) and
``kvm`` (KVM through libvirt and qemu-img); ``shared.drivers.fake`` is an in-memory driver
for tests. A deployment may hold zones of several kinds at once: ``connections()`` names
every session the settings ask for (one per vCenter, of ``vcenter_url`` and of
``vcenters``; one per KVM zone of ``kvm_zones``), ``Runtime.hypervisors()`` opens them
into a ``zones.Hypervisors``, which hands each zone's work to the session that owns the
zone. The gateway renders a zone's
hypervisor facts from the kind its import recorded (``for_zone()``).
"""

from __future__ import annotations

import functools

from proto.events import LEGACY_DRIVER_KIND
from shared.config import Settings
from shared.drivers.base import Connection, DriverKind

# The kind of a zone whose import recorded none: every zone was a vCenter datacenter then.
LEGACY_KIND = LEGACY_DRIVER_KIND  # a zone imported before zones had kinds: a datacenter


@functools.cache
def kinds() -> dict[str, DriverKind]:
    """The registry of driver kinds, by name. Their modules are imported on first use: a
    process that drives no hypervisor (the projector, a rebuild's helper) does not pay
    the tenth of a second pyVmomi's and libvirt's imports take."""
    from shared.drivers import libvirt, vmware

    return {kind.name: kind for kind in (vmware.KIND, libvirt.KIND)}


@functools.cache
def _test_kinds() -> dict[str, DriverKind]:
    """Kinds a zone may have been recorded with besides the product's: the in-memory fakes
    of the tests, so that what they import renders too."""
    from shared.drivers import fake

    return {k.name: k for k in (fake.KIND, fake.OTHER_KIND)}


class NoHypervisor(ValueError):
    """The settings name no hypervisor to connect to."""


def kind(name: str) -> DriverKind:
    """The driver kind registered as ``name``."""
    try:
        return kinds()[name]
    except KeyError:
        raise ValueError(f"no hypervisor driver {name!r}; known: {', '.join(sorted(kinds()))}") \
            from None


def connections(settings: Settings) -> list[Connection]:
    """Every hypervisor session the settings ask for, vCenter's first.

    Raises:
        NoHypervisor: neither a vCenter (``vcenter_url``, ``vcenters``) nor a KVM zone
            (``kvm_zones``) is configured.
        ValueError: ``kvm_zones`` or ``vcenters`` is malformed (the message names the bad
            part).
    """
    wanted = [c for k in kinds().values() for c in k.connections(settings)]
    if not wanted:
        raise NoHypervisor("no hypervisor is configured: set SNAPDEPLOY_VCENTER_URL (a "
                           "vCenter; SNAPDEPLOY_VCENTERS for more) or SNAPDEPLOY_KVM_ZONES "
                           "(KVM zones through libvirt, "
                           "\"<zone>: <host>=<libvirt URI>, ...\"), or both")
    return wanted


def for_zone(zone_kind: str | None) -> DriverKind:
    """The driver kind of a zone, from the kind its inventory import recorded
    (``ZoneImported.driver_kind``; None: imported before zones recorded one, when every
    zone was a vCenter datacenter)."""
    name = zone_kind or LEGACY_KIND
    found = kinds().get(name) or _test_kinds().get(name)
    if found is None:
        raise ValueError(f"a zone of hypervisor kind {name!r}, which this snapdeploy does not "
                         f"know (known: {', '.join(sorted(kinds()))})")
    return found


__all__ = ["LEGACY_KIND", "Connection", "DriverKind", "NoHypervisor", "connections",
           "for_zone", "kind", "kinds"]
