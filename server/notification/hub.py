"""Live delivery: one shared poller per process hands new inbox rows to the local stream subscribers.

Nothing crosses processes in memory: the poller reads `deliveries` (seq > last seen) at every poll
interval (`ONESTOP_NOTIFICATION_POLL_MS`), so a notice written by any server process on the
database reaches subscribers here.
A local write pokes the poller to look at once. Per tick the poller runs two queries whatever the
number of subscribers: the (seq, resident) pairs after its position, then the full rows of those
that someone here subscribes to, which it queues on their subscriptions.

No gap, no duplicate: a subscription is registered before its stream reads the inbox after its
cursor from the database (catch-up), the poller queues every row after its own position for every
registered subscriber, and the stream drops queued rows at or below its cursor. A subscriber that
falls more than MAX_QUEUED rows behind is told to catch up from the database again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict

from server.db import Database
from server.notification import store

log = logging.getLogger("onestop.notification.hub")

BATCH = 5000
MAX_QUEUED = 1000


class Subscription:
    def __init__(self, hub: "DeliveryHub", resident_id: str) -> None:
        self.hub = hub
        self.resident_id = resident_id
        self.event = asyncio.Event()
        self.rows: list = []
        self.overflowed = False

    def push(self, row) -> None:
        if self.overflowed:
            return
        if len(self.rows) >= MAX_QUEUED:
            self.rows.clear()
            self.overflowed = True  # the stream re-reads the database after its cursor
        else:
            self.rows.append(row)
        self.event.set()

    async def next_batch(self) -> tuple[list, bool]:
        """Wait for rows; returns (rows, must_catch_up)."""
        await self.event.wait()
        self.event.clear()
        rows, self.rows = self.rows, []
        overflowed, self.overflowed = self.overflowed, False
        return rows, overflowed

    def close(self) -> None:
        self.hub._unsubscribe(self)


class DeliveryHub:
    def __init__(self, db: Database, *, poll_seconds: float = 0.2) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._poke = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._starting = asyncio.Lock()
        self._last_seq = 0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def poke(self) -> None:
        """Something was written here: look now (no-op when nobody listens)."""
        self._poke.set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def subscribe(self, resident_id: str) -> Subscription:
        sub = Subscription(self, resident_id)
        async with self._starting:
            if self._task is None or self._task.done():
                async with self._db.read() as tx:
                    self._last_seq = await store.max_seq(tx)
                self._task = asyncio.get_running_loop().create_task(self._run(), name="notification-hub")
            self._subscribers[resident_id].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.resident_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.resident_id]

    async def _run(self) -> None:
        while self._subscribers:
            try:
                await asyncio.wait_for(self._poke.wait(), self._poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._poke.clear()
            try:
                await self._poll()
            except Exception:  # the database closing under us at shutdown, or a transient error
                if getattr(self._db, "_writer", None) is None:
                    return
                log.exception("poll failed")

    async def _poll(self) -> None:
        while True:
            async with self._db.read() as tx:
                pairs = await store.recipients_after(tx, self._last_seq, BATCH)
                wanted = [p["seq"] for p in pairs if p["resident_id"] in self._subscribers]
                rows = await store.inbox_rows(tx, json.dumps(wanted)) if wanted else []
            if not pairs:
                return
            self._last_seq = pairs[-1]["seq"]
            for row in rows:
                for sub in tuple(self._subscribers.get(row["resident_id"], ())):
                    sub.push(row)
            if len(pairs) < BATCH:
                return
