"""Read your writes without polling: a wait for a position is woken by the projector's
checkpoint (migration 0018's notification), against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from proto.envelope import Metadata
from proto.events import VmStopped
from shared.db import Notifications
from shared.eventstore import Append, EventStore
from shared.projections import ALL
from shared.projections._runner import Projector
from shared.projections.read import PROJECTED_CHANNEL, Progress, ReadModels

META = Metadata(correlation_id="r", causation_id="r", actor="t")


async def test_a_wait_is_woken_by_the_projectors_checkpoint_not_a_poll(
        pool: asyncpg.Pool) -> None:
    store = EventStore(pool)
    # Re-read only every minute: a wait that ends sooner was woken by the notification.
    notifications = Notifications(pool, (PROJECTED_CHANNEL,))
    progress = Progress(pool, notifications, idle_poll=60)
    listening = asyncio.create_task(notifications.run())
    following = asyncio.create_task(progress.run())
    try:
        for _ in range(1000):
            if progress.live:
                break
            await asyncio.sleep(0.01)
        assert progress.live
        read = ReadModels(store, progress)
        vm_id = str(uuid.uuid4())
        position = await store.commit([Append(f"vm-{vm_id}", [VmStopped(vm_id=vm_id)])], META)
        assert position is not None
        waiting = asyncio.create_task(read.reach(position, within=30))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # not projected yet
        projector = Projector(store, ALL)
        assert await projector.catch_up() == position
        assert await waiting is True
        assert progress.reached == position
        # Already there: at once; beyond the checkpoint: not within the time given.
        assert await read.reach(position, within=30) is True
        assert await read.reach(position + 1, within=0.2) is False
    finally:
        following.cancel()
        listening.cancel()
        await asyncio.gather(following, listening, return_exceptions=True)
    assert not progress.live


async def test_after_listening_is_lost_the_checkpoint_as_saved_is_believed_even_if_behind(
        pool: asyncpg.Pool) -> None:
    """PostgreSQL back after a failover to a replica the last commits had not reached can
    hold an older checkpoint than one announced. Once the listening connection is lost (as
    it is when PostgreSQL goes), the checkpoint read next is how far the read models are,
    and a wait for a position past it waits."""
    store = EventStore(pool)
    notifications = Notifications(pool, (PROJECTED_CHANNEL,))
    progress = Progress(pool, notifications, idle_poll=60)
    listening = asyncio.create_task(notifications.run())
    following = asyncio.create_task(progress.run())

    async def live() -> None:
        for _ in range(3000):
            if progress.live:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("progress never followed the checkpoint")

    try:
        await live()
        vm_id = str(uuid.uuid4())
        position = await store.commit([Append(f"vm-{vm_id}", [VmStopped(vm_id=vm_id)])], META)
        assert position is not None
        await Projector(store, ALL).catch_up()
        read = ReadModels(store, progress)
        assert await read.reach(position, within=30) is True
        # As such a failover leaves it: the last checkpoint lost, every session ended.
        async with pool.acquire() as conn:
            await conn.execute("UPDATE checkpoints SET position = 0 WHERE name = 'projector'")
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for _ in range(3000):  # listening again, and the checkpoint read since
            if progress.live and progress.reached == 0:
                break
            await asyncio.sleep(0.01)
        assert progress.live
        assert progress.reached == 0
        assert await read.reach(position, within=0.2) is False
    finally:
        following.cancel()
        listening.cancel()
        await asyncio.gather(following, listening, return_exceptions=True)
