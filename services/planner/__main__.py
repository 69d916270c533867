"""python -m services.planner: validate and place VMs; keep the inventory in step with the
hypervisors (vCenter's datacenters and the KVM zones)."""

from services.planner.handlers import Planner
from services.planner.inventory import sync, sync_changes
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    # Handlers at work at once: their commits share statements.
    store = await rt.postgres(group_commit=True)
    _, js = await rt.jetstream()
    hypervisors = await rt.hypervisors()

    async def synced() -> None:
        await rt.retry("inventory", lambda: sync(store, hypervisors))

    # A hypervisor that did not answer at start is synced as soon as it does.
    hypervisors.when_opened(synced)
    await synced()
    planner = Planner(store, lambda: sync_changes(store, hypervisors))
    # One active copy; any others stand by (Runtime.lead): placements are decided one at a
    # time (``Planner``), so copies taking turns would only hand the turn around.
    await rt.consume("planner", js, store, planner.handlers(), one_active=True)


if __name__ == "__main__":
    Runtime("planner").run(main, "Place VMs on hosts with room; sync the inventory from every "
                                 "hypervisor.")
