"""python -m services.seeder: seed VM snapshots as templates on their pools, once each."""

from services.seeder.handlers import Seeder
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    _, js = await rt.jetstream()
    hypervisors = await rt.hypervisors()
    await rt.consume("seeder", js, store, Seeder(store, hypervisors).handlers())


if __name__ == "__main__":
    Runtime("seeder").run(main, "Seed VM snapshots as templates on their primary storage pools.")
