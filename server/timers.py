"""Background sweeps: the work no caller asks for but the rules need done on time.

Each sweep is one idempotent unit of work over the shared database, deciding with the injected
clock (`platform.clock`) exactly as the RPC that does the same job on request would:

- `points_expiry`   — lots past the date their municipality's rule gave them (`expiry_months`,
                      fixed when the lot was granted) are expired, one ExpirePoints job per
                      municipality that has any, through the points area's batch writer (the job
                      and its stored outcome are those of the RPC, under the caller `timer`);
- `points_holdings` — conversions held their 14 days are placed in the residence municipality and
                      redemption holds past their 10-minute life are released (SweepHoldings);
- `kiosk_expiry`    — abandoned kiosk transactions are expired, their unconfirmed copies and
                      pending charges voided (`KioskDesk.sweep_expired`);
- `challenge_purge` — sign-in challenges expired over an hour ago are deleted (the same rule
                      sign-in applies now and then on its own);
- `upload_leftovers` — temporary upload files and unreferenced attachment files that a server
                      killed mid-upload left behind are removed (server.application.leftovers).

Sessions are not purged: no retention rule for ended sessions exists yet.

Every server process runs its own timers. Two processes on one database never apply anything
twice: each sweep re-reads what is due inside its own write transaction (BEGIN IMMEDIATE, which
SQLite serialises across processes), so the second finds nothing left (tests/test_timers.py).
A cheap read first decides whether a write transaction is needed at all, so an idle tick holds no
write lock. A sweep that fails is logged (its name and the error type, nothing else) and the other
sweeps, the next tick and the server carry on.

`Timers.run_due()` runs every sweep once, now: tests and operator tooling call it directly. The
loops (one task per sweep, started by `server.app.start` when `settings.timers` is on) wait their
interval with a little jitter and stop on shutdown, letting a sweep in progress finish.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from onestop.points.v1 import points_pb2

from server.application import leftovers
from server.application.blobs import BlobStore
from server.auth import store as auth_store
from server.clock import to_epoch_ms
from server.ids import new_id
from server.issuance import store as issuance_store
from server.issuance.kiosk import OPEN_STATES
from server.platform import Platform
from server.points import ledger

log = logging.getLogger("onestop.timers")

# Waits are interval * (1 + up to JITTER), so processes started together drift apart.
JITTER = 0.1
# Sign-in keeps challenges an hour past their expiry (server.auth.signin); so does the sweep.
CHALLENGE_KEEP_MS = 3_600_000
# Kiosk sweeps expire at most a few hundred transactions per write transaction; bound the rounds.
KIOSK_MAX_ROUNDS = 50
STOP_TIMEOUT_SECONDS = 10.0
# Stored outcomes of the points jobs a timer submits are keyed like the RPCs' (caller, method, id).
TIMER_CALLER = "timer"
POINTS = "/" + points_pb2.DESCRIPTOR.services_by_name["PointsService"].full_name


@dataclass(frozen=True)
class Sweep:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[int]]  # returns how many things it changed (for the log)


class Timers:
    """Runs sweeps now (`run_due`) or every interval (`start` ... `stop`)."""

    def __init__(self, sweeps: list[Sweep]) -> None:
        self.sweeps = {sweep.name: sweep for sweep in sweeps}
        self.runs: Counter[str] = Counter()      # completed runs per sweep
        self.failures: Counter[str] = Counter()  # failed runs per sweep
        self.changed: Counter[str] = Counter()   # things changed per sweep, all runs together
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    async def run_sweep(self, name: str) -> int | None:
        """Run one sweep once; its count, or None when it failed (logged, never raised)."""
        sweep = self.sweeps[name]
        try:
            count = await sweep.run()
        except Exception:
            self.failures[name] += 1
            # The formatter keeps the error's type and place only, never its message.
            log.exception("sweep failed", extra={"sweep": name, "failures": self.failures[name]})
            return None
        self.runs[name] += 1
        self.changed[name] += count
        if count:
            log.info("sweep done", extra={"sweep": name, "count": count})
        return count

    async def run_due(self) -> dict[str, int | None]:
        """Run every sweep once, now, one after another: {name: count, or None if it failed}."""
        return {name: await self.run_sweep(name) for name in self.sweeps}

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._tasks = [asyncio.create_task(self._loop(sweep), name=f"sweep:{sweep.name}")
                       for sweep in self.sweeps.values()]

    async def _loop(self, sweep: Sweep) -> None:
        while True:
            delay = sweep.interval_seconds * (1 + random.random() * JITTER)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            await self.run_sweep(sweep.name)

    async def stop(self) -> None:
        """Stop the loops; a sweep in progress may finish (bounded), then the rest is cancelled."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


# --- the sweeps -------------------------------------------------------------------------------------

def _now_ms(platform: Platform) -> int:
    return to_epoch_ms(platform.clock.now())


