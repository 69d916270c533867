from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
from asyncpg.pgproto.pgproto import UUID as _FastUUID

from proto.events import AnyEvent

if TYPE_CHECKING:  # annotations only: a rebuild's helper process imports no store
    from shared.eventstore import RecordedEvent

Row = dict[str, Any]
Key = tuple[Any, ...]


def parse_uuid(text: str) -> uuid.UUID:
    """A uuid key column's value. asyncpg's UUID (a ``uuid.UUID``, equal to and hashed as
    the one of the same value) is parsed in C, several times faster than Python's; the
    forms only Python's accepts (braces, a ``urn:uuid:`` prefix) are parsed by it."""
    try:
        value: uuid.UUID = _FastUUID(text)
    except ValueError:
        return uuid.UUID(text)
    return value


@dataclass(frozen=True)
class Table:
    """A read-model table: its columns (name → SQL type, in order) and its key columns."""

    name: str
    columns: dict[str, str]
    key: tuple[str, ...]

    def key_of(self, row: Row) -> Key:
        return tuple(row[c] for c in self.key)

    def _unnest(self, columns: Sequence[str], first: int = 1) -> str:
        params = ", ".join(
            f"${first + i}::{self.columns[c]}[]" for i, c in enumerate(columns)
        )
        return f"SELECT * FROM unnest({params})"

    async def load(self, conn: asyncpg.Connection, keys: Sequence[Key]) -> dict[Key, Row]:
        if not keys:
            return {}
        cols = ", ".join(self.columns)
        key_cols = ", ".join(self.key)
        rows = await conn.fetch(
            f"SELECT {cols} FROM {self.name} WHERE ({key_cols}) IN ({self._unnest(self.key)})",
            *zip(*keys, strict=True),
        )
        return {self.key_of(dict(r)): dict(r) for r in rows}

    async def upsert(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
        if not rows:
            return
        cols = list(self.columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in self.key)
        await conn.execute(
            f"INSERT INTO {self.name} ({', '.join(cols)}) {self._unnest(cols)}"
            f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}",
            *([row[c] for row in rows] for c in cols),
        )

    def write_ctes(self, first: int, guard: str, *, delete: bool,
                   upsert: bool) -> tuple[list[str], int]:
        """The common table expressions that delete keys (with ``delete``) and upsert rows
        (with ``upsert``) of this table in a statement of several (parameters from
        ``$first``: the key columns' arrays, then every column's), each done only if
        ``guard``, an SQL condition, holds; and the next parameter's number.
        ``write_params`` gives their values."""
        cols = list(self.columns)
        keys = ", ".join(self.key)
        ctes = []
        if delete:
            ctes.append(f"d_{self.name} AS (DELETE FROM {self.name} WHERE ({keys}) IN"
                        f" ({self._unnest(self.key, first)}) AND {guard})")
            first += len(self.key)
        if upsert:
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in self.key)
            ctes.append(f"u_{self.name} AS (INSERT INTO {self.name} ({', '.join(cols)})"
                        f" {self._unnest(cols, first)} WHERE {guard}"
                        f" ON CONFLICT ({keys}) DO UPDATE SET {updates})")
            first += len(cols)
        return ctes, first

    def write_params(self, rows: Sequence[Row], deleted: Sequence[Key]) -> list[list[Any]]:
        """The values of the parameters of ``write_ctes`` made with ``delete`` if there are
        ``deleted`` keys and ``upsert`` if there are ``rows``: delete those, upsert these."""
        keys = [[key[i] for key in deleted] for i in range(len(self.key))] if deleted else []
        return [*keys, *([row[c] for row in rows] for c in self.columns if rows)]

    async def copy(self, conn: asyncpg.Connection, rows: Iterable[Row]) -> None:
        """Insert ``rows`` with a binary COPY: for an empty table (a rebuild's), where no
        row can conflict."""
        await conn.copy_records_to_table(self.name, records=map(self.values(), rows),
                                         columns=list(self.columns))

    def values(self) -> Callable[[Row], tuple[Any, ...]]:
        """A row's values, in the columns' order."""
        cols = list(self.columns)
        if len(cols) == 1:
            return lambda row: (row[cols[0]],)
        return operator.itemgetter(*cols)

    async def delete(self, conn: asyncpg.Connection, keys: Sequence[Key]) -> None:
        if keys:
            await conn.execute(
                f"DELETE FROM {self.name} WHERE ({', '.join(self.key)}) IN"
                f" ({self._unnest(self.key)})",
                *zip(*keys, strict=True),
            )


class Projection(Protocol):
    """A read model: which rows an event touches, and each row after it (pure)."""

    table: Table

    def keys(self, event: AnyEvent) -> list[Key]:
        """The keys of the rows ``event`` changes (none if it changes none).

        If it names none for an event of some type with every field set (optional ones
        too, lists of one item), it names none for any event of that type: a rebuild asks
        once per type, with such an event, and skips the types no projection reads."""

    def evolve(
        self, row: Row | None, key: Key, recorded: RecordedEvent, event: AnyEvent
    ) -> Row | None:
        """Row ``key`` after ``event``; None deletes it. Of ``recorded`` it reads only
        ``position``, ``stream_id``, ``version``, ``type`` and ``recorded_at``: all a rebuild
        reads of the events it replays."""

    def made_anew(self, event: AnyEvent) -> bool:
        """Whether ``evolve`` makes each row ``event`` names from the event alone, whatever
        row it is given (a creation): the projector then does not read those rows first."""
