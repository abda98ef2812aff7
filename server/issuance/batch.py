"""Group commit for kiosk steps: the steps that reach the server together share one write transaction.

`StepCommitter.run(fn)` queues `fn(tx) -> answer`. One drain task takes what is queued (the steps
whose messages arrived in the same turn of the event loop, or while a batch was running) and runs
them one after another in ONE `db.write()` transaction, each inside its own SAVEPOINT:

- a step that raises rolls back to its savepoint only (nothing it wrote survives) and its caller
  gets the exception; the other steps of the batch go on;
- every answer is released only after COMMIT returned, so no kiosk is told of something a crash
  could still lose; if the transaction itself fails, every step of the batch gets an UNAVAILABLE
  error and nothing of the batch is stored (the kiosk resends the step with the same step_id, as
  after a dropped line; the stored-answer check makes that safe).

Why: a kiosk transaction is seven steps, each one write transaction. On the event loop's thread
(server.db) a step's statements take tens of microseconds, and BEGIN/COMMIT with its WAL page
writes costs as much again; fifty kiosks' steps arriving together then pay one COMMIT per batch,
and pages that several steps touch (the steps table, the transactions' rows and indexes) are
written to the WAL once per batch instead of once per step. A lone step waits one turn of the
event loop and commits alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from server.db import Database, Tx
from server.errors import Unavailable

log = logging.getLogger("onestop.issuance.batch")

# A batch holds the event loop while it runs (a step takes about 0.1-0.5 ms): bound it.
MAX_BATCH = 64
Step = Callable[[Tx], Awaitable[Any]]


class StepCommitter:
    """One per server process (per KioskDesk). `batches` and `steps` count what was committed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[tuple[Step, asyncio.Future]] = []
        self._drain: asyncio.Task | None = None
        self.batches = 0
        self.steps = 0

    async def run(self, fn: Step) -> Any:
        """Run `fn(tx)` in the next batch's write transaction; its answer once the batch committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, future))
        if self._drain is None:
            self._drain = loop.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._run_batch(batch)
        except BaseException:
            for _, future in self._queue:  # only if this task is cancelled (shutdown)
                future.cancel()
            self._queue = []
            raise
        finally:
            self._drain = None

    async def _run_batch(self, batch: list[tuple[Step, asyncio.Future]]) -> None:
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            async with self._db.write() as tx:
                for fn, future in batch:
                    await tx.execute("SAVEPOINT kiosk_step")
                    try:
                        answer = await fn(tx)
                    except Exception as error:
                        await tx.execute("ROLLBACK TO kiosk_step")
                        await tx.execute("RELEASE kiosk_step")
                        outcomes.append((future, None, error))
                    else:
                        await tx.execute("RELEASE kiosk_step")
                        outcomes.append((future, answer, None))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            log.warning("kiosk step batch failed", extra={"steps": len(batch), "error": type(error).__name__})
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable("STEP_NOT_STORED", "the step was not stored; send it again"))
            return
        self.batches += 1
        self.steps += len(batch)
        for future, answer, error in outcomes:
            if future.done():  # the caller went away; its step is stored for the resend
                continue
            if error is None:
                future.set_result(answer)
            else:
                future.set_exception(error)