async def expire_points(platform: Platform) -> int:
    """One ExpirePoints job per municipality with lots past their date; returns the points expired."""
    # The same selection as ledger.expire makes inside its transaction (which stays the authority),
    # driven from the lots' expiry index (CROSS JOIN keeps SQLite from starting at the accounts): an
    # idle tick is one index probe, a due one reads only the due lots.
    now_ms = _now_ms(platform)
    async with platform.db.read() as tx:
        if not await tx.scalar(
                "SELECT EXISTS (SELECT 1 FROM points_lots WHERE remaining > 0 AND expires_at_ms <= ?)", (now_ms,)):
            return 0
        rows = await tx.all(
            "SELECT DISTINCT a.municipality_code FROM points_lots l CROSS JOIN points_accounts a"
            " ON a.account_id = l.account_id"
            " WHERE l.remaining > 0 AND l.expires_at_ms <= ? AND a.kind = 'resident'", (now_ms,))
    if not rows:
        return 0
    writer = platform.services["points_writer"]
    expired, failed = 0, None
    # One job per municipality, each awaited before the next: every job is then a transaction of its
    # own (rather than one long batch of all of them), so other writes get their turn in between, and
    # a municipality whose expiry fails does not hold back the others.
    for (code,) in rows:
        request = points_pb2.ExpirePointsRequest(request_id=new_id("tmr"), municipality_code=code)
        try:
            reply = await writer.submit((TIMER_CALLER, f"{POINTS}/ExpirePoints", request.request_id), request,
                                        points_pb2.ExpirePointsResponse,
                                        lambda conn, now_ms, code=code: ledger.expire(conn, now_ms, code))
        except Exception as error:
            log.warning("points expiry failed", extra={"municipality_code": code, "error": type(error).__name__})
            failed = failed or error
            continue
        expired += reply.expired_points
    if failed is not None:
        raise failed
    return expired


async def sweep_holdings(platform: Platform) -> int:
    """Place conversions past their holding period; release expired redemption holds."""
    now_ms = _now_ms(platform)
    async with platform.db.read() as tx:
        due = await tx.scalar(
            "SELECT EXISTS (SELECT 1 FROM points_conversions WHERE placed_at_ms IS NULL AND held_until_ms <= ?)"
            " OR EXISTS (SELECT 1 FROM points_holds WHERE state = 'pending' AND expires_at_ms <= ?)",
            (now_ms, now_ms))
    if not due:
        return 0
    request = points_pb2.SweepHoldingsRequest(request_id=new_id("tmr"))
    reply = await platform.services["points_writer"].submit(
        (TIMER_CALLER, f"{POINTS}/SweepHoldings", request.request_id), request, points_pb2.SweepHoldingsResponse,
        lambda conn, now_ms: ledger.sweep(conn, now_ms))
    return reply.conversions_placed + reply.holds_released


async def expire_kiosk_transactions(platform: Platform) -> int:
    """Expire abandoned kiosk transactions (their unconfirmed copies and charges are voided)."""
    async with platform.db.read() as tx:
        due = await issuance_store.expired_transactions(tx, _now_ms(platform), OPEN_STATES, limit=1)
    if not due:
        return 0
    desk = platform.services["kiosk_desk"]
    total = 0
    for _ in range(KIOSK_MAX_ROUNDS):  # each round one short write transaction
        expired = await desk.sweep_expired()
        total += expired
        if not expired:
            break
    return total


async def purge_challenges(platform: Platform) -> int:
    """Delete sign-in challenges that expired over an hour ago; returns about how many."""
    cutoff = _now_ms(platform) - CHALLENGE_KEEP_MS
    async with platform.db.read() as tx:
        stale = await tx.scalar("SELECT COUNT(*) FROM challenges WHERE expires_at_ms < ?", (cutoff,))
    if not stale:
        return 0
    async with platform.db.write() as tx:
        await auth_store.purge_challenges(tx, cutoff)
    return stale


async def remove_upload_leftovers(platform: Platform) -> int:
    """Files a killed server left in the blob folder (see server.application.leftovers)."""
    return await leftovers.sweep(platform.db, BlobStore(platform.settings.blob_dir),
                                 platform.settings.upload_leftover_age_seconds)


def platform_sweeps(platform: Platform) -> list[Sweep]:
    """The sweeps of the areas this server hosts, at the intervals the settings give."""
    settings, services = platform.settings, platform.services

    def bound(function):
        return lambda: function(platform)

    sweeps = []
    if "points_writer" in services:
        sweeps.append(Sweep("points_expiry", settings.points_expiry_interval_seconds, bound(expire_points)))
        sweeps.append(Sweep("points_holdings", settings.points_holdings_interval_seconds, bound(sweep_holdings)))
    if "kiosk_desk" in services:
        sweeps.append(Sweep("kiosk_expiry", settings.kiosk_expiry_interval_seconds,
                            bound(expire_kiosk_transactions)))
    if "authenticator" in services:
        sweeps.append(Sweep("challenge_purge", settings.challenge_purge_interval_seconds, bound(purge_challenges)))
    sweeps.append(Sweep("upload_leftovers", settings.upload_leftovers_interval_seconds,
                        bound(remove_upload_leftovers)))
    return sweeps


def install(platform: Platform) -> Timers:
    """Build the platform's timers, publish them as `services["timers"]`, start them if the settings
    say so, and stop them first thing at shutdown (before the points writer and the database close)."""
    timers = Timers(platform_sweeps(platform))
    platform.services["timers"] = timers
    platform.on_shutdown.insert(0, timers.stop)
    if platform.settings.timers:
        timers.start()
    return timers
