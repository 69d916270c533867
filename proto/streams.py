"""Stream ids of the event store, by aggregate. The prefix is the category in NATS subjects."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6c0e4a55-8d3c-4f5e-9a51-5ab1ed0c0de5")


def stable_id(*parts: str) -> str:
    """A UUID that is the same every time for the same parts (imports, seeds, defaults)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def zone(zone_id: str) -> str:
    return f"zone-{zone_id}"


def host(host_id: str) -> str:
    return f"host-{host_id}"


def pool(pool_id: str) -> str:
    return f"pool-{pool_id}"


def network(network_id: str) -> str:
    return f"network-{network_id}"


def service_offering(offering_id: str) -> str:
    return f"offering-{offering_id}"


def disk_offering(offering_id: str) -> str:
    return f"diskoffering-{offering_id}"


def account(account_id: str) -> str:
    return f"account-{account_id}"


def user(user_id: str) -> str:
    return f"user-{user_id}"


def vm(vm_id: str) -> str:
    return f"vm-{vm_id}"


def vm_snapshot(snapshot_id: str) -> str:
    return f"vmsnapshot-{snapshot_id}"


def volume(volume_id: str) -> str:
    return f"volume-{volume_id}"


def seed(vm_snapshot_id: str, pool_id: str) -> str:
    """The one seed of a VM snapshot on a pool (its vmsnapshot_spool_ref row)."""
    return f"spoolref-{vm_snapshot_id}-{pool_id}"


def seed_template_id(vm_snapshot_id: str, pool_id: str) -> str:
    """The id of the template seeded from a VM snapshot on a pool."""
    return stable_id("seed", vm_snapshot_id, pool_id)


INVENTORY = "inventory"

OWN_STREAM = {
    "account": account,
    "user": user,
    "zone": zone,
    "host": host,
    "pool": pool,
    "network": network,
    "serviceoffering": service_offering,
    "diskoffering": disk_offering,
    "vmsnapshot": vm_snapshot,
    "volume": volume,
}
