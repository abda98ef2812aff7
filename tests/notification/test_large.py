"""A notice to a municipality of 100,000 residents (slow: `make test-slow`)."""

import pytest
from onestop.notification.v1 import notification_pb2 as pb

from server.clock import to_epoch_ms
from tests.notification.support import LG, everyone, staff

N = 100_000


@pytest.mark.slow
async def test_notice_to_100k_residents_reaches_every_inbox_once(platform):
    await platform.add_municipality(LG)
    now_ms = to_epoch_ms(platform.clock.now())
    async with platform.db.write() as tx:
        await tx.executemany(
            "INSERT INTO residents (resident_id, municipality_code, name, birth_date, sex, address, updated_at_ms)"
            " VALUES (?, ?, ?, '1980-01-01', '1', '東京都', ?)",
            [(f"res_{i:06d}", LG, f"住民 {i}", now_ms) for i in range(N)])
    sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="big-1", municipality_code=LG, title="お知らせ", body="{name} 様", audience=everyone()),
        timeout=300)
    assert sent.notice.status == pb.NOTICE_STATUS_SENT and sent.notice.delivered_count == N
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(DISTINCT resident_id) FROM deliveries WHERE notice_id = ?",
                               (sent.notice.notice_id,)) == N
        assert await tx.scalar("SELECT body FROM deliveries WHERE resident_id = 'res_054321'") == "住民 54321 様"
