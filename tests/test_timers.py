"""The background sweeps (server/timers.py): each does on its own, at the injected clock's time, what
the matching RPC does on request; a failing sweep is logged and the others and the next tick carry
on; the loops fire and stop on shutdown; two servers on one database apply nothing twice."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from onestop.points.v1 import points_pb2 as pb

from server.clock import FixedClock, from_epoch_ms, to_epoch_ms
from server.logs import JsonFormatter
from server.points.ledger import add_months
from server.procs import spawn_server
from server.testing import PIN, TEST_START, holder, run_platform
from server.timers import Sweep, Timers
from tests.issuance.kit import add_resident as add_kiosk_resident
from tests.issuance.kit import kiosk, money, order
from tests.points.kit import LG, OTHER_LG, Kit, audit, ledger_sums, rid

REGULAR = (pb.ACCOUNT_KIND_REGULAR, LG, "")
SWEEPS = {"points_expiry", "points_holdings", "kiosk_expiry", "challenge_purge", "upload_leftovers"}
IDLE = {name: 0 for name in SWEEPS}


@pytest.fixture
async def manual(tmp_path, pki_template):
    """A platform whose timers do not run on their own: the test ticks them."""
    async with run_platform(tmp_path, pki_template=pki_template, timers=False) as running:
        yield running


def timers_of(platform) -> Timers:
    return platform.server.platform.services["timers"]


async def scalar(platform, sql: str, params=()):
    async with platform.db.read() as tx:
        return await tx.scalar(sql, params)


async def abandon_kiosk_transaction(platform, ktid: str = "t-a") -> None:
    """A resident pays for one copy, then walks away before anything is printed."""
    _, card = await add_kiosk_resident(platform, holder())
    walked = await kiosk(platform, "k-away").transact(card, "1234", order(copies=1), kiosk_transaction_id=ktid,
                                                      abandon_after="payment")
    assert len(walked.documents) == 1
    assert await money(platform) == {"documents": {"issued": 1}, "charges": {"pending": (1, 300)},
                                     "fee_lines": (0, 0)}


async def test_points_expire_on_their_municipality_schedule(manual):
    kit = Kit(manual)
    hanako = await kit.resident()
    await kit.staff.SetPointRules(pb.SetPointRulesRequest(request_id=rid(), municipality_code=LG, expiry_months=6))
    granted_ms = to_epoch_ms(manual.clock.now())
    await kit.grant(hanako, 100)                    # expires in 6 months (千代田区's rule)
    await kit.grant(hanako, 40, lgcode=OTHER_LG)    # expires in 24 months (the default)
    timers = timers_of(manual)
    assert await timers.run_due() == IDLE
    # One second before the lot's date nothing expires; at the date, the timer expires it.
    due = from_epoch_ms(add_months(granted_ms, 6))
    await kit.advance(seconds=(due - manual.clock.now()).total_seconds() - 1)
    assert (await timers.run_due())["points_expiry"] == 0
    manual.clock.advance(seconds=1)
    assert (await timers.run_due())["points_expiry"] == 100
    await kit.relogin(hanako)
    balances = await kit.balances(hanako)
    assert balances[REGULAR] == (0, 0, 0)
    assert balances[(pb.ACCOUNT_KIND_REGULAR, OTHER_LG, "")] == (40, 0, 40)
    # Applied once: another tick finds nothing and writes nothing.
    assert (await timers.run_due())["points_expiry"] == 0
    assert await scalar(manual, "SELECT COUNT(*) FROM points_transfers WHERE code = 'expire'") == 1
    assert await scalar(manual, "SELECT COUNT(*) FROM points_requests WHERE caller = 'timer'") == 1
    assert await ledger_sums(manual) == (0, 0)
    # The other municipality's lot on its own (24-month) date.
    await kit.advance(days=2 * 366)
    assert (await timers.run_due())["points_expiry"] == 40
    await kit.relogin(hanako)
    assert (await kit.balances(hanako))[(pb.ACCOUNT_KIND_REGULAR, OTHER_LG, "")] == (0, 0, 0)
    assert await ledger_sums(manual) == (0, 0)


async def test_one_municipality_failing_to_expire_does_not_hold_back_the_others(manual, monkeypatch, caplog):
    from server.points import ledger

    kit = Kit(manual)
    hanako = await kit.resident()
    await kit.grant(hanako, 100)
    await kit.grant(hanako, 40, lgcode=OTHER_LG)
    await kit.advance(days=2 * 366)  # both lots are past the default 24 months
    real = ledger.expire

    def expire(conn, now_ms, municipality):
        if municipality == LG:
            raise RuntimeError("the ledger refuses 千代田区 today")
        return real(conn, now_ms, municipality)

    monkeypatch.setattr(ledger, "expire", expire)
    timers = timers_of(manual)
    with caplog.at_level(logging.WARNING, logger="onestop.timers"):
        assert (await timers.run_due())["points_expiry"] is None  # logged as a failed sweep
    assert [(r.getMessage(), r.municipality_code) for r in caplog.records if hasattr(r, "municipality_code")] == [
        ("points expiry failed", LG)]
    assert await scalar(manual, "SELECT SUM(amount) FROM points_transfers WHERE code = 'expire'") == 40
    monkeypatch.setattr(ledger, "expire", real)
    assert (await timers.run_due())["points_expiry"] == 100  # the next tick does the rest
    assert await ledger_sums(manual) == (0, 0)


async def test_held_redemption_past_its_life_is_released_and_held_conversion_placed(manual):
    kit = Kit(manual)
    hanako = await kit.resident()
    await kit.grant(hanako, 100)
    hold = await kit.authorize(hanako, 60)
    await kit.operator.SetPartnerRate(pb.SetPartnerRateRequest(request_id=rid(), partner_id="card-co", rate_milli=500))
    await kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1", card=await kit.present(hanako.card)),
        metadata=hanako.md)
    converted = await kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=100))
    timers = timers_of(manual)
    manual.clock.advance(minutes=9, seconds=59)
    assert (await timers.run_due())["points_holdings"] == 0
    assert await scalar(manual, "SELECT state FROM points_holds WHERE hold_id = ?", (hold.hold_id,)) == "pending"
    manual.clock.advance(seconds=1)
    assert (await timers.run_due())["points_holdings"] == 1
    assert await scalar(manual, "SELECT state FROM points_holds WHERE hold_id = ?", (hold.hold_id,)) == "expired"
    assert await scalar(manual, "SELECT pending FROM points_accounts WHERE kind = 'resident'") == 0
    assert (await kit.balances(hanako))[REGULAR] == (100, 0, 100)
    # The conversion waits its 14 days in the holding account, then the timer places it at home.
    await kit.advance(days=14)
    assert (await timers.run_due())["points_holdings"] == 1
    assert await scalar(manual, "SELECT placed_at_ms IS NOT NULL FROM points_conversions WHERE conversion_id = ?",
                        (converted.conversion_id,)) == 1
    await kit.relogin(hanako)
    balances = await kit.balances(hanako)
    assert balances[REGULAR] == (150, 0, 150) and balances[(pb.ACCOUNT_KIND_HOLDING, "", "")][0] == 0
    assert (await timers.run_due())["points_holdings"] == 0
    assert await ledger_sums(manual) == (0, 0)


async def test_abandoned_kiosk_transaction_is_expired_and_its_charge_voided(manual):
    await abandon_kiosk_transaction(manual)
    timers = timers_of(manual)
    manual.clock.advance(minutes=9)
    assert (await timers.run_due())["kiosk_expiry"] == 0
    assert (await money(manual))["charges"] == {"pending": (1, 300)}
    manual.clock.advance(minutes=2)
    assert (await timers.run_due())["kiosk_expiry"] == 1
    assert await money(manual) == {"documents": {"voided": 1}, "charges": {"voided": (1, 300)}, "fee_lines": (0, 0)}
    assert await scalar(manual, "SELECT state FROM kiosk_transactions WHERE kiosk_transaction_id = 't-a'") == "expired"
    assert (await timers.run_due())["kiosk_expiry"] == 0


async def test_spent_and_expired_challenges_are_purged_after_an_hour(manual):
    authenticator = manual.server.platform.services["authenticator"]
    _, card = await manual.add_resident(holder())

    async def spent():  # only a spent challenge is stored (server.auth.challenges)
        challenge = await authenticator.create_challenge()
        await authenticator.sign_in(challenge.challenge_id, card.auth_certificate_der,
                                    card.sign_with_auth_key(challenge.nonce, PIN))
        return challenge

    old = [await spent() for _ in range(3)]
    timers = timers_of(manual)
    manual.clock.advance(hours=1)  # expired 58 minutes ago: kept
    fresh = await spent()
    assert (await timers.run_due())["challenge_purge"] == 0
    manual.clock.advance(minutes=3)
    assert (await timers.run_due())["challenge_purge"] == 3
    async with manual.db.read() as tx:
        left = [row[0] for row in await tx.all("SELECT challenge_id FROM challenges")]
    assert left == [fresh.challenge_id] and old[0].challenge_id not in left


async def test_a_failing_sweep_is_logged_and_the_others_and_the_next_tick_run(manual, caplog):
    await abandon_kiosk_transaction(manual)
    manual.clock.advance(minutes=11)
    timers = timers_of(manual)
    real = timers.sweeps["points_holdings"]
    calls = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom: 山田 花子 1990-04-10")  # a message that must never be logged
        return await real.run()

    timers.sweeps["points_holdings"] = Sweep("points_holdings", real.interval_seconds, flaky)
    with caplog.at_level(logging.INFO, logger="onestop.timers"):
        first = await timers.run_due()
    assert first["points_holdings"] is None and first["kiosk_expiry"] == 1  # the others ran
    assert timers.failures["points_holdings"] == 1
    failed = [r for r in caplog.records if r.getMessage() == "sweep failed"]
    assert len(failed) == 1 and failed[0].sweep == "points_holdings" and failed[0].exc_info[0] is RuntimeError
    line = JsonFormatter().format(failed[0])
    assert '"sweep":"points_holdings"' in line and '"error":"RuntimeError"' in line
    assert "山田" not in line and "boom" not in line and "1990" not in line
    second = await timers.run_due()
    assert second["points_holdings"] == 0 and len(calls) == 2
    assert timers.runs["points_holdings"] == 1 and timers.failures["points_holdings"] == 1


async def test_the_real_loops_fire_on_their_own_and_stop_on_shutdown(tmp_path, pki_template, caplog):
    fast = {f"{name}_interval_seconds": 0.02 for name in SWEEPS}
    async with run_platform(tmp_path, pki_template=pki_template, timers=True, **fast) as running:
        timers = timers_of(running)
        assert running.settings.timers and timers.running
        calls = []

        async def fails_once() -> int:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("first tick fails")
            return 0

        timers.sweeps["challenge_purge"] = Sweep("challenge_purge", 0.02, fails_once)
        await abandon_kiosk_transaction(running)
        running.clock.advance(minutes=11)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                (await money(running))["charges"] != {"voided": (1, 300)} or len(calls) < 2):
            await asyncio.sleep(0.02)
        assert (await money(running))["charges"] == {"voided": (1, 300)}
        assert timers.changed["kiosk_expiry"] == 1
        assert timers.failures["challenge_purge"] == 1 and len(calls) >= 2  # the loop went on ticking
        assert all(timers.runs[name] >= 1 for name in SWEEPS)
        tasks = list(timers._tasks)
    assert tasks and all(task.done() and not task.cancelled() for task in tasks)
    assert not timers.running
    runs = sum(timers.runs.values()) + sum(timers.failures.values())
    await asyncio.sleep(0.1)
    assert sum(timers.runs.values()) + sum(timers.failures.values()) == runs


async def test_two_servers_on_one_database_apply_each_sweep_once(tmp_path, pki_template):
    clock = FixedClock(TEST_START)
    async with run_platform(tmp_path, pki_template=pki_template, clock=clock, timers=False) as first, \
            run_platform(tmp_path, pki_template=pki_template, clock=clock, timers=False) as second:
        kit = Kit(first)
        people = [await kit.resident(f"住民 {n}号") for n in range(3)]
        await kit.staff.SetPointRules(pb.SetPointRulesRequest(request_id=rid(), municipality_code=LG,
                                                              expiry_months=1))
        for n, person in enumerate(people):
            await kit.grant(person, 100 + n)
        holds = [await kit.authorize(person, 10) for person in people]
        await abandon_kiosk_transaction(first)
        pair = (timers_of(first), timers_of(second))

        async def both_thrice() -> list[dict]:
            results = await asyncio.gather(*(t.run_due() for t in pair for _ in range(3)))
            assert all(None not in r.values() for r in results)
            return results

        clock.advance(minutes=11)  # the holds and the kiosk transaction are past their life
        results = await both_thrice()
        assert sum(r["points_holdings"] for r in results) == 3
        assert sum(r["kiosk_expiry"] for r in results) == 1
        assert sum(r["points_expiry"] for r in results) == 0
        await kit.advance(days=40)  # every lot is past its one-month date
        results = await both_thrice()
        assert sum(r["points_expiry"] for r in results) == 303
        assert sum(r["points_holdings"] + r["kiosk_expiry"] for r in results) == 0
        for platform in (first, second):
            assert await scalar(platform, "SELECT COUNT(*) FROM points_transfers WHERE code = 'expire'") == 3
            assert await scalar(platform, "SELECT COALESCE(SUM(amount), 0) FROM points_transfers"
                                          " WHERE code = 'expire'") == 303
            assert await scalar(platform, "SELECT COUNT(*) FROM points_holds WHERE state = 'expired'") == 3
            assert await scalar(platform, "SELECT MIN(pending) FROM points_accounts") == 0
            assert await money(platform) == {"documents": {"voided": 1}, "charges": {"voided": (1, 300)},
                                             "fee_lines": (0, 0)}
            assert await ledger_sums(platform) == (0, 0)
        assert {h.hold_id for h in holds} == {row[0] for row in await _all(first, "SELECT hold_id FROM points_holds")}


async def _all(platform, sql: str):
    async with platform.db.read() as tx:
        return await tx.all(sql)


@pytest.mark.slow
async def test_two_server_processes_sweep_on_their_own_and_apply_once(tmp_path, pki_template):
    """Real processes on the system clock, their loops ticking every 20 ms: redemption holds placed
    11 minutes ago are each released exactly once. (Kiosk hours make a kiosk transaction depend on
    the time of day here; the in-process test above covers kiosk expiry across two servers.)"""
    clock = FixedClock(datetime.now(timezone.utc) - timedelta(minutes=11))
    async with run_platform(tmp_path, pki_template=pki_template, clock=clock, timers=False) as platform:
        kit = Kit(platform)
        people = [await kit.resident(f"住民 {n}号") for n in range(3)]
        for person in people:
            await kit.grant(person, 100)
            await kit.authorize(person, 30)
    fast = {f"ONESTOP_{name.upper()}_INTERVAL_SECONDS": "0.02"
            for name in ("points_expiry", "points_holdings", "kiosk_expiry", "challenge_purge")}
    data_dir = tmp_path / "data"
    servers = list(await asyncio.gather(spawn_server(data_dir, env=fast), spawn_server(data_dir, env=fast)))
    db_path = data_dir / "onestop.db"

    def state() -> tuple:
        conn = sqlite3.connect(db_path, timeout=30)
        try:
            return (conn.execute("SELECT state, COUNT(*) FROM points_holds GROUP BY state").fetchall(),
                    conn.execute("SELECT kind, SUM(pending) FROM points_accounts WHERE kind = 'resident'"
                                 " GROUP BY kind").fetchall())
        finally:
            conn.close()

    done = ([("expired", 3)], [("resident", 0)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state() != done:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # both keep ticking over the finished work
        assert all(server.process.poll() is None for server in servers)
    finally:
        codes = [server.terminate() for server in servers]
    assert codes == [0, 0]  # SIGTERM: the loops stop, the servers exit cleanly
    assert state() == done
    final = audit(db_path)
    assert final["total"] == 0 and final["negative"] == 0 and final["rebuilt_ok"] and final["lots_ok"]
    conn = sqlite3.connect(db_path)
    try:
        # A second release of a hold would have driven `pending` below zero (state() says 0).
        assert conn.execute("SELECT COUNT(*) FROM points_requests WHERE caller = 'timer'").fetchone()[0] >= 1
        assert conn.execute("SELECT SUM(balance) FROM points_accounts WHERE kind = 'resident'").fetchone()[0] == 300
    finally:
        conn.close()
