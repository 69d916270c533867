"""Part of a rebuild folded in a second process, so that a rebuild uses two cores.

A rebuild is one Python thread's work: decoding the stored rows, folding them, encoding the
rows it made. ``Apart.start`` runs this module's ``main`` in a new Python process, hands it
(on its stdin) the database, a snapshot the rebuild exported and the projections it folds; it reads
the events those projections read in that snapshot (so exactly the events the rebuild
replays), folds them with the rebuild's own code and writes its rows back on its stdout,
table by table, as msgpack frames. ``Apart.write`` copies them into the rebuild's tables in
its transaction, under a savepoint: a helper that fails at any point (it could not connect,
its rows did not fit in memory, it died midway) leaves nothing written, and the rebuild folds
those projections itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from shared.projections._table import Projection

log = logging.getLogger(__name__)

# The command run: this module, importable from where the project's packages are.
COMMAND = (sys.executable, "-c", f"from {__name__} import main; main()")
_ROOT = str(Path(__file__).resolve().parents[2])
# A frame: its length (8 bytes, big-endian), then [table, rows]; no rows ends the table.
_LENGTH = 8
_FRAME_ROWS = 5_000
# What pg_export_snapshot returns: it is written into a statement, so it is checked first.
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+(-[0-9A-F]+)+")


class Header(msgspec.Struct, frozen=True):
    """What the helper is asked to do."""

    dsn: str
    snapshot: str
    upto: int
    tables: list[str]
    batch: int
    hold_max_rows: int


class Apart:
    """A helper process folding ``projections`` over a snapshot of the store."""

    def __init__(self, process: asyncio.subprocess.Process, dsn: str,
                 projections: Sequence[Projection]) -> None:
        self.process = process
        self.dsn = dsn
        self.projections = projections

    @classmethod
    async def start(cls, dsn: str, projections: Sequence[Projection]) -> Apart:
        """Start the helper: it waits for ``begin``."""
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT,
                                                           os.environ.get("PYTHONPATH")]))}
        process = await asyncio.create_subprocess_exec(
            *COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        return cls(process, dsn, projections)

    async def begin(self, snapshot: str, upto: int, batch: int, hold_max_rows: int) -> None:
        """Have it fold its projections over ``snapshot`` (exported by the rebuild), up to
        position ``upto``."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(msgspec.msgpack.encode(Header(
            dsn=self.dsn, snapshot=snapshot, upto=upto,
            tables=[p.table.name for p in self.projections], batch=batch,
            hold_max_rows=hold_max_rows)))
        stdin.close()

    async def write(self, conn: asyncpg.Connection) -> bool:
        """Copy the helper's rows into their (emptied) tables; False, with nothing written,
        if it failed."""
        try:
            async with conn.transaction():  # a savepoint in the rebuild's transaction
                for projection in self.projections:
                    await conn.copy_records_to_table(
                        projection.table.name, records=self._rows(projection.table.name),
                        columns=list(projection.table.columns))
                assert self.process.stdout is not None
                extra = await self.process.stdout.read()
                code = await self.process.wait()
                if code != 0 or extra:
                    raise _Failed(f"exit status {code}" if code else "rows after the last table")
        except Exception as exc:  # whatever went wrong, the rebuild can do it itself
            log.warning("the fold of %s in a second process failed (%s: %s): folding them "
                        "here", ", ".join(p.table.name for p in self.projections),
                        type(exc).__name__, exc)
            return False
        return True

    async def _rows(self, table: str) -> AsyncIterator[Sequence[Any]]:
        decoder = msgspec.msgpack.Decoder(tuple[str, list[tuple[Any, ...]]])
        assert self.process.stdout is not None
        while True:
            size = int.from_bytes(await self.process.stdout.readexactly(_LENGTH), "big")
            name, rows = decoder.decode(await self.process.stdout.readexactly(size))
            if name != table:
                raise _Failed(f"rows of {name} where {table} was expected")
            if not rows:
                return
            for row in rows:
                yield row

    async def stop(self) -> None:
        """End the helper, whatever it is doing."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class _Failed(Exception):
    pass


async def _fold_apart(header: Header, out: Any) -> None:
    from shared.projections import ALL, _runner

    if not _SNAPSHOT_ID.fullmatch(header.snapshot):
        raise ValueError(f"not a snapshot id: {header.snapshot!r}")
    named = {p.table.name: p for p in ALL}
    projections = [named[name] for name in header.tables]
    _runner.HOLD_MAX_ROWS = header.hold_max_rows
    conn = await asyncpg.connect(header.dsn)  # jsonb read as text, by asyncpg's own codec
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{header.snapshot}'")
            held = await _runner.fold_stored(conn, projections, header.upto, header.batch)
            assert held is not None  # with no connection to write to, TooBig instead
    finally:
        await conn.close()
    encoder = msgspec.msgpack.Encoder()
    for projection in projections:
        values = projection.table.values()
        rows = list(held[projection.table.name].values())
        for first in range(0, len(rows), _FRAME_ROWS):
            _frame(out, encoder, projection.table.name,
                   [values(row) for row in rows[first:first + _FRAME_ROWS]])
        _frame(out, encoder, projection.table.name, [])
    out.flush()


def _frame(out: Any, encoder: msgspec.msgpack.Encoder, table: str, rows: list[Any]) -> None:
    body = encoder.encode((table, rows))
    out.write(len(body).to_bytes(_LENGTH, "big"))
    out.write(body)


def main() -> None:
    """The helper: its header on stdin, its rows on stdout, its log on stderr."""
    import gc

    import uvloop

    from shared import log as logs
    from shared.projections._runner import TooBig

    logs.configure("rebuild")
    gc.disable()  # as in the rebuild: rows held without cycles
    given = sys.stdin.buffer.read()
    if not given:
        return  # the rebuild stopped it before it began
    header = msgspec.msgpack.decode(given, type=Header)
    try:
        uvloop.run(_fold_apart(header, sys.stdout.buffer))
    except TooBig as exc:
        log.info("%s: %s are left to the rebuild", exc, ", ".join(header.tables))
        sys.exit(3)
