"""The scheduler loop of one server process: due scheduled notices, and the daily rules run.

Safe with several server processes on one database: a due notice is claimed by an atomic
`UPDATE ... WHERE status = 'scheduled'` (one process wins), then its deliveries are written in
chunks, each its own transaction continuing from the position stored with the notice (a process
that stops between chunks leaves the rest to whichever scheduler ticks next: `resume_fan_outs`);
the daily rules run is claimed per municipality and day by an INSERT OR IGNORE into `rule_runs`
(and rules fire once anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from datetime import date

from server.clock import JST, FixedClock, to_epoch_ms
from server.platform import Platform
from server.notification import rules, store, templates

log = logging.getLogger("onestop.notification.scheduler")



def enabled(platform: Platform) -> bool:
    """`ONESTOP_NOTIFICATION_SCHEDULER=on|off`; unset: on, except on a FixedClock (a test drives time
    and calls `tick()` itself, and other areas' tests get no rule notices they did not ask for)."""
    setting = platform.settings.notification_scheduler
    if setting in ("on", "off"):
        return setting == "on"
    return not isinstance(platform.clock, FixedClock)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def today(platform: Platform) -> date:
    return platform.clock.now().astimezone(JST).date()


MAX_CHUNKS = 100_000  # bound on one fan-out's loop (10^9 recipients at the default chunk)


async def fan_out_step(tx, notice_id: str, now_ms: int, limit: int) -> bool:
    """Write the next chunk of a sent notice's deliveries inside `tx`; True once complete.

    The position is read inside the write transaction, so any number of processes may drive the same
    notice: each chunk continues where the last committed one stopped (and INSERT OR IGNORE on
    (notice, resident) would absorb any overlap)."""
    notice = await store.get_notice(tx, notice_id)
    if notice is None or notice["status"] != "sent" or notice["fanout_done"]:
        return True
    audience = json.loads(notice["audience"])
    prepared = templates.prepare({"title": notice["title"], "body": notice["body"]}, json.loads(notice["fields"]),
                                 store.row_fields(audience))
    _, position = await store.fan_out(tx, notice_id, notice["municipality_code"], audience, prepared["title"],
                                      prepared["body"], now_ms, date.fromisoformat(audience["on"]),
                                      after=notice["fanout_after"], limit=limit)
    return position is None


async def complete_fan_out(platform: Platform, notice_id: str, on_delivered) -> None:
    """Drive a notice's fan-out to the end, one chunk per write transaction (other writers interleave)."""
    for _ in range(MAX_CHUNKS):
        async with platform.db.write(offload=True) as tx:  # bulk INSERT ... SELECT: off the loop
            done = await fan_out_step(tx, notice_id, to_epoch_ms(platform.clock.now()),
                                          platform.settings.notification_fanout_chunk)
        on_delivered()
        if done:
            return
    log.error("fan-out did not finish", extra={"notice_id": notice_id})


class Scheduler:
    def __init__(self, platform: Platform, on_delivered) -> None:
        self._p = platform
        self._on_delivered = on_delivered
        self._task: asyncio.Task | None = None
        self.worker = f"{WORKER}:{id(self):x}"

    def start(self) -> None:
        if enabled(self._p) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="notification-scheduler")

    async def stop(self) -> None:
        """Stop between ticks (a fan-out cut short is finished by the next tick of any process)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while getattr(self._p.db, "_writer", None) is not None:
            try:
                await self.tick()
            except Exception:
                if getattr(self._p.db, "_writer", None) is None:
                    return
                log.exception("scheduler tick failed")
            await asyncio.sleep(self._p.settings.notification_tick_seconds)

    async def tick(self) -> dict[str, int]:
        return {"resumed": await self.resume_fan_outs(), "sent": await self.send_due(),
                "rule_runs": await self.run_daily_rules()}

    async def send_due(self, limit: int = 20) -> int:
        """Send every scheduled notice whose time has come; returns how many this process sent."""
        now = self._p.clock.now()
        now_ms = to_epoch_ms(now)
        async with self._p.db.read() as tx:
            due = await store.due_notices(tx, now_ms, limit)
        sent = 0
        for notice_id in due:
            async with self._p.db.write() as tx:
                if not await store.claim_scheduled(tx, notice_id, now_ms, self.worker, today(self._p)):
                    continue  # another process sent it, or it was cancelled
            await complete_fan_out(self._p, notice_id, self._on_delivered)
            sent += 1
            log.info("scheduled notice sent", extra={"notice_id": notice_id})
        return sent

    async def resume_fan_outs(self, limit: int = 20) -> int:
        """Finish fan-outs left incomplete (a process stopped between chunks)."""
        async with self._p.db.read() as tx:
            pending = await store.incomplete_fan_outs(tx, limit)
        for notice_id in pending:
            await complete_fan_out(self._p, notice_id, self._on_delivered)
            log.info("fan-out resumed", extra={"notice_id": notice_id})
        return len(pending)

    async def run_daily_rules(self) -> int:
        """Run the rules once a day per municipality with residents (claimed in `rule_runs`)."""
        on = today(self._p)
        now_ms = to_epoch_ms(self._p.clock.now())
        async with self._p.db.read() as tx:
            pending = [r[0] for r in await tx.all(
                "SELECT m.code FROM municipalities m"
                " WHERE EXISTS (SELECT 1 FROM residents r WHERE r.municipality_code = m.code)"
                " AND NOT EXISTS (SELECT 1 FROM rule_runs u WHERE u.municipality_code = m.code AND u.as_of = ?)",
                (on.isoformat(),))]
        ran = 0
        for lgcode in pending:
            async with self._p.db.write() as tx:
                claimed = await tx.execute(
                    "INSERT OR IGNORE INTO rule_runs (municipality_code, as_of, ran_at_ms) VALUES (?, ?, ?)",
                    (lgcode, on.isoformat(), now_ms))
                if not claimed:
                    continue
                outcomes = await rules.run(tx, lgcode, on, now_ms)
                fired = sum(o.fired for o in outcomes)
                await tx.execute("UPDATE rule_runs SET fired = ? WHERE municipality_code = ? AND as_of = ?",
                                 (fired, lgcode, on.isoformat()))
            ran += 1
            log.info("daily rules ran", extra={"municipality": lgcode, "fired": fired})
        if ran:
            self._on_delivered()
        return ran
