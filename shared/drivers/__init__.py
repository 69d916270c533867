"""Hypervisor drivers, one module per hypervisor, all behind ``base.Hypervisor``.

``KINDS`` is the registry of driver kinds: ``vmware`` (VMware vSphere through pyvmomi) and
``kvm`` (KVM through libvirt and qemu-img); ``shared.drivers.fake`` is an in-memory driver
for tests. Services get their
session from ``Runtime.vcenter()``, which connects to the kind ``configured()`` names; the
gateway renders a zone's hypervisor facts from ``for_zone()``.
"""

from __future__ import annotations

from shared.config import Settings
from shared.drivers import libvirt, vmware
from shared.drivers.base import DriverKind

KINDS: dict[str, DriverKind] = {kind.name: kind for kind in (vmware.KIND, libvirt.KIND)}


def kind(name: str) -> DriverKind:
    """The driver kind registered as ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"no hypervisor driver {name!r}; known: {', '.join(sorted(KINDS))}") \
            from None


def configured(settings: Settings) -> DriverKind:
    """The kind of hypervisor the settings connect to: the one whose settings are given.
    Only vCenter's (``vcenter_*``) exist so far, and they are also the default (an embedded
    vcsim)."""
    del settings  # every setting names vCenter until a second kind brings its own
    return kind(vmware.KIND.name)


def for_zone(zone_id: str | None) -> DriverKind:
    """The driver kind of a zone. Every zone is a datacenter of the one configured
    hypervisor manager, so each is of the kind ``configured()`` names."""
    del zone_id
    return kind(vmware.KIND.name)


__all__ = ["KINDS", "DriverKind", "configured", "for_zone", "kind"]
