"""python -m services.relay: publish committed events to JetStream (see shared.relay)."""

from shared.relay import Relay
from shared.runtime import Runtime


async def main(rt: Runtime) -> None:
    store = await rt.postgres()
    nc, js = await rt.jetstream()
    # One active copy; any others stand by (Runtime.lead).
    await rt.lead("relay", Relay(store, js, nc=nc).run)


if __name__ == "__main__":
    Runtime("relay").run(main, "Publish committed events from the event store to JetStream.")
