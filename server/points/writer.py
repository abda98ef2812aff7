"""Group commit for the points area: many concurrent requests, one transaction per batch.

Callers `submit()` a job (an idempotency key and a synchronous function over a sqlite3
connection). Jobs are group-committed (server.groupcommit): a batch runs in ONE write transaction
of the database's single writer (`db.write()`), each job inside its own SAVEPOINT: a refused job
rolls back only its savepoint (its refusal is stored as its outcome), the others commit. Callers
are answered only after COMMIT returned, so nothing is acknowledged that a crash could lose.

The batch runs synchronously on the event loop's thread over the writer's plain sqlite3
connection (`tx.conn`): a transfer is a dozen indexed statements (about 0.1 ms), far less than a
hop to a worker thread and the GIL hand-off on every statement there. Measured with the writer on
its own connection in a thread, that hand-off, not SQLite, set the pace of every batch. Sharing
the one writer also means the points ledger and the other areas' `db.write()` queue on one asyncio
lock instead of waiting for each other inside SQLite. Every ledger rule is plain synchronous
Python over sqlite3, which the property test drives in-process through `apply_batch`.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from google.rpc import status_pb2

from server.clock import Clock, to_epoch_ms
from server.db import Database, Tx
from server.errors import DomainError, InvalidArgument, from_status
from server.groupcommit import GroupCommit

log = logging.getLogger("onestop.points.writer")

# A batch holds the event loop while it runs (about 0.1-0.2 ms a transfer): bound it.
MAX_BATCH = 128
# How long a batch may wait for requests the server is already working on (GroupCommit.linger_s).
LINGER_S = 0.010
Work = Callable[[sqlite3.Connection, int], Message]


def digest(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


@dataclass
class Job:
    key: tuple[str, str, str]  # (caller, method, request_id)
    digest: bytes
    response_type: type[Message]
    work: Work


class Outcome:
    """What a job came to: a response, a refusal (stored), or a bug (not stored)."""

    __slots__ = ("response", "error")

    def __init__(self, response: Message | None = None, error: BaseException | None = None) -> None:
        self.response, self.error = response, error


def recall(conn: sqlite3.Connection, job: Job) -> Outcome | None:
    row = conn.execute(
        "SELECT request_digest, failed, outcome FROM points_requests WHERE caller=? AND method=? AND request_id=?",
        job.key,
    ).fetchone()
    if row is None:
        return None
    if bytes(row[0]) != job.digest:
        return Outcome(error=InvalidArgument.field("request_id", "already used for a different request",
                                                   reason="REQUEST_ID_REUSED"))
    if row[1]:
        status = status_pb2.Status()
        status.ParseFromString(row[2])
        return Outcome(error=from_status(status))
    response = job.response_type()
    response.ParseFromString(row[2])
    return Outcome(response=response)


def apply_once(conn: sqlite3.Connection, job: Job, now_ms: int) -> Outcome:
    """Run one job inside the caller's open transaction, in its own savepoint; store its outcome.

    A replay (same key, same request) returns the stored first outcome and changes nothing.
    """
    prior = recall(conn, job)
    if prior is not None:
        return prior
    conn.execute("SAVEPOINT job")
    try:
        response = job.work(conn, now_ms)
    except DomainError as error:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        conn.execute(
            "INSERT INTO points_requests (caller, method, request_id, request_digest, failed, outcome, created_at_ms)"
            " VALUES (?, ?, ?, ?, 1, ?, ?)",
            (*job.key, job.digest, error.to_status().SerializeToString(), now_ms),
        )
        return Outcome(error=error)
    except Exception as error:  # a bug: roll back its effects, store nothing, report INTERNAL
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        log.exception("points job failed", extra={"method": job.key[1]})
        return Outcome(error=error)
    conn.execute(
        "INSERT INTO points_requests (caller, method, request_id, request_digest, failed, outcome, created_at_ms)"
        " VALUES (?, ?, ?, ?, 0, ?, ?)",
        (*job.key, job.digest, response.SerializeToString(), now_ms),
    )
    conn.execute("RELEASE job")
    return Outcome(response=response)


def run_batch(conn: sqlite3.Connection, jobs: list[Job], now_ms: int) -> list[Outcome]:
    """Every job of a batch inside the caller's open transaction; each isolated by its savepoint."""
    return [apply_once(conn, job, now_ms) for job in jobs]


def apply_batch(conn: sqlite3.Connection, jobs: list[Job], now_ms: int) -> list[Outcome]:
    """One transaction of its own for the whole batch (tests and tools with a bare connection)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes = run_batch(conn, jobs, now_ms)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def connect(path: Path) -> sqlite3.Connection:
    """A bare connection set up like the database's own (for tests and tools that use apply_batch)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL",
                   "PRAGMA busy_timeout=30000"):
        conn.execute(pragma)
    conn.row_factory = sqlite3.Row
    return conn


class BatchWriter:
    """The per-process batching writer. `submit` returns only after the job's batch committed.

    Batches go through the server's one group-commit piece (server.groupcommit), lingering while
    the loop is busy so that requests on their way join: measured over gRPC with 50 clients,
    committing at once made batches of 1-2 and cost about a third more server CPU per transfer.
    Never call `submit` while holding `db.write()`: the batch needs the same writer.
    """

    def __init__(self, db: Database, clock: Clock, *, max_batch: int = MAX_BATCH) -> None:
        self._clock = clock
        self._commits = GroupCommit(db, name="points ledger", unavailable_reason="LEDGER_UNAVAILABLE",
                                    max_batch=max_batch, linger_s=LINGER_S, savepoints=False)

    @property
    def batches(self) -> int:
        return self._commits.batches

    @property
    def jobs(self) -> int:
        return self._commits.units

    async def submit(self, key: tuple[str, str, str], request: Message, response_type: type[Message],
                     work: Work) -> Any:
        job = Job(key, digest(request), response_type, work)
        clock = self._clock

        async def unit(tx: Tx) -> Outcome:
            return apply_once(tx.conn, job, to_epoch_ms(clock.now()))

        # A caller that gives up cancels only its own wait: the job still runs with its batch.
        outcome: Outcome = await self._commits.run(unit)
        if outcome.error is not None:
            raise outcome.error
        return outcome.response

    async def aclose(self) -> None:
        """Let the batch in flight commit (its callers are owed an answer)."""
        await self._commits.aclose()
