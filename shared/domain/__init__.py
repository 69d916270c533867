"""Aggregates' pure rules: how state follows from events, and what a command decides."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

E = TypeVar("E")


def created(events: Iterable[object], kind: type[E]) -> E | None:
    """The last event of ``kind`` in a stream (None if there is none): what a thing that is
    created once and never changes (an account, a user, an offering) is."""
    found = None
    for event in events:
        if isinstance(event, kind):
            found = event
    return found
