"""Group commit (server.groupcommit; kiosk steps and the points ledger use it), in-process on a
real database file: units that arrive together share one transaction, a failing unit leaves nothing
behind and harms no other, and no answer is given before COMMIT."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.db import Database, Migration
from server.errors import FailedPrecondition, Unavailable
from server.groupcommit import GroupCommit

MAX_BATCH = 64


def StepCommitter(db, **options):  # noqa: N802 - the kiosk steps' committer, as kiosk.py makes it
    return GroupCommit(db, name="test", unavailable_reason="STEP_NOT_STORED", max_batch=MAX_BATCH, **options)

SCHEMA = Migration("core", 1, "t", """
CREATE TABLE parents (id TEXT PRIMARY KEY);
CREATE TABLE rows (id TEXT PRIMARY KEY, parent TEXT REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED);
""")


@pytest.fixture
async def db(tmp_path):
    database = await Database(tmp_path / "batch.db").open(migrations=[SCHEMA])
    try:
        yield database
    finally:
        await database.close()


def insert(row_id: str, parent: str | None = None):
    async def fn(tx):
        await tx.execute("INSERT INTO rows (id, parent) VALUES (?, ?)", (row_id, parent))
        return row_id
    return fn


async def stored(db) -> list[str]:
    return [r[0] for r in await db.query("SELECT id FROM rows ORDER BY id")]


async def test_steps_arriving_together_commit_in_one_transaction(db):
    committer = StepCommitter(db)
    answers = await asyncio.gather(*(committer.run(insert(f"r{i:02d}")) for i in range(10)))
    assert answers == [f"r{i:02d}" for i in range(10)]
    assert (committer.batches, committer.units) == (1, 10)
    assert await stored(db) == [f"r{i:02d}" for i in range(10)]


async def test_a_lone_step_commits_alone_and_batches_are_bounded(db):
    committer = StepCommitter(db)
    assert await committer.run(insert("alone")) == "alone"
    assert (committer.batches, committer.units) == (1, 1)
    await asyncio.gather(*(committer.run(insert(f"b{i:03d}")) for i in range(MAX_BATCH + 5)))
    assert committer.batches == 3 and committer.units == MAX_BATCH + 6
    assert len(await stored(db)) == MAX_BATCH + 6


async def test_a_failing_step_rolls_back_alone(db):
    committer = StepCommitter(db)

    async def writes_then_refuses(tx):
        await tx.execute("INSERT INTO rows (id) VALUES ('half')")
        raise FailedPrecondition("NOPE", "refused after writing")

    async def duplicate(tx):
        await tx.execute("INSERT INTO rows (id) VALUES ('a')")  # 'a' is inserted earlier in the batch

    results = await asyncio.gather(committer.run(insert("a")), committer.run(writes_then_refuses),
                                   committer.run(duplicate), committer.run(insert("b")), return_exceptions=True)
    assert results[0] == "a" and results[3] == "b"
    assert isinstance(results[1], FailedPrecondition) and results[1].reason == "NOPE"
    assert "UNIQUE" in str(results[2])
    assert committer.batches == 1
    assert await stored(db) == ["a", "b"]  # nothing of the failed steps, all of the others


async def test_a_unit_can_undo_its_writes_and_store_something_else(db):
    """What a kiosk step does when its work is refused: undo the work, store the refusal."""
    committer = StepCommitter(db)

    async def undoes_then_writes(tx):
        await tx.execute("INSERT INTO rows (id) VALUES ('work')")
        await committer.undo(tx)
        await tx.execute("INSERT INTO rows (id) VALUES ('refusal')")
        return "refused"

    results = await asyncio.gather(committer.run(insert("a")), committer.run(undoes_then_writes),
                                   committer.run(insert("b")))
    assert results == ["a", "refused", "b"] and committer.batches == 1
    assert await stored(db) == ["a", "b", "refusal"]  # the units before and after it keep theirs


async def test_no_answer_before_commit_and_a_failed_commit_stores_nothing(db):
    """A deferred foreign key fails at COMMIT: every step of that batch is told to send again
    (UNAVAILABLE), none is answered as done, and nothing of the batch is stored."""
    committer = StepCommitter(db)
    results = await asyncio.gather(committer.run(insert("ok-1")), committer.run(insert("orphan", parent="none")),
                                   committer.run(insert("ok-2")), return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.reason == "STEP_NOT_STORED" for r in results), results
    assert await stored(db) == []
    assert committer.batches == 0
    # the writer is usable again afterwards
    assert await committer.run(insert("after")) == "after"
    assert await stored(db) == ["after"]


async def test_steps_queued_while_a_batch_runs_go_into_the_next(db):
    committer = StepCommitter(db)
    late: list[asyncio.Future] = []

    async def submits_more(tx):
        # arrives while this batch runs (as a message read during a long batch would)
        late.append(asyncio.ensure_future(committer.run(insert("late"))))
        await tx.execute("INSERT INTO rows (id) VALUES ('first')")
        return "first"

    assert await committer.run(submits_more) == "first"
    assert await late[0] == "late"
    assert committer.batches == 2
    assert await stored(db) == ["first", "late"]


async def test_a_caller_that_went_away_still_has_its_step_stored(db):
    committer = StepCommitter(db)
    gone = asyncio.ensure_future(committer.run(insert("gone")))
    stays = asyncio.ensure_future(committer.run(insert("stays")))
    await asyncio.sleep(0)
    gone.cancel()
    assert await stays == "stays"
    assert await stored(db) == ["gone", "stays"]


async def test_a_transaction_that_cannot_begin_fails_its_units_and_drains(db):
    committer = StepCommitter(db)
    await db.close()  # the writer is gone: BEGIN cannot run
    results = await asyncio.wait_for(
        asyncio.gather(*(committer.run(insert(f"x{i}")) for i in range(3)), return_exceptions=True), 5)
    assert all(isinstance(r, Unavailable) and r.reason == "STEP_NOT_STORED" for r in results), results
    assert committer.batches == 0 and committer._queue == []


async def test_lingering_lets_work_on_its_way_join_the_batch(db):
    """Units submitted from tasks that start over several turns of the loop share one batch when the
    committer lingers while the loop is busy; without lingering the first goes alone."""

    async def late(committer, i: int):
        for _ in range(i):  # arrive i turns of the loop later, the loop busy meanwhile (a request
            began = time.perf_counter()  # being parsed and checked takes tens of microseconds)
            while time.perf_counter() - began < 2e-4:
                pass
            await asyncio.sleep(0)
        return await committer.run(insert(f"{id(committer)}-{i:02d}"))

    eager = StepCommitter(db)
    await asyncio.gather(*(late(eager, i) for i in range(10)))
    lingering = StepCommitter(db, linger_s=0.5)
    await asyncio.gather(*(late(lingering, i) for i in range(10)))
    assert eager.batches > 1
    assert (lingering.batches, lingering.units) == (1, 10)
    assert len(await stored(db)) == 20
