"""Notices through the gateway (inbox, read marks, SSE stream with Last-Event-ID) and certificate checks."""

from __future__ import annotations

import asyncio
import json

import httpx
from onestop.notification.v1 import notification_pb2 as npb
from onestop.notification.v1 import notification_pb2_grpc as npb_grpc

from server.ids import new_id
from server.testing import holder
from tests.gateway.conftest import add_resident

BOUND_S = 20  # a safety bound on each wait; nothing asserts how long anything took


async def send(platform, resident_id: str, title: str) -> None:
    staff = npb_grpc.NotificationServiceStub(platform.municipality("131016"))
    await staff.SendNotice(npb.SendNoticeRequest(
        request_id=new_id("rq"), municipality_code="131016", category="general", title=title,
        body="{name} 様へのお知らせです", audience=npb.Audience(residents=npb.Audience.Residents(
            resident_ids=[resident_id]))))


class Events:
    """SSE events (id, event, data) read from one streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, count: int = 1) -> list[dict]:
        events, current = [], {}
        while len(events) < count:
            line = await asyncio.wait_for(self._lines.__anext__(), BOUND_S)
            if line == "":
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = value.removeprefix(" ")
        return events


async def test_inbox_and_read_marks(platform, gateway, resident):
    resident_id, card = resident
    await send(platform, resident_id, "乳幼児健診のご案内")
    async with gateway.phone(card) as phone:
        await phone.sign_in()
        inbox = await phone.request("GET", "/v1/notices")
        assert inbox["unreadCount"] == "1"
        notice = inbox["notices"][0]
        assert notice["title"] == "乳幼児健診のご案内"
        assert notice["body"] == "山田 花子 様へのお知らせです"
        read = await phone.request("POST", f"/v1/notices/{notice['noticeId']}/read", json_body={})
        assert read["notice"]["read"] is True
        assert (await phone.request("GET", "/v1/notices", params={"unreadOnly": "true"}))["notices"] == []
        missing = await phone.client.post("/v1/notices/ntc_nope/read", json={}, headers=phone._headers())
        assert missing.status_code == 404


async def test_another_resident_cannot_see_or_mark_my_notice(platform, gateway, resident):
    resident_id, card = resident
    await send(platform, resident_id, "private")
    async with gateway.phone(card) as owner:
        await owner.sign_in()
        notice_id = (await owner.request("GET", "/v1/notices"))["notices"][0]["noticeId"]
    _, other_card = await add_resident(platform, holder("佐藤 一郎", sex="1"))
    async with gateway.phone(other_card) as other:
        await other.sign_in()
        assert (await other.request("GET", "/v1/notices"))["notices"] == []
        refused = await other.client.post(f"/v1/notices/{notice_id}/read", json={}, headers=other._headers())
    assert refused.status_code == 404
    async with gateway.phone(card) as owner:
        await owner.sign_in()
        assert (await owner.request("GET", "/v1/notices"))["notices"][0]["read"] is False


async def test_the_stream_delivers_live_and_resumes_after_last_event_id(platform, served, resident):
    resident_id, card = resident
    await send(platform, resident_id, "first")
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        headers = phone._headers()
        async with phone.client.stream("GET", "/v1/notices/stream", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = Events(stream)
            [first] = await events.next()
            assert first["event"] == "notice"
            assert json.loads(first["data"])["title"] == "first"
            await send(platform, resident_id, "second")  # arrives live
            [second] = await events.next()
            assert json.loads(second["data"])["title"] == "second"
            assert int(second["id"]) > int(first["id"])
        # Disconnected; one more arrives meanwhile; resume after the last id seen: no gap, no duplicate.
        await send(platform, resident_id, "third")
        async with phone.client.stream("GET", "/v1/notices/stream",
                                       headers={**headers, "last-event-id": second["id"]}) as stream:
            events = Events(stream)
            [third] = await events.next()
            assert json.loads(third["data"])["title"] == "third"
            await send(platform, resident_id, "fourth")
            [fourth] = await events.next()
            assert json.loads(fourth["data"])["title"] == "fourth"
        await served.client.aclose()


async def test_the_stream_needs_a_valid_token_and_a_numeric_cursor(served, resident):
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        anonymous = await client.get("/v1/notices/stream")
        assert anonymous.status_code == 401
        forged = await client.get("/v1/notices/stream", headers={"authorization": "Bearer nope"})
        assert forged.status_code == 401
        assert forged.json()["details"][0]["reason"] == "TOKEN_INVALID"
        bad_cursor = await client.get("/v1/notices/stream", headers={"authorization": "Bearer nope",
                                                                     "last-event-id": "abc"})
        assert bad_cursor.status_code == 400
    await served.client.aclose()


async def test_an_unknown_verification_code_is_unknown_publicly(gateway):
    reply = await gateway.client.get("/v1/certificates/ABCD-EFGH-JKLM")
    assert reply.status_code == 200
    assert reply.json()["status"] == "VERIFICATION_STATUS_UNKNOWN"
    too_long = await gateway.client.get("/v1/certificates/" + "X" * 300)
    assert too_long.status_code == 400


async def test_a_printed_certificate_verifies_as_genuine_through_the_gateway(platform, gateway):
    """A kiosk issues a 住民票の写し (the issuance area's test kit drives it); anyone verifies its code."""
    from tests.issuance.kit import CHIYODA, kiosk, order
    from tests.issuance.kit import add_resident as add_kiosk_resident

    _, card = await add_kiosk_resident(platform, holder("山田 花子"), CHIYODA)
    result = await kiosk(platform, "k-1", operator="seven").transact(card, "1234", order(copies=1))
    assert result.refusal is None, result.refusal
    document = result.documents[0]
    reply = await gateway.client.get(f"/v1/certificates/{document.verification_code}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "VERIFICATION_STATUS_GENUINE"
    assert body["certificateType"] == "CERTIFICATE_TYPE_RESIDENT_RECORD"
    assert body["municipalityCode"] == CHIYODA and body["serial"] == document.serial
    assert "山田" not in reply.text  # it reveals nothing about the person
    # A phone's token changes nothing about the public answer.
    with_token = await gateway.client.get(f"/v1/certificates/{document.verification_code}",
                                          headers={"authorization": "Bearer whatever"})
    assert with_token.json() == body


async def test_the_phone_library_follows_notices_live(platform, served, resident):
    resident_id, card = resident
    await send(platform, resident_id, "already there")
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        latest = (await phone.notices())["latestCursor"]
        follower = phone.follow_notices(2, after=latest, timeout=BOUND_S)
        first = asyncio.ensure_future(follower.__anext__())
        await send(platform, resident_id, "new one")
        await send(platform, resident_id, "newer one")
        titles = [(await first)["title"]] + [n["title"] async for n in follower]
    assert titles == ["new one", "newer one"]
    await served.client.aclose()
