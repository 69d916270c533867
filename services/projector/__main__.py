"""python -m services.projector: apply events to the read models (see shared.projections)."""

from shared.projections import ALL, Projector
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    # One active copy; any others stand by (Runtime.lead).
    await rt.lead("projector", Projector(store, ALL).run)


if __name__ == "__main__":
    Runtime("projector").run(main, "Apply events from the event store to the read models.")
