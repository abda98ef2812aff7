"""The group-committing writer: one transaction per batch, each request isolated by its savepoint."""

from __future__ import annotations

import asyncio

import pytest
from onestop.points.v1 import points_pb2 as pb

from server.clock import FixedClock
from server.db import Database, discover_migrations
from server.errors import FailedPrecondition
from server.points import ledger
from server.points import writer as writer_module
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
    db = await Database(tmp_path / "w.db").open(discover_migrations(("core", "registry", "points")))
    async with db.write() as tx:
        await tx.execute("INSERT INTO mykeys VALUES ('KEYAAAA2', 'r', 'i', 's', 0, NULL)")
    writer = BatchWriter(db, FixedClock(TEST_START))
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
        await writer.aclose()
        await db.close()


async def _ledger_db(tmp_path) -> Database:
    db = await Database(tmp_path / "w.db").open(discover_migrations(("core", "registry", "points")))
    async with db.write() as tx:
        await tx.execute("INSERT INTO mykeys VALUES ('KEYAAAA2', 'r', 'i', 's', 0, NULL)")
    return db


async def test_a_lone_request_does_not_wait_for_company(tmp_path, monkeypatch):
    # With the loop idle, the drain stops lingering at once: were it to wait for its deadline, this
    # request would take an hour.
    monkeypatch.setattr(writer_module, "LINGER_S", 3600.0)
    db = await _ledger_db(tmp_path)
    writer = BatchWriter(db, FixedClock(TEST_START))
    try:
        request = pb.GrantPointsRequest(request_id="lone", amount=5)
        reply = await asyncio.wait_for(writer.submit(("c", "m", "lone"), request, pb.GrantPointsResponse, grant(5)),
                                       timeout=10)
        assert reply.balance == 5 and (writer.batches, writer.jobs) == (1, 1)
    finally:
        await writer.aclose()
        await db.close()


async def test_batches_share_the_database_writer_with_other_areas(tmp_path):
    # The batch runs in a db.write() transaction: another area's write waits for it (and it for
    # them) on the one writer, and both commit; a failed COMMIT answers every job LEDGER_UNAVAILABLE
    # and leaves nothing behind.
    db = await _ledger_db(tmp_path)
    writer = BatchWriter(db, FixedClock(TEST_START))
    try:
        async def other_area(n: int) -> None:
            async with db.write() as tx:
                await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES (?, '', '', '')",
                                 (f"{n:06d}",))

        async def submit(n: int):
            request = pb.GrantPointsRequest(request_id=f"s{n}", amount=n)
            return await writer.submit(("c", "m", request.request_id), request, pb.GrantPointsResponse, grant(n))

        results = await asyncio.wait_for(
            asyncio.gather(*(submit(n) if n % 3 else other_area(n) for n in range(1, 61))), timeout=30)
        assert max(r.balance for r in results if r is not None) == sum(n for n in range(1, 61) if n % 3)
        async with db.read() as tx:
            assert await tx.scalar("SELECT COUNT(*) FROM municipalities") == 20
            assert await tx.scalar("SELECT COUNT(*) FROM points_requests") == 40
            assert await tx.scalar("SELECT COALESCE(SUM(balance), 0) FROM points_accounts") == 0

        def fail_commit(conn, now):
            conn.execute("PRAGMA defer_foreign_keys=ON")  # the dangling row below fails at COMMIT
            conn.execute("INSERT INTO points_lots (account_id, amount, remaining, granted_at_ms, expires_at_ms)"
                         " VALUES (999999, 1, 1, 0, 0)")
            return pb.GrantPointsResponse()

        outcomes = await asyncio.gather(
            *(writer.submit(("c", "m", f"f{n}"), pb.GrantPointsRequest(request_id=f"f{n}", amount=n),
                            pb.GrantPointsResponse, grant(n) if n else fail_commit) for n in range(3)),
            return_exceptions=True)
        assert [getattr(o, "reason", None) for o in outcomes] == ["LEDGER_UNAVAILABLE"] * 3
        async with db.read() as tx:
            assert await tx.scalar("SELECT COUNT(*) FROM points_requests WHERE request_id LIKE 'f%'") == 0
            assert await tx.scalar("SELECT COUNT(*) FROM points_lots WHERE account_id = 999999") == 0
        async with db.write() as tx:  # the writer is usable again
            await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES ('999999', '', '', '')")
    finally:
        await writer.aclose()
        await db.close()


def test_a_grant_reads_the_rule_and_accounts_its_batch_made_before_it(tmp_path):
    conn = fresh_ledger(tmp_path / "w.db")
    conn.execute("INSERT INTO mykeys VALUES ('KEYAAAA2', 'r', 'i', 's', 0, NULL)")
    now = 1_780_000_000_000
    rules = lambda conn, now: ledger.set_point_rules(conn, now, LG, 6)  # noqa: E731
    outcomes = apply_batch(conn, [job("g0", grant(1)), job("r", rules), job("g1", grant(10)), job("g2", grant(5))], now)
    assert [o.error for o in outcomes] == [None] * 4
    assert [o.response.balance for o in (outcomes[0], outcomes[2], outcomes[3])] == [1, 11, 16]
    expiries = [row[0] for row in conn.execute("SELECT expires_at_ms FROM points_lots ORDER BY lot_id")]
    assert expiries == [ledger.add_months(now, ledger.DEFAULT_EXPIRY_MONTHS)] + [ledger.add_months(now, 6)] * 2
    assert [tuple(r) for r in conn.execute("SELECT kind, balance FROM points_accounts ORDER BY account_id")] == [
        ("resident", 16), ("issuance", -16)]
