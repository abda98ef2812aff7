"""Group commit for the points area: many concurrent requests, one transaction per batch.

Callers `submit()` a job (an idempotency key and a synchronous function over a sqlite3
connection). One drain task takes everything queued, and in the writer thread runs the whole batch
in ONE `BEGIN IMMEDIATE ... COMMIT`, each job inside its own SAVEPOINT: a refused job rolls back
only its savepoint (its refusal is stored as its outcome), the others commit. Callers' futures are
resolved only after COMMIT returned, so nothing is acknowledged that a crash could lose.

The writer has its own SQLite connection to the shared database file (SQLite serialises it with
the core writer and with other server processes), driven from a worker thread so the event loop
never blocks, and only one batch runs at a time. Every ledger rule is therefore plain synchronous
Python over sqlite3, which the property test drives in-process through `apply_once`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from google.rpc import status_pb2

from server.clock import Clock, to_epoch_ms
from server.errors import DomainError, InvalidArgument, Unavailable, from_status

log = logging.getLogger("onestop.points.writer")

MAX_BATCH = 512
Work = Callable[[sqlite3.Connection, int], Message]


def digest(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


@dataclass
class Job:
    key: tuple[str, str, str]  # (caller, method, request_id)
    digest: bytes
    response_type: type[Message]
    work: Work
    future: asyncio.Future | None = field(default=None, repr=False)


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


def apply_batch(conn: sqlite3.Connection, jobs: list[Job], now_ms: int) -> list[Outcome]:
    """One transaction for the whole batch; each job isolated by its savepoint."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes = [apply_once(conn, job, now_ms) for job in jobs]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL",
                   "PRAGMA busy_timeout=30000"):
        conn.execute(pragma)
    conn.row_factory = sqlite3.Row
    return conn


class BatchWriter:
    """The per-process batching writer. `submit` returns only after the job's batch committed."""

    def __init__(self, path: Path, clock: Clock, *, max_batch: int = MAX_BATCH) -> None:
        self._path = Path(path)
        self._clock = clock
        self._max_batch = max_batch
        self._conn: sqlite3.Connection | None = None
        self._queue: list[Job] = []
        self._drain: asyncio.Task | None = None
        self.batches = 0
        self.jobs = 0

    async def submit(self, key: tuple[str, str, str], request: Message, response_type: type[Message],
                     work: Work) -> Any:
        job = Job(key, digest(request), response_type, work, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        # A caller that gives up cancels only its own future: the job still runs with its batch.
        outcome: Outcome = await job.future
        if outcome.error is not None:
            raise outcome.error
        return outcome.response

    async def _run(self) -> None:
        # Let every request that arrived in this loop iteration join the batch.
        await asyncio.sleep(0)
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
            now_ms = to_epoch_ms(self._clock.now())
            try:
                outcomes = await asyncio.to_thread(self._apply, batch, now_ms)
            except Exception:
                log.exception("points batch failed", extra={"jobs": len(batch)})
                outcomes = [Outcome(error=Unavailable("LEDGER_UNAVAILABLE", "the ledger could not commit; retry"))
                            for _ in batch]
            self.batches += 1
            self.jobs += len(batch)
            for job, outcome in zip(batch, outcomes):
                if not job.future.done():
                    job.future.set_result(outcome)

    def _apply(self, batch: list[Job], now_ms: int) -> list[Outcome]:
        if self._conn is None:
            self._conn = connect(self._path)
        return apply_batch(self._conn, batch, now_ms)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Let the batch in flight commit (its callers are owed an answer), then close."""
        if self._drain is not None and not self._drain.done():
            await asyncio.wait([self._drain], timeout=10)
        self.close()
