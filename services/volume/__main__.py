"""python -m services.volume: Create volumes from the disks of VM snapshots."""

import asyncio

from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    await rt.postgres()
    await rt.jetstream()
    await rt.vcenter()
    await asyncio.Event().wait()


if __name__ == "__main__":
    Runtime("volume").run(main, "Create volumes from the disks of VM snapshots.")
