"""SQLite storage: WAL, foreign keys, versioned migrations, one writer, a small pool of readers.

Every unit of work takes one explicit connection for its whole life: `async with db.write() as tx`
(BEGIN IMMEDIATE ... COMMIT, serialised through the single writer of this process and SQLite's
own lock across processes) or `async with db.read() as tx` (a consistent snapshot). Nothing is
shared through context variables. A process killed mid-write leaves the transaction uncommitted,
so no partial rows survive: SQLite's WAL rolls it back on the next open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger("onestop.db")

SERVER_DIR = Path(__file__).resolve().parent
# Order matters: later areas reference the tables of earlier ones.
AREAS = ("core", "registry", "auth", "application", "notification", "issuance", "points")

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    # NORMAL in WAL mode survives a process crash (SIGKILL); only an OS crash could lose the tail.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
)


@dataclass(frozen=True)
class Migration:
    area: str
    version: int
    name: str
    sql: str


def discover_migrations(areas: Sequence[str] = AREAS) -> list[Migration]:
    """Migrations live in `server/<area>/migrations/NNNN_name.sql` (core: `server/migrations/`)."""
    found: list[Migration] = []
    for area in areas:
        folder = SERVER_DIR / "migrations" if area == "core" else SERVER_DIR / area / "migrations"
        for path in sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            found.append(Migration(area, int(path.name[:4]), path.stem[5:], path.read_text("utf-8")))
    return found


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (triggers with inner semicolons stay whole)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not buffer.strip().startswith("--"):
        statements.append(buffer.strip())
    return statements


class Tx:
    """One connection inside one transaction. Rows come back as `sqlite3.Row`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        cursor = await self.conn.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def insert(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run an INSERT; returns the new rowid."""
        cursor = await self.conn.execute(sql, params)
        rowid = cursor.lastrowid
        await cursor.close()
        return int(rowid or 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        rows = await self.conn.execute_fetchall(sql, params)  # one trip to the connection's thread
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return list(await self.conn.execute_fetchall(sql, params))

    async def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = await self.one(sql, params)
        return None if row is None else row[0]


class Database:
    """The process's handle on the database file: one writer connection, N reader connections."""

    def __init__(self, path: Path, *, read_connections: int = 4) -> None:
        self.path = Path(path)
        self._read_connections = read_connections
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []
        self._quick: sqlite3.Connection | None = None

    async def _connect(self, *, readonly: bool) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
        if readonly:
            await conn.execute("PRAGMA query_only=ON")
        self._all.append(conn)
        return conn

    async def open(self, migrations: Sequence[Migration] | None = None) -> "Database":
        """Open the file (creating it), apply pending migrations, start the reader pool."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect(readonly=False)
        await self.migrate(discover_migrations() if migrations is None else migrations)
        for _ in range(self._read_connections):
            self._readers.put_nowait(await self._connect(readonly=True))
        self._quick = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                      check_same_thread=False)
        self._quick.row_factory = sqlite3.Row
        self._quick.execute("PRAGMA busy_timeout=0")
        return self

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()
        self._writer = None
        if self._quick is not None:
            self._quick.close()
            self._quick = None

    async def migrate(self, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply what is pending in one transaction; safe when several processes start at once."""
        assert self._writer is not None
        async with self.write() as tx:
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " area TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
                " PRIMARY KEY (area, version))"
            )
            applied = {(r["area"], r["version"]) for r in await tx.all("SELECT area, version FROM schema_migrations")}
            pending = [m for m in migrations if (m.area, m.version) not in applied]
            for migration in pending:
                for statement in split_statements(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (area, version, name) VALUES (?, ?, ?)",
                    (migration.area, migration.version, migration.name),
                )
        for migration in pending:
            log.info("migration applied", extra={"area": migration.area, "version": migration.version})
        return pending

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A write transaction. Commits on normal exit, rolls back on any exception."""
        assert self._writer is not None, "database not open"
        async with self._write_lock:
            conn = self._writer
            begin = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
            try:
                await asyncio.shield(begin)
            except asyncio.CancelledError:
                # Cancelled while waiting for SQLite's lock: the BEGIN still runs on the connection's
                # thread, so let it finish and undo it, or this process's only writer stays stuck
                # inside a transaction.
                await asyncio.shield(self._undo_begin(conn, begin))
                raise
            try:
                yield Tx(conn)
            except BaseException:
                await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            else:
                await asyncio.shield(conn.execute("COMMIT"))

    @staticmethod
    async def _undo_begin(conn: aiosqlite.Connection, begin: asyncio.Future) -> None:
        await asyncio.wait([begin])
        if not begin.cancelled() and begin.exception() is None and conn.in_transaction:
            await conn.execute("ROLLBACK")

    async def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """One indexed SELECT for hot paths (token lookups), without a surrounding transaction (a
        single statement is its own snapshot).

        It runs on the event loop's thread over a plain read-only connection: a point lookup in
        WAL mode takes microseconds and never waits for writers, while a trip to aiosqlite's
        thread costs more than the query. Should SQLite ever report the file busy (a checkpoint
        restarting the WAL), the query goes the usual way through a pooled reader instead.
        """
        if self._quick is not None:
            try:
                return self._quick.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
        conn = await self._readers.get()
        try:
            return list(await conn.execute_fetchall(sql, params))
        finally:
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only snapshot on a pooled connection."""
        conn = await self._readers.get()
        try:
            await conn.execute("BEGIN")
            try:
                yield Tx(conn)
            finally:
                await asyncio.shield(conn.execute("ROLLBACK"))
        finally:
            self._readers.put_nowait(conn)
