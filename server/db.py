"""SQLite storage: WAL, foreign keys, versioned migrations, one writer, a small pool of readers.

Every unit of work takes one explicit connection for its whole life: `async with db.write() as tx`
(BEGIN IMMEDIATE ... COMMIT, serialised through the single writer of this process and SQLite's
own lock across processes) or `async with db.read() as tx` (a consistent snapshot). Nothing is
shared through context variables. A process killed mid-write leaves the transaction uncommitted,
so no partial rows survive: SQLite's WAL rolls it back on the next open.

Statements run on the event loop's thread (see `_run`): measured, a trip to a database thread per
statement, waiting there for the GIL, cost more than the statement and serialised the one writer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


log = logging.getLogger("onestop.db")

SERVER_DIR = Path(__file__).resolve().parent
# Order matters: later areas reference the tables of earlier ones.
AREAS = ("core", "registry", "auth", "application", "notification", "issuance", "points")

# Statements on the event loop's thread never wait for a lock (busy_timeout=0, see `_run`); a
# worker thread retries up to this long for another writer, as SQLite's own busy handler would
# (but a cancelled caller can stop it).
BUSY_TIMEOUT_MS = 30_000
# The writer does not checkpoint the WAL inside COMMIT (an fsync on the loop's thread: measured p99
# 16-25 ms, once 445 ms); a task does it this often on a worker thread, on its own connection.
CHECKPOINT_EVERY_S = 1.0
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
)
# NORMAL in WAL mode survives a process crash (SIGKILL); an OS crash or power loss could lose the
# last commits. FULL syncs the WAL at every COMMIT (group commit shares that sync per batch).
SYNCHRONOUS = ("NORMAL", "FULL")


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


def _busy(error: sqlite3.OperationalError) -> bool:
    message = str(error)
    return "locked" in message or "busy" in message


def _waiting(stop: threading.Event, fn: Callable[..., Any], args: tuple) -> Any:
    """Run `fn(*args)` on a worker thread, retrying while another connection holds SQLite's lock
    (as SQLite's busy handler would, up to BUSY_TIMEOUT_MS), until `stop` is set."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as error:
            if not _busy(error) or stop.is_set() or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


async def _off_loop(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any, wait: bool = False) -> Any:
    """Run a statement on a worker thread. A cancellation stops a wait for another writer's lock
    (and interrupts a running statement), and is raised only when the thread is done with the
    connection, however many cancellations arrive: the caller must never find the connection still
    in use, or a late BEGIN succeeding after it gave up."""
    stop = threading.Event()
    call = functools.partial(_waiting, stop, fn, args) if wait else functools.partial(fn, *args)
    future = asyncio.get_running_loop().run_in_executor(None, call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                cancelled = True
                stop.set()
                conn.interrupt()
        except BaseException:
            break
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


async def _run(conn: sqlite3.Connection, offload: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a statement on the event loop's thread (an indexed statement takes microseconds, less than
    a trip to another thread and back for the GIL), or on a worker thread when the transaction was
    opened for bulk work. The connection never waits for a lock on the loop's thread
    (busy_timeout=0): when another connection holds SQLite's lock, the statement is retried on a
    worker thread, which waits up to BUSY_TIMEOUT_MS."""
    if offload:
        return await _off_loop(conn, fn, *args, wait=True)
    try:
        return fn(*args)
    except sqlite3.OperationalError as error:
        if not _busy(error):
            raise
    return await _off_loop(conn, fn, *args, wait=True)


def _changes(conn: sqlite3.Connection, sql: str, params: Any) -> int:
    return conn.execute(sql, params).rowcount


def _lastrowid(conn: sqlite3.Connection, sql: str, params: Any) -> int:
    return int(conn.execute(sql, params).lastrowid or 0)


def _fetchall(conn: sqlite3.Connection, sql: str, params: Any) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


class Tx:
    """One connection inside one transaction. Rows come back as `sqlite3.Row`.

    `conn` is the plain `sqlite3.Connection`: synchronous code (the points ledger) may use it
    directly inside the transaction, on the event loop's thread.
    """

    def __init__(self, conn: sqlite3.Connection, *, offload: bool = False) -> None:
        self.conn = conn
        self._offload = offload

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        return await _run(self.conn, self._offload, _changes, self.conn, sql, params)

    async def insert(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run an INSERT; returns the new rowid."""
        return await _run(self.conn, self._offload, _lastrowid, self.conn, sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await _run(self.conn, self._offload, self.conn.executemany, sql, list(rows))

    async def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        rows = await _run(self.conn, self._offload, _fetchall, self.conn, sql, params)
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return await _run(self.conn, self._offload, _fetchall, self.conn, sql, params)

    async def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = await self.one(sql, params)
        return None if row is None else row[0]


class Database:
    """The process's handle on the database file: one writer connection, N reader connections.

    All are plain sqlite3 connections used on the event loop's thread (see `_run`); the writer is
    shared by the process's coroutines one transaction at a time (an asyncio lock), a reader by
    one snapshot at a time (a pool).
    """

    def __init__(self, path: Path, *, read_connections: int = 4, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
        self.path = Path(path)
        self._read_connections = read_connections
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        self._all: list[sqlite3.Connection] = []
        self._quick: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpoints: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # only while setting up
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
        else:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see CHECKPOINT_EVERY_S
        conn.execute("PRAGMA busy_timeout=0")
        self._all.append(conn)
        return conn

    async def open(self, migrations: Sequence[Migration] | None = None) -> "Database":
        """Open the file (creating it), apply pending migrations, start the reader pool."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opening may wait for another process's lock (WAL recovery, journal mode): off the loop.
        self._writer = await asyncio.to_thread(self._connect, readonly=False)
        await self.migrate(discover_migrations() if migrations is None else migrations)
        for _ in range(self._read_connections):
            self._readers.put_nowait(await asyncio.to_thread(self._connect, readonly=True))
        self._quick = await asyncio.to_thread(self._connect, readonly=True)
        checkpointer = await asyncio.to_thread(self._connect, readonly=False)
        self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint_loop(checkpointer),
                                                                   name="wal-checkpoints")
        return self

    async def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """Copy committed WAL pages into the database file now and then, off the loop (PASSIVE: it
        never waits for readers or writers, so it cannot stall anyone)."""
        done = 0
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            if self._commits != done:
                done = self._commits
                try:
                    await _off_loop(conn, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                except Exception as error:  # keep going: without this task the WAL only grows
                    log.warning("checkpoint failed", extra={"error": type(error).__name__})

    async def close(self) -> None:
        """Close every connection, once a write transaction in flight has ended (up to 10 s)."""
        locked = False
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._write_lock.acquire(), 10)
                locked = True
            except TimeoutError:
                log.warning("closing with a write transaction still in flight")
        try:
            await self._close_connections()
        finally:
            if locked:
                self._write_lock.release()

    async def _close_connections(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._writer = None
        self._quick = None
        self._readers = asyncio.Queue()

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
    async def write(self, *, offload: bool = False) -> AsyncIterator[Tx]:
        """A write transaction. Commits on normal exit, rolls back on any exception.

        `offload=True` runs its statements on a worker thread: for bulk statements (a notice's
        fan-out over thousands of residents) that would hold up every other call on the loop.
        """
        assert self._writer is not None, "database not open"
        async with self._write_lock:
            conn = self._writer
            if conn.in_transaction:  # never expected (see _off_loop); never leave the writer stuck
                log.error("writer found inside a transaction; rolled back")
                conn.execute("ROLLBACK")
            try:
                await _run(conn, offload, conn.execute, "BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # Cancelled while a worker thread waited for SQLite's lock: the BEGIN may have
                # succeeded meanwhile; undo it, or this process's only writer stays in a transaction.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                yield Tx(conn, offload=offload)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    await _run(conn, False, conn.execute, "COMMIT")
                    self._commits += 1
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

    async def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """One indexed SELECT for hot paths (token lookups), without a surrounding transaction (a
        single statement is its own snapshot), on a connection kept for such single statements.
        Should SQLite ever report the file busy (a checkpoint restarting the WAL), the query goes
        through a pooled reader, which may wait for it off the loop."""
        if self._quick is not None:
            try:
                return _fetchall(self._quick, sql, params)
            except sqlite3.OperationalError as error:
                if not _busy(error):
                    raise
        conn = await self._readers.get()
        try:
            return await _run(conn, False, _fetchall, conn, sql, params)
        finally:
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only snapshot on a pooled connection."""
        conn = await self._readers.get()
        try:
            conn.execute("BEGIN")
            try:
                yield Tx(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            self._readers.put_nowait(conn)
