"""StreamNotices: live delivery, resumption after a cut with no gap and no duplicate, across processes."""

import asyncio
from datetime import date

import grpc

from onestop.notification.v1 import notification_pb2 as pb
from onestop.notification.v1 import notification_pb2_grpc as pb_grpc

from server import app
from server import testing
from tests.notification.support import LG, add_card_holder, add_person, details, everyone, public, staff

WAIT = 10  # seconds: an upper bound for a delivery to arrive, never a sleep


async def _send(stub, request_id: str, title: str, audience=None):
    return await stub.SendNotice(pb.SendNoticeRequest(request_id=request_id, municipality_code=LG, title=title,
                                                      body="{name} 様", audience=audience or everyone()))


async def _take(call, n: int) -> list[pb.Notice]:
    got = []
    async def read():
        async for message in call:
            got.append(message.notice)
            if len(got) == n:
                return
    await asyncio.wait_for(read(), WAIT)
    return got


async def test_stream_replays_then_delivers_live_then_resumes_without_gap_or_duplicate(platform):
    me, meta = await add_card_holder(platform, "住民 A")
    other = await add_person(platform, "住民 B", date(1980, 1, 1))
    stub = staff(platform)
    await _send(stub, "st-1", "one")
    await _send(stub, "st-2", "only B", pb.Audience(residents=pb.Audience.Residents(resident_ids=[other])))
    resident = public(platform)

    call = resident.StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=meta)
    first = await _take(call, 1)
    assert [n.title for n in first] == ["one"]  # replay: only the caller's own notices
    await _send(stub, "st-3", "two")            # live
    second = await _take(call, 1)
    assert [n.title for n in second] == ["two"]
    call.cancel()                               # the connection is cut...

    await _send(stub, "st-4", "three")          # ...and notices keep coming meanwhile
    await _send(stub, "st-5", "four")
    resumed = resident.StreamNotices(pb.StreamNoticesRequest(after_cursor=second[-1].cursor), metadata=meta)
    rest = await _take(resumed, 2)
    await _send(stub, "st-6", "five")
    rest += await _take(resumed, 1)
    resumed.cancel()
    titles = [n.title for n in first + second + rest]
    assert titles == ["one", "two", "three", "four", "five"]
    cursors = [n.cursor for n in first + second + rest]
    assert cursors == sorted(set(cursors))


async def test_notice_sent_through_process_a_reaches_subscriber_on_process_b(platform):
    me, meta = await add_card_holder(platform, "住民 A")
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    b = testing.TestPlatform(pki=platform.pki, settings=platform.settings, clock=platform.clock, server=second)
    try:
        on_b = pb_grpc.NotificationServiceStub(b.channel())
        box = await on_b.ListNotices(pb.ListNoticesRequest(), metadata=meta)
        call = on_b.StreamNotices(pb.StreamNoticesRequest(after_cursor=box.latest_cursor), metadata=meta)
        # make sure the subscription is live on B before sending on A
        hub_b = second.platform.services["notification_hub"]
        for _ in range(200):
            if hub_b.subscriber_count:
                break
            await asyncio.sleep(0.01)
        assert hub_b.subscriber_count == 1
        sent = await _send(staff(platform), "x-1", "from A")
        got = await _take(call, 1)
        assert [(n.notice_id, n.title, n.body) for n in got] == [(sent.notice.notice_id, "from A", "住民 A 様")]
        call.cancel()
    finally:
        await b.close()


async def test_two_processes_scheduling_the_same_due_notice_send_it_once(platform):
    for i in range(3):
        await add_person(platform, f"住民 {i}", date(1980, 1, 1))
    from google.protobuf.timestamp_pb2 import Timestamp
    from datetime import timedelta
    at = Timestamp()
    at.FromDatetime(platform.clock.now() + timedelta(minutes=5))
    sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="sch-1", municipality_code=LG, title="t", body="{name}", audience=everyone(), send_at=at))
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    try:
        platform.clock.advance(minutes=6)
        a = platform.server.platform.services["notification_scheduler"]
        b = second.platform.services["notification_scheduler"]
        counts = await asyncio.gather(a.send_due(), b.send_due(), a.send_due(), b.send_due())
        assert sum(counts) == 1
        async with platform.db.read() as tx:
            assert await tx.scalar("SELECT count(*) FROM deliveries WHERE notice_id = ?",
                                   (sent.notice.notice_id,)) == 3
    finally:
        await second.stop(grace=1)


async def test_a_notice_from_another_area_through_the_sink_reaches_the_stream(platform):
    me, meta = await add_card_holder(platform, "住民 A")
    call = public(platform).StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=meta)
    hub = platform.server.platform.services["notification_hub"]
    for _ in range(200):
        if hub.subscriber_count:
            break
        await asyncio.sleep(0.01)
    sink = platform.server.platform.services["notices"]
    async with platform.db.write() as tx:
        notice_id = await sink.send_to_resident(tx, resident_id=me, municipality_code=LG, title="申請を受理しました",
                                                body="児童手当の認定請求を受理しました。", link="/applications/x",
                                                dedupe_key="application:x:accepted")
    got = await _take(call, 1)
    assert [(n.notice_id, n.title, n.link, n.category) for n in got] == [
        (notice_id, "申請を受理しました", "/applications/x", "application")]
    call.cancel()


