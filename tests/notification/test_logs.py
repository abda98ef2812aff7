"""The notification area's log lines carry ids and codes, never names, addresses or notice text."""

import io
import json
import logging
from datetime import date

from onestop.notification.v1 import notification_pb2 as pb

from server import logs
from tests.notification.support import LG, add_card_holder, add_person, everyone, public, staff


async def test_notification_logs_hold_no_personal_data(platform):
    stream = io.StringIO()
    previous = logging.getLogger().handlers[:], logging.getLogger().level
    logs.setup("DEBUG", stream)
    try:
        me, meta = await add_card_holder(platform, "秘密 花子", household_id="h-secret")
        await add_person(platform, "秘密 ひな", date(2026, 11, 4), household_id="h-secret")
        stub = staff(platform)
        await stub.SendNotice(pb.SendNoticeRequest(request_id="lg-1", municipality_code=LG, title="個別のお知らせ",
                                                   body="{name} 様 本文の秘密", audience=everyone()))
        await stub.RunRules(pb.RunRulesRequest(request_id="lg-2", municipality_code=LG))
        await platform.server.platform.services["notification_scheduler"].tick()
        await public(platform).GetSelfInformation(pb.GetSelfInformationRequest(), metadata=meta)
    finally:
        logging.getLogger().handlers[:], _ = previous
        logging.getLogger().setLevel(previous[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line.get("msg", line.get("message", "")) == "notice accepted" or "notice_id" in line for line in lines)
    text = stream.getvalue()
    for secret in ("秘密", "花子", "ひな", "個別のお知らせ", "本文", "2026-11-04", "1990-04-10", meta[0][1]):
        assert secret not in text, secret
