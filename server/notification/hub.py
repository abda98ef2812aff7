"""Live delivery: one shared poller per process wakes the local stream subscribers.

Nothing crosses processes in memory: the poller reads `deliveries` (seq > last seen) every
POLL_SECONDS, so a notice written by any server process on the database reaches subscribers here.
A local write pokes the poller to look at once. The poller only learns *who* has something new; each
subscriber then reads its own inbox after its cursor, so resumption has no gap and no duplicate
whatever the wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict

from server.db import Database
from server.notification import store

log = logging.getLogger("onestop.notification.hub")

POLL_SECONDS = float(os.environ.get("ONESTOP_NOTIFICATION_POLL_MS", "200")) / 1000
BATCH = 5000


class Subscription:
    def __init__(self, hub: "DeliveryHub", resident_id: str) -> None:
        self.hub = hub
        self.resident_id = resident_id
        self.event = asyncio.Event()

    async def wait(self) -> None:
        await self.event.wait()

    def close(self) -> None:
        self.hub._unsubscribe(self)


class DeliveryHub:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._poke = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_seq = 0

    def poke(self) -> None:
        """Something was written here: look now (no-op when nobody listens)."""
        self._poke.set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def subscribe(self, resident_id: str) -> Subscription:
        sub = Subscription(self, resident_id)
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
                await asyncio.wait_for(self._poke.wait(), POLL_SECONDS)
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
                rows = await store.recipients_after(tx, self._last_seq, BATCH)
            if not rows:
                return
            self._last_seq = rows[-1]["seq"]
            for row in rows:
                for sub in self._subscribers.get(row["resident_id"], ()):
                    sub.event.set()
            if len(rows) < BATCH:
                return
