"""A subscriber that never reads its stream, and one that reads slowly, stall nobody else."""

from __future__ import annotations

import asyncio
from datetime import date

import grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.notification.v1 import notification_pb2 as pb

from tests.notification.support import add_card_holder, everyone, public, staff

NOTICES = 120
BODY = "健診のご案内です。" * 200  # ~5 KB a notice: the stalled stream's flow-control window fills fast


async def _collect(stream, count: int) -> list[int]:
    cursors = []
    async for reply in stream:
        cursors.append(reply.notice.cursor)
        if len(cursors) == count:
            break
    return cursors


async def test_a_stalled_and_a_slow_subscriber_do_not_hold_up_the_others(platform):
    _, stalled_md = await add_card_holder(platform, "止まり 一郎", date(1980, 1, 1))
    _, slow_md = await add_card_holder(platform, "遅読 二郎", date(1981, 2, 2))
    _, brisk_md = await add_card_holder(platform, "快速 三子", date(1982, 3, 3))
    resident = public(platform)
    stalled = resident.StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=stalled_md)
    slow = resident.StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=slow_md)
    brisk = resident.StreamNotices(pb.StreamNoticesRequest(after_cursor=0), metadata=brisk_md)

    async def slow_reader() -> list[int]:
        cursors = []
        async for reply in slow:
            cursors.append(reply.notice.cursor)
            await asyncio.sleep(0.01)
            if len(cursors) == NOTICES:
                return cursors
        return cursors

    slow_task = asyncio.create_task(slow_reader())
    brisk_task = asyncio.create_task(_collect(brisk, NOTICES))
    officer = staff(platform)
    for n in range(NOTICES):
        await officer.SendNotice(pb.SendNoticeRequest(
            request_id=f"n{n}", municipality_code="131016", category="health", title=f"お知らせ {n}",
            body=BODY, audience=everyone()))
        if n == NOTICES // 2:
            # Unary calls are served promptly while a stream is stalled.
            me = await auth_pb2_grpc.AuthServiceStub(platform.channel()).WhoAmI(
                auth_pb2.WhoAmIRequest(), metadata=brisk_md, timeout=10)
            assert me.resident_id
    brisk_cursors = await asyncio.wait_for(brisk_task, timeout=60)
    slow_cursors = await asyncio.wait_for(slow_task, timeout=60)
    assert len(brisk_cursors) == NOTICES and brisk_cursors == sorted(set(brisk_cursors))
    assert len(slow_cursors) == NOTICES and slow_cursors == sorted(set(slow_cursors))
    # The stalled subscriber finally reads: everything, in order, once (or it is told to resume).
    try:
        late = await asyncio.wait_for(_collect(stalled, NOTICES), timeout=60)
        assert late == sorted(set(late)) and len(late) == NOTICES
    except grpc.aio.AioRpcError as error:  # a subscriber too far behind may be cut; it resumes by cursor
        assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
    for stream in (stalled, slow, brisk):
        stream.cancel()
