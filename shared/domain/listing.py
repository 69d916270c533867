"""How CloudStack's list commands narrow and slice what they list, for lists answered from
memory (the read models' queries do the same in SQL): every filter first, then the page;
the count is the total that matched, not the page's length."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Filter:
    """What a list command was asked to keep: ``id`` or one of ``ids``, ``name`` (whole,
    any case), ``keyword`` (within any of the item's texts, any case), ``state`` (any case)
    and ``zone_id``. None keeps everything."""

    id: str | None = None
    ids: Sequence[str] = ()
    name: str | None = None
    keyword: str | None = None
    state: str | None = None
    zone_id: str | None = None

    def keeps(self, item: dict[str, Any], *, keyword_fields: Sequence[str] = (
            "name", "displayname", "displaytext", "description")) -> bool:
        """Whether a rendered item (a response object) passes every filter given."""
        if self.id is not None and item.get("id") != self.id:
            return False
        if self.ids and item.get("id") not in self.ids:
            return False
        if self.name is not None and str(item.get("name", "")).lower() != self.name.lower():
            return False
        if self.state is not None and str(item.get("state", "")).lower() != \
                self.state.lower():
            return False
        if self.zone_id is not None and item.get("zoneid") != self.zone_id:
            return False
        if self.keyword is not None:
            wanted = self.keyword.lower()
            if not any(wanted in str(item.get(f) or "").lower() for f in keyword_fields):
                return False
        return True


def narrowed(items: Iterable[dict[str, Any]], wanted: Filter,
             *more: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The items ``wanted`` and every further test in ``more`` keep, in their order."""
    return [i for i in items if wanted.keeps(i) and all(test(i) for test in more)]


class Slice(Protocol):
    """A page: at most ``limit`` items after the first ``offset`` (the read side's
    ``Paging``)."""

    @property
    def limit(self) -> int: ...

    @property
    def offset(self) -> int: ...


def paged(items: Sequence[T], page: Slice | None) -> tuple[list[T], int]:
    """The slice ``page`` asks for (everything without one), and the total before slicing."""
    if page is None:
        return list(items), len(items)
    return list(items[page.offset:page.offset + page.limit]), len(items)
