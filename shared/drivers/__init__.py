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

from proto.events import LEGACY_DRIVER_KIND
from shared.config import Settings
from shared.drivers import fake, libvirt, vmware
from shared.drivers.base import Connection, DriverKind

KINDS: dict[str, DriverKind] = {kind.name: kind for kind in (vmware.KIND, libvirt.KIND)}
# Kinds a zone may have been recorded with besides the product's: the in-memory fakes of
# the tests, so that what they import renders too.
_TEST_KINDS: dict[str, DriverKind] = {k.name: k for k in (fake.KIND, fake.OTHER_KIND)}
# The kind of a zone whose import recorded none: every zone was a vCenter datacenter then.
LEGACY_KIND = LEGACY_DRIVER_KIND  # a zone imported before zones had kinds: a datacenter
assert LEGACY_KIND == vmware.KIND.name


class NoHypervisor(ValueError):
    """The settings name no hypervisor to connect to."""


def kind(name: str) -> DriverKind:
    """The driver kind registered as ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"no hypervisor driver {name!r}; known: {', '.join(sorted(KINDS))}") \
            from None


def connections(settings: Settings) -> list[Connection]:
    """Every hypervisor session the settings ask for, vCenter's first.

    Raises:
        NoHypervisor: neither a vCenter (``vcenter_url``, ``vcenters``) nor a KVM zone
            (``kvm_zones``) is configured.
        ValueError: ``kvm_zones`` or ``vcenters`` is malformed (the message names the bad
            part).
    """
    wanted = [c for k in KINDS.values() for c in k.connections(settings)]
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
    found = KINDS.get(name) or _TEST_KINDS.get(name)
    if found is None:
        raise ValueError(f"a zone of hypervisor kind {name!r}, which this snapdeploy does not "
                         f"know (known: {', '.join(sorted(KINDS))})")
    return found


__all__ = ["KINDS", "LEGACY_KIND", "Connection", "DriverKind", "NoHypervisor", "connections",
           "for_zone", "kind"]
