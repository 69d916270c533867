"""python -m services.planner: validate and place VMs; keep the inventory in step with vCenter."""

from services.planner.handlers import Planner
from services.planner.inventory import changes, sync
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    _, js = await rt.jetstream()
    hypervisor = await rt.vcenter()
    await rt.retry("inventory", lambda: sync(store, hypervisor))
    planner = Planner(store, lambda: changes(store, hypervisor))
    await rt.consume("planner", js, store, planner.handlers())


if __name__ == "__main__":
    Runtime("planner").run(main, "Place VMs on hosts with room; sync the inventory from vCenter.")
