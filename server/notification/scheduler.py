"""The scheduler loop of one server process: due scheduled notices, and the daily rules run.

Safe with several server processes on one database: a due notice is claimed by an atomic
`UPDATE ... WHERE status = 'scheduled'` inside the write transaction that also writes its
deliveries (one process wins; a crash leaves it scheduled), and the daily rules run is claimed per
municipality and day by an INSERT OR IGNORE into `rule_runs` (and rules fire once anyway).
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



def tick_seconds() -> float:
    return float(os.environ.get("ONESTOP_NOTIFICATION_TICK_SECONDS", "5"))


def enabled(clock) -> bool:
    """`ONESTOP_NOTIFICATION_SCHEDULER=on|off`; unset: on, except on a FixedClock (a test drives time
    and calls `tick()` itself, and other areas' tests get no rule notices they did not ask for)."""
    setting = os.environ.get("ONESTOP_NOTIFICATION_SCHEDULER", "")
    if setting in ("on", "off"):
        return setting == "on"
    return not isinstance(clock, FixedClock)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def today(platform: Platform) -> date:
    return platform.clock.now().astimezone(JST).date()


async def send_notice_now(tx, notice, now_ms: int, on: date) -> int:
    """Fan a claimed/new notice out to its audience (one INSERT ... SELECT)."""
    audience = json.loads(notice["audience"])
    prepared = templates.prepare({"title": notice["title"], "body": notice["body"]}, json.loads(notice["fields"]),
                                 store.row_fields(audience))
    return await store.fan_out(tx, notice["notice_id"], notice["municipality_code"], audience, prepared["title"],
                               prepared["body"], now_ms, on)


class Scheduler:
    def __init__(self, platform: Platform, on_delivered) -> None:
        self._p = platform
        self._on_delivered = on_delivered
        self._task: asyncio.Task | None = None
        self.worker = f"{WORKER}:{id(self):x}"

    def start(self) -> None:
        if enabled(self._p.clock) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="notification-scheduler")

    async def _loop(self) -> None:
        while getattr(self._p.db, "_writer", None) is not None:
            try:
                await self.tick()
            except Exception:
                if getattr(self._p.db, "_writer", None) is None:
                    return
                log.exception("scheduler tick failed")
            await asyncio.sleep(tick_seconds())

    async def tick(self) -> dict[str, int]:
        return {"sent": await self.send_due(), "rule_runs": await self.run_daily_rules()}

    async def send_due(self, limit: int = 20) -> int:
        """Send every scheduled notice whose time has come; returns how many this process sent."""
        now = self._p.clock.now()
        now_ms = to_epoch_ms(now)
        async with self._p.db.read() as tx:
            due = await store.due_notices(tx, now_ms, limit)
        sent = 0
        for notice_id in due:
            async with self._p.db.write() as tx:
                if not await store.claim_scheduled(tx, notice_id, now_ms, self.worker):
                    continue  # another process sent it, or it was cancelled
                notice = await store.get_notice(tx, notice_id)
                count = await send_notice_now(tx, notice, now_ms, today(self._p))
            sent += 1
            log.info("scheduled notice sent", extra={"notice_id": notice_id, "recipients": count})
        if sent:
            self._on_delivered()
        return sent

    async def run_daily_rules(self) -> int:
        """Run the rules once a day per municipality with residents (claimed in `rule_runs`)."""
        on = today(self._p)
        now_ms = to_epoch_ms(self._p.clock.now())
        async with self._p.db.read() as tx:
            pending = [r[0] for r in await tx.all(
                "SELECT DISTINCT municipality_code FROM residents r WHERE NOT EXISTS"
                " (SELECT 1 FROM rule_runs u WHERE u.municipality_code = r.municipality_code AND u.as_of = ?)",
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
