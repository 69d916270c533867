"""python -m services.planner: Validate deploy requests and place VMs on hosts with room."""

import asyncio

from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    await rt.postgres()
    await rt.jetstream()
    await asyncio.Event().wait()


if __name__ == "__main__":
    Runtime("planner").run(main, "Validate deploy requests and place VMs on hosts with room.")
