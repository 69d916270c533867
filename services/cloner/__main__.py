"""python -m services.cloner: Linked-clone seeded templates into running VMs."""

import asyncio

from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    await rt.postgres()
    await rt.jetstream()
    await rt.vcenter()
    await asyncio.Event().wait()


if __name__ == "__main__":
    Runtime("cloner").run(main, "Linked-clone seeded templates into running VMs.")
