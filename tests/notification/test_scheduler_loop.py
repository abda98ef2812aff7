"""The background scheduler loop of a server process (on, with a short tick) sends due notices and
runs the day's rules by itself."""

import asyncio
from datetime import date, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from onestop.notification.v1 import notification_pb2 as pb

from server.testing import run_platform
from tests.notification.support import LG, add_person, everyone, staff


async def _until(predicate, limit: float = 10.0) -> bool:
    """Wait (bounded) for the background loop to have done something; never asserts on elapsed time."""
    for _ in range(int(limit / 0.02)):
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_background_loop_sends_due_notice_and_runs_rules(tmp_path, pki_template, monkeypatch):
    monkeypatch.setenv("ONESTOP_NOTIFICATION_SCHEDULER", "on")
    monkeypatch.setenv("ONESTOP_NOTIFICATION_TICK_SECONDS", "0.05")
    async with run_platform(tmp_path, pki_template=pki_template) as platform:
        parent = await add_person(platform, "親", date(1985, 1, 1), household_id="h1")
        await add_person(platform, "子", date(2026, 11, 4), household_id="h1")  # 1 month on 12/3
        at = Timestamp()
        at.FromDatetime(platform.clock.now() + timedelta(minutes=5))
        sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
            request_id="loop-1", municipality_code=LG, title="予定", body="{name} 様", audience=everyone(),
            send_at=at))

        async def status():
            async with platform.db.read() as tx:
                return await tx.scalar("SELECT status FROM notices WHERE notice_id = ?", (sent.notice.notice_id,))

        assert await status() == "scheduled"  # not due: the loop leaves it
        # The loop may have claimed today's rules run before the child was registered: a child
        # registered later is caught by the next day's run (the rule's window is the whole month).
        platform.clock.advance(days=1)

        async def rules_ran():
            async with platform.db.read() as tx:
                return await tx.scalar("SELECT count(*) FROM rule_firings WHERE rule = 'checkup_1m'") == 1

        async def was_sent():
            return await status() == "sent"

        assert await _until(rules_ran)
        assert await _until(was_sent)

        async def delivered():  # the fan-out follows the claim that marks the notice sent
            async with platform.db.read() as tx:
                return await tx.scalar("SELECT count(*) FROM deliveries WHERE notice_id = ? AND resident_id = ?",
                                       (sent.notice.notice_id, parent)) == 1

        assert await _until(delivered)
