"""python -m services.cloner: clone seeded templates into running VMs; VM snapshot work."""

from services.cloner.handlers import Cloner
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    _, js = await rt.jetstream()
    hypervisors = await rt.hypervisors()
    await rt.consume("cloner", js, store, Cloner(store, hypervisors).handlers())


if __name__ == "__main__":
    Runtime("cloner").run(main, "Linked-clone seeded templates into running VMs.")
