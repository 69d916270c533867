"""python -m services.projector: apply events to the read models (see shared.projections)."""

from shared.projections import ALL, Projector
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    # Read models and checkpoint are written together and can be written again from the
    # store: no commit of theirs waits for the disk (a deploy's answer waits for them).
    store = await rt.postgres(flush_commits=False)
    # One active copy; any others stand by (Runtime.lead).
    await rt.lead("projector", Projector(store, ALL).run)


if __name__ == "__main__":
    Runtime("projector").run(main, "Apply events from the event store to the read models.")
