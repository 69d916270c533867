"""Group commit: the commits of concurrent requests in one statement.

Where many requests reach one process at once (the gateway), each commit in a transaction
of its own costs a statement, a round trip and a flush to disk. A
``GroupCommit`` sends the commits that arrive while one statement runs together in the
next one; each is still all or none on its own (``commit_events``, migration 0017), and
each caller gets its own outcome. A lone commit goes at once: no added latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proto.envelope import Metadata

if TYPE_CHECKING:  # _store builds on this module
    from shared.eventstore._store import Append

MAX_GROUPS = 256
"""Commits sent in one statement at most."""


@dataclass(frozen=True)
class Group:
    """One caller's commit: its appends, their metadata, and the inbox row it records."""

    appends: Sequence[Append]
    metadata: Metadata
    inbox: tuple[str, str] | None = None


Outcome = int | None | BaseException
"""A group's outcome: the last position appended (0 if none), None if its inbox row
existed already, or the error that undid it."""

Run = Callable[[Sequence[Group]], Awaitable[list[Outcome]]]


class GroupCommit:
    """Queues commits and runs them ``MAX_GROUPS`` at a time through ``run``."""

    def __init__(self, run: Run, *, max_groups: int = MAX_GROUPS) -> None:
        self._run = run
        self._max = max_groups
        self._queue: list[tuple[Group, asyncio.Future[int | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.statements = 0  # statements sent, for benchmarks

    async def commit(self, group: Group) -> int | None:
        """Commit ``group`` with whatever else is waiting; its own outcome.

        Raises:
            ConcurrencyError: one of its streams moved on (only this group is undone).
        """
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._queue.append((group, future))
        if self._flusher is None or self._flusher.done():
            # Its own task: a caller cancelled while waiting leaves the others' commits be.
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            self.statements += 1
            try:
                outcomes = await self._run([group for group, _ in batch])
            except BaseException as exc:  # the statement failed whole: every caller sees it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