async def test_stream_refuses_bad_cursor_and_machines(platform):
    me, meta = await add_card_holder(platform, "住民 A")
    call = public(platform).StreamNotices(pb.StreamNoticesRequest(after_cursor=-1), metadata=meta)
    try:
        async for _ in call:
            raise AssertionError("no message expected")
        raise AssertionError("the stream should have failed")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    call = staff(platform).StreamNotices(pb.StreamNoticesRequest())
    try:
        async for _ in call:
            raise AssertionError("no message expected")
        raise AssertionError("the stream should have failed")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rules_run_concurrently_on_two_processes_fire_once(platform):
    for i in range(4):
        await add_person(platform, f"親{i}", date(1985, 1, 1), household_id=f"hc{i}")
        await add_person(platform, f"子{i}", date(2026, 11, 4), household_id=f"hc{i}")  # 1 month on 12/3
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    b = testing.TestPlatform(pki=platform.pki, settings=platform.settings, clock=platform.clock, server=second)
    try:
        on_a, on_b = staff(platform), staff(b)
        replies = await asyncio.gather(*(
            stub.RunRules(pb.RunRulesRequest(request_id=f"cc-{i}", municipality_code=LG))
            for i, stub in enumerate([on_a, on_b, on_a, on_b])))
        fired = sum(o.fired for r in replies for o in r.outcomes if o.rule == "checkup_1m")
        assert fired == 4
        async with platform.db.read() as tx:
            assert await tx.scalar("SELECT count(*) FROM deliveries d JOIN notices n USING (notice_id)"
                                   " WHERE n.source = 'rule'") == 4
    finally:
        await b.close()


async def test_streams_cut_and_resumed_at_random_on_two_processes_see_every_notice_once(platform):
    """Subscribers hop between processes A and B, cut after a few messages, and resume from their last
    cursor while notices keep coming through A: each ends with every notice exactly once, in order."""
    import random

    rng = random.Random(7)
    people = [await add_card_holder(platform, f"購読者 {i}") for i in range(4)]
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    b = testing.TestPlatform(pki=platform.pki, settings=platform.settings, clock=platform.clock, server=second)
    total = 30
    try:
        stubs = [public(platform), pb_grpc.NotificationServiceStub(b.channel())]
        sender = staff(platform)
        done = asyncio.Event()

        async def send_all():
            for i in range(total):
                await _send(sender, f"churn-{i}", f"n{i:02d}")
                await asyncio.sleep(0)  # let the readers interleave
            done.set()

        async def reader(meta) -> list[pb.Notice]:
            got: list[pb.Notice] = []
            for _ in range(200):  # bounded number of reconnections
                call = rng.choice(stubs).StreamNotices(
                    pb.StreamNoticesRequest(after_cursor=got[-1].cursor if got else 0), metadata=meta)
                want = rng.randint(1, 5)
                taken = 0
                try:
                    async with asyncio.timeout(WAIT):
                        async for message in call:
                            got.append(message.notice)
                            taken += 1
                            if taken == want or len(got) == total:
                                break
                finally:
                    call.cancel()
                if len(got) >= total:
                    return got
            raise AssertionError("too many reconnections")

        _, *results = await asyncio.gather(send_all(), *(reader(meta) for _, meta in people))
        for got in results:
            assert [n.title for n in got] == [f"n{i:02d}" for i in range(total)]
            assert [n.cursor for n in got] == sorted({n.cursor for n in got})
    finally:
        await b.close()


async def _sink_many(platform, resident_id: str, titles: list[str]) -> None:
    sink = platform.server.platform.services["notices"]
    async with platform.db.write() as tx:
        for title in titles:
            await sink.send_to_resident(tx, resident_id=resident_id, municipality_code=LG, title=title, body="b")


async def test_long_backlog_replays_in_order_in_batches(platform):
    me, meta = await add_card_holder(platform, "住民 A")
    titles = [f"t{i:03d}" for i in range(250)]  # more than one catch-up batch (100)
    await _sink_many(platform, me, titles)
    call = public(platform).StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=meta)
    got = await _take(call, 250)
    call.cancel()
    assert [n.title for n in got] == titles


async def test_subscriber_that_falls_behind_catches_up_from_the_database(platform, monkeypatch):
    from server.notification import hub as hub_module

    monkeypatch.setattr(hub_module, "MAX_QUEUED", 3)
    overflowed = []
    push = hub_module.Subscription.push

    def recording_push(self, row):
        push(self, row)
        overflowed.append(self.overflowed)

    monkeypatch.setattr(hub_module.Subscription, "push", recording_push)
    me, meta = await add_card_holder(platform, "住民 A")
    call = public(platform).StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=meta)
    await _sink_many(platform, me, ["first"])
    assert [n.title for n in await _take(call, 1)] == ["first"]
    titles = [f"burst {i}" for i in range(20)]  # one poll queues 20 rows: more than 3, so it overflows
    await _sink_many(platform, me, titles)
    got = await _take(call, 20)
    call.cancel()
    assert [n.title for n in got] == titles
    assert any(overflowed)  # the queue did overflow: the rest came from the database, in order


async def test_stream_ends_once_the_session_is_signed_out(platform):
    from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

    me, meta = await add_card_holder(platform, "住民 A")
    call = public(platform).StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=meta)
    await _sink_many(platform, me, ["before"])
    assert [n.title for n in await _take(call, 1)] == ["before"]
    await auth_pb2_grpc.AuthServiceStub(platform.channel()).SignOut(auth_pb2.SignOutRequest(request_id="so-1"),
                                                                    metadata=meta)
    platform.clock.advance(seconds=6)
    await _sink_many(platform, me, ["after sign-out"])
    received = []
    try:
        async with asyncio.timeout(WAIT):
            async for message in call:
                received.append(message.notice.title)
        raise AssertionError("the stream should have ended")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(error)[0] == "SESSION_ENDED"
    assert received == []
