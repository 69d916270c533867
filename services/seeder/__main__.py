"""python -m services.seeder: Seed VM snapshots as templates on their primary storage pools."""

import asyncio

from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    await rt.postgres()
    await rt.jetstream()
    await rt.vcenter()
    await asyncio.Event().wait()


if __name__ == "__main__":
    Runtime("seeder").run(main, "Seed VM snapshots as templates on their primary storage pools.")
