"""python -m services.volume: volumes from VM snapshots; attach, detach and resize them."""

from services.volume.handlers import Volumes
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    _, js = await rt.jetstream()
    hypervisors = await rt.hypervisors()
    await rt.consume("volume", js, store, Volumes(store, hypervisors).handlers())


if __name__ == "__main__":
    Runtime("volume").run(main, "Create volumes from the disks of VM snapshots; attach, detach "
                                "and resize volumes.")
