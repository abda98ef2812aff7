"""Fan-out in chunks (one transaction each): complete, no duplicates, resumed after a stop midway."""

import asyncio
from datetime import date, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from onestop.notification.v1 import notification_pb2 as pb

from server import app
from server.clock import to_epoch_ms
from server.notification.scheduler import fan_out_step
from tests.notification.support import LG, add_person, everyone, staff


async def test_small_chunks_reach_everyone_once(platform, monkeypatch):
    monkeypatch.setenv("ONESTOP_NOTIFICATION_FANOUT_CHUNK", "2")
    people = [await add_person(platform, f"住民 {i}", date(1980, 1, 1), household_id=f"h{i}") for i in range(5)]
    babies = [await add_person(platform, f"赤ちゃん {i}", date(2026, 9, 1), household_id=f"h{i}") for i in range(2)]
    await add_person(platform, "双子", date(2026, 9, 1), household_id="h0")
    sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="ch-1", municipality_code=LG, title="t", body="{name} 様", audience=everyone()))
    assert sent.notice.status == pb.NOTICE_STATUS_SENT
    assert sent.notice.delivered_count == 8
    parents = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="ch-2", municipality_code=LG, title="健診", body="{name} 様 {child_name}さん",
        audience=pb.Audience(parents_of_children=pb.Audience.ParentsOfChildren(min_months=3, max_months=3,
                                                                               as_of="2026-11-30"))))
    assert parents.notice.delivered_count == 2
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT resident_id, body FROM deliveries WHERE notice_id = ?",
                            (parents.notice.notice_id,))
        assert await tx.scalar("SELECT recipient_count FROM notices WHERE notice_id = ?",
                               (sent.notice.notice_id,)) == 8
    bodies = {r["resident_id"]: r["body"] for r in rows}
    assert set(bodies) == set(people[:2])
    assert set(bodies[people[0]].split(" 様 ")[1].removesuffix("さん").split("、")) == {"赤ちゃん 0", "双子"}
    assert not set(babies) & set(bodies)


async def test_fan_out_stopped_midway_is_finished_by_either_process_without_duplicates(platform, monkeypatch):
    monkeypatch.setenv("ONESTOP_NOTIFICATION_FANOUT_CHUNK", "3")
    for i in range(10):
        await add_person(platform, f"住民 {i}", date(1980, 1, 1))
    at = Timestamp()
    at.FromDatetime(platform.clock.now() + timedelta(minutes=1))
    stub = staff(platform)
    sent = await stub.SendNotice(pb.SendNoticeRequest(request_id="mid-1", municipality_code=LG, title="t",
                                                      body="{name}", audience=everyone(), send_at=at))
    notice_id = sent.notice.notice_id
    platform.clock.advance(minutes=2)
    from server.notification import store
    from server.notification.scheduler import today
    # A process claims the notice and writes one chunk, then stops.
    async with platform.db.write() as tx:
        assert await store.claim_scheduled(tx, notice_id, to_epoch_ms(platform.clock.now()), "gone",
                                           today(platform.server.platform))
    async with platform.db.write() as tx:
        assert not await fan_out_step(tx, notice_id, to_epoch_ms(platform.clock.now()), 3)
    shown = await stub.GetNotice(pb.GetNoticeRequest(notice_id=notice_id))
    assert shown.notice.status == pb.NOTICE_STATUS_SENDING and shown.notice.delivered_count == 3

    second = await app.start(platform.settings, clock=platform.clock, port=0)
    try:
        a = platform.server.platform.services["notification_scheduler"]
        b = second.platform.services["notification_scheduler"]
        await asyncio.gather(a.resume_fan_outs(), b.resume_fan_outs())
        assert await a.send_due() == 0 and await b.send_due() == 0  # claimed already: not sent again
    finally:
        await second.stop(grace=1)
    shown = await stub.GetNotice(pb.GetNoticeRequest(notice_id=notice_id))
    assert shown.notice.status == pb.NOTICE_STATUS_SENT and shown.notice.delivered_count == 10
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(DISTINCT resident_id) FROM deliveries WHERE notice_id = ?",
                               (notice_id,)) == 10
        assert await tx.scalar("SELECT recipient_count FROM notices WHERE notice_id = ?", (notice_id,)) == 10
