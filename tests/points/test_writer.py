"""The group-committing writer: one transaction per batch, each request isolated by its savepoint."""

from __future__ import annotations

import asyncio

import pytest
from onestop.points.v1 import points_pb2 as pb

from server.clock import FixedClock
from server.errors import FailedPrecondition
from server.points import ledger
from server.points.writer import BatchWriter, Job, apply_batch, digest
from server.testing import TEST_START

from .kit import fresh_ledger

LG = "131016"


def job(request_id: str, work) -> Job:
    request = pb.GrantPointsRequest(request_id=request_id)
    return Job(("c", "m", request_id), digest(request), pb.GrantPointsResponse, work)


def grant(amount):
    return lambda conn, now: ledger.grant(conn, now, LG, "KEYAAAA2", amount)


def test_a_refused_or_broken_request_rolls_back_only_itself(tmp_path):
    conn = fresh_ledger(tmp_path / "w.db")
    conn.execute("INSERT INTO mykeys VALUES ('KEYAAAA2', 'r', 'i', 's', 0, NULL)")

    def refused(conn, now):
        ledger.grant(conn, now, LG, "KEYAAAA2", 1000)  # written, then undone by the refusal
        raise FailedPrecondition("SOMETHING", "no")

    def broken(conn, now):
        ledger.grant(conn, now, LG, "KEYAAAA2", 5000)
        raise RuntimeError("a bug")

    outcomes = apply_batch(conn, [job("a", grant(10)), job("b", refused), job("c", broken), job("d", grant(20))], 0)
    assert [o.error is None for o in outcomes] == [True, False, False, True]
    assert outcomes[1].error.reason == "SOMETHING" and isinstance(outcomes[2].error, RuntimeError)
    assert outcomes[3].response.balance == 30
    assert conn.execute("SELECT SUM(amount) FROM points_transfers").fetchone()[0] == 30
    stored = dict(conn.execute("SELECT request_id, failed FROM points_requests").fetchall())
    assert stored == {"a": 0, "b": 1, "d": 0}  # a bug is not stored: a retry may succeed
    assert not conn.in_transaction
    # The same request twice in one batch: applied once.
    outcomes = apply_batch(conn, [job("e", grant(1)), job("e", grant(1))], 0)
    assert outcomes[0].response == outcomes[1].response
    assert conn.execute("SELECT SUM(amount) FROM points_transfers").fetchone()[0] == 31


async def test_concurrent_submits_share_batches_and_see_their_own_outcome(tmp_path):
    conn = fresh_ledger(tmp_path / "w.db")
    conn.execute("INSERT INTO mykeys VALUES ('KEYAAAA2', 'r', 'i', 's', 0, NULL)")
    conn.close()
    writer = BatchWriter(tmp_path / "w.db", FixedClock(TEST_START))
    try:
        async def submit(n: int):
            request = pb.GrantPointsRequest(request_id=f"r{n}", amount=n)
            return await writer.submit(("c", "m", request.request_id), request, pb.GrantPointsResponse,
                                       grant(n) if n % 10 else lambda conn, now: ledger.grant(conn, now, LG, "NOPE", 1))
        results = await asyncio.wait_for(asyncio.gather(*(submit(n) for n in range(1, 101)), return_exceptions=True),
                                         timeout=30)
        assert [type(r).__name__ for r in results if not isinstance(r, pb.GrantPointsResponse)] == ["NotFound"] * 10
        assert writer.batches < writer.jobs == 100
        balances = sorted(r.balance for r in results if isinstance(r, pb.GrantPointsResponse))
        assert balances[-1] == sum(n for n in range(1, 101) if n % 10)
        with pytest.raises(Exception) as replayed:
            await submit(10)
        assert getattr(replayed.value, "reason", "") == "MYKEY_ID_NOT_FOUND"
        assert writer.jobs == 101
    finally:
        writer.close()
