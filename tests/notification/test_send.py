"""Sending: segments at boundary days, templates, scheduling and cancelling, counts, callers."""

import asyncio
from datetime import date, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from onestop.notification.v1 import notification_pb2 as pb

from tests.notification.support import (LG, OTHER_LG, add_card_holder, add_person, everyone, inbox, public, refused,
                                        staff)


async def _deliveries(platform, notice_id):
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT resident_id, title, body FROM deliveries WHERE notice_id = ?", (notice_id,))
    return {r["resident_id"]: (r["title"], r["body"]) for r in rows}


async def test_parents_of_children_3_to_4_months_on_boundary_days(platform):
    on = "2026-11-30"
    p1, p1_meta = await add_card_holder(platform, "山田 花子", household_id="hh1")
    grandma = await add_person(platform, "山田 ウメ", date(1960, 1, 1), household_id="hh1")
    teen = await add_person(platform, "山田 次郎", date(2009, 1, 1), household_id="hh1")          # 17: not a parent
    await add_person(platform, "山田 ひな", date(2026, 9, 1), household_id="hh1")                  # 3 months on 11/30
    p2 = await add_person(platform, "佐藤 一", date(1985, 5, 5), household_id="hh2")
    await add_person(platform, "佐藤 さくら", date(2026, 9, 2), household_id="hh2")                # 2 months: out
    p3 = await add_person(platform, "鈴木 二郎", date(1980, 5, 5), household_id="hh3")
    await add_person(platform, "鈴木 かい", date(2026, 7, 2), household_id="hh3")                  # 4 months: in
    p4 = await add_person(platform, "高橋 三郎", date(1980, 5, 5), household_id="hh4")
    await add_person(platform, "高橋 りく", date(2026, 7, 1), household_id="hh4")                  # 5 months: out
    p5 = await add_person(platform, "伊藤 四郎", date(1980, 5, 5), household_id="hh5", lgcode=OTHER_LG)
    await add_person(platform, "伊藤 めい", date(2026, 9, 1), household_id="hh5", lgcode=OTHER_LG)  # other city

    sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="seg-1", municipality_code=LG, category="health",
        title="{child_name}さんの3〜4か月児健診", body="{name} 様\n{deadline}までに受診してください。",
        fields={"deadline": "2027年1月31日"},
        audience=pb.Audience(parents_of_children=pb.Audience.ParentsOfChildren(min_months=3, max_months=4, as_of=on)),
    ))
    assert sent.notice.status == pb.NOTICE_STATUS_SENT
    assert sent.notice.delivered_count == 3
    got = await _deliveries(platform, sent.notice.notice_id)
    assert set(got) == {p1, grandma, p3}
    assert not {teen, p2, p4, p5} & set(got)
    assert got[p1] == ("山田 ひなさんの3〜4か月児健診", "山田 花子 様\n2027年1月31日までに受診してください。")
    assert got[p3][1].startswith("鈴木 二郎 様")

    box = await inbox(platform, p1_meta)
    assert [n.title for n in box.notices] == ["山田 ひなさんの3〜4か月児健診"]
    assert box.unread_count == 1 and box.notices[0].cursor == box.latest_cursor


async def test_segment_one_day_later_moves_the_boundary(platform):
    await add_person(platform, "親 A", date(1985, 1, 1), household_id="hhA")
    await add_person(platform, "子 A", date(2026, 9, 2), household_id="hhA")  # 3 months on 12/1, not on 11/30
    stub = staff(platform)
    for request_id, on, expected in (("b-1", "2026-11-30", 0), ("b-2", "2026-12-01", 1)):
        sent = await stub.SendNotice(pb.SendNoticeRequest(
            request_id=request_id, municipality_code=LG, title="健診", body="{name} 様",
            audience=pb.Audience(parents_of_children=pb.Audience.ParentsOfChildren(min_months=3, max_months=3,
                                                                                   as_of=on))))
        assert sent.notice.delivered_count == expected, on


async def test_template_with_a_missing_field_is_refused_and_nothing_stored(platform):
    await add_person(platform, "誰か", date(1980, 1, 1))
    stub = staff(platform)
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-1", municipality_code=LG, title="お知らせ", body="{name} 様 {deadline}までに",
        audience=everyone())), grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_FIELD_MISSING", "fields.deadline")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-2", municipality_code=LG, title="お知らせ", body="{name} 様 {deadline}までに",
        fields={"deadline": "  "}, audience=everyone())),
        grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_FIELD_MISSING", "fields.deadline")
    # {child_name} means nothing to an all-residents notice.
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-3", municipality_code=LG, title="{child_name}", body="本文", audience=everyone())),
        grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_FIELD_MISSING", "fields.child_name")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-4", municipality_code=LG, title="お知らせ", body="{name", audience=everyone())),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "body")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-5", municipality_code=LG, title="お知らせ", body="{name!r}", audience=everyone())),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "body")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-6", municipality_code=LG, title="", body="本文", audience=everyone())),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "title")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-7", municipality_code=LG, title="t", body="本文")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "audience")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-8", municipality_code=LG, title="t", body="本文",
        audience=pb.Audience(parents_of_children=pb.Audience.ParentsOfChildren(min_months=5, max_months=3)))),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "audience.max_months")
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="t-9", municipality_code=LG, title="t", body="本文",
        audience=pb.Audience(residents=pb.Audience.Residents(resident_ids=["res_missing"])))),
        grpc.StatusCode.INVALID_ARGUMENT, "RESIDENT_NOT_FOUND", "audience.resident_ids[0]")
    await refused(stub.SendNotice(pb.SendNoticeRequest(municipality_code=LG, title="t", body="b",
                                                       audience=everyone())),
                  grpc.StatusCode.INVALID_ARGUMENT, field="request_id")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM notices") == 0
        assert await tx.scalar("SELECT count(*) FROM deliveries") == 0


async def test_literal_braces_and_values_that_look_like_placeholders(platform):
    resident = await add_person(platform, "{deadline} 太郎", date(1980, 1, 1))
    sent = await staff(platform).SendNotice(pb.SendNoticeRequest(
        request_id="lit-1", municipality_code=LG, title="{{重要}}", body="{name} 様 締切 {deadline}",
        fields={"deadline": "{name}"}, audience=pb.Audience(residents=pb.Audience.Residents(resident_ids=[resident]))))
    got = await _deliveries(platform, sent.notice.notice_id)
    assert got[resident] == ("{重要}", "{deadline} 太郎 様 締切 {name}")


async def test_callers_other_than_own_municipality_staff_are_refused(platform):
    resident, meta = await add_card_holder(platform, "住民 一")
    request = pb.SendNoticeRequest(request_id="c-1", municipality_code=LG, title="t", body="b", audience=everyone())
    await refused(public(platform).SendNotice(request), grpc.StatusCode.UNAUTHENTICATED, "AUTHENTICATION_REQUIRED")
    await refused(public(platform).SendNotice(request, metadata=meta), grpc.StatusCode.PERMISSION_DENIED,
                  "CALLER_NOT_ALLOWED")
    await refused(staff(platform, OTHER_LG).SendNotice(request), grpc.StatusCode.PERMISSION_DENIED,
                  "OTHER_MUNICIPALITY")
    sent = await staff(platform).SendNotice(request)
    await refused(staff(platform, OTHER_LG).GetNotice(pb.GetNoticeRequest(notice_id=sent.notice.notice_id)),
                  grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(staff(platform, OTHER_LG).CancelNotice(pb.CancelNoticeRequest(
        request_id="c-2", notice_id=sent.notice.notice_id)), grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(public(platform).ListNotices(pb.ListNoticesRequest()), grpc.StatusCode.UNAUTHENTICATED)
    await refused(staff(platform).ListNotices(pb.ListNoticesRequest()), grpc.StatusCode.PERMISSION_DENIED,
                  "CALLER_NOT_ALLOWED")


async def test_retry_with_same_request_id_sends_once_even_concurrently(platform):
    for i in range(3):
        await add_person(platform, f"住民 {i}", date(1980, 1, 1))
    stub = staff(platform)
    request = pb.SendNoticeRequest(request_id="dup-1", municipality_code=LG, title="t", body="{name}",
                                   audience=everyone())
    replies = await asyncio.gather(*(stub.SendNotice(request) for _ in range(5)))
    assert len({r.notice.notice_id for r in replies}) == 1
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM notices") == 1
        assert await tx.scalar("SELECT count(*) FROM deliveries") == 3
    changed = pb.SendNoticeRequest(request_id="dup-1", municipality_code=LG, title="other", body="{name}",
                                   audience=everyone())
    await refused(stub.SendNotice(changed), grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED", "request_id")


def _at(platform, **delta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(platform.clock.now() + timedelta(**delta))
    return stamp


async def test_scheduled_send_cancel_and_counts(platform):
    a, a_meta = await add_card_holder(platform, "住民 A")
    b, b_meta = await add_card_holder(platform, "住民 B")
    stub = staff(platform)
    later = await stub.SendNotice(pb.SendNoticeRequest(
        request_id="s-1", municipality_code=LG, title="予定", body="{name} 様", audience=everyone(),
        send_at=_at(platform, minutes=20)))
    dropped = await stub.SendNotice(pb.SendNoticeRequest(
        request_id="s-2", municipality_code=LG, title="取消", body="b", audience=everyone(),
        send_at=_at(platform, minutes=10)))
    assert later.notice.status == pb.NOTICE_STATUS_SCHEDULED and later.notice.delivered_count == 0
    await refused(stub.SendNotice(pb.SendNoticeRequest(
        request_id="s-3", municipality_code=LG, title="t", body="b", audience=everyone(),
        send_at=_at(platform, minutes=-1))), grpc.StatusCode.INVALID_ARGUMENT, field="send_at")

    cancelled = await stub.CancelNotice(pb.CancelNoticeRequest(request_id="x-1",
                                                               notice_id=dropped.notice.notice_id))
    assert cancelled.notice.status == pb.NOTICE_STATUS_CANCELLED
    scheduler = platform.server.platform.services["notification_scheduler"]
    assert await scheduler.send_due() == 0  # not yet due
    assert (await inbox(platform, a_meta)).notices == []

    platform.clock.advance(minutes=21)  # (resident sessions idle out at 30)
    assert await scheduler.send_due() == 1
    assert await scheduler.send_due() == 0  # sent once
    shown = await stub.GetNotice(pb.GetNoticeRequest(notice_id=later.notice.notice_id))
    assert shown.notice.status == pb.NOTICE_STATUS_SENT
    assert (shown.notice.delivered_count, shown.notice.read_count) == (2, 0)
    box = await inbox(platform, a_meta)
    assert [(n.title, n.body) for n in box.notices] == [("予定", "住民 A 様")]  # the cancelled one never went

    await refused(stub.CancelNotice(pb.CancelNoticeRequest(request_id="x-2", notice_id=later.notice.notice_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "NOTICE_ALREADY_SENT")
    await refused(stub.CancelNotice(pb.CancelNoticeRequest(request_id="x-3", notice_id=dropped.notice.notice_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "NOTICE_ALREADY_CANCELLED")
    await refused(stub.CancelNotice(pb.CancelNoticeRequest(request_id="x-4", notice_id="ntc_nope")),
                  grpc.StatusCode.NOT_FOUND, "NOTICE_NOT_FOUND")

    resident = public(platform)
    read = await resident.MarkNoticeRead(pb.MarkNoticeReadRequest(request_id="r-1",
                                                                  notice_id=later.notice.notice_id), metadata=a_meta)
    assert read.notice.read
    again = await resident.MarkNoticeRead(pb.MarkNoticeReadRequest(request_id="r-2",
                                                                   notice_id=later.notice.notice_id), metadata=a_meta)
    assert again.notice.read
    shown = await stub.GetNotice(pb.GetNoticeRequest(notice_id=later.notice.notice_id))
    assert (shown.notice.delivered_count, shown.notice.read_count) == (2, 1)
    assert (await inbox(platform, a_meta)).unread_count == 0
    assert (await inbox(platform, b_meta)).unread_count == 1

    listed = await stub.ListSentNotices(pb.ListSentNoticesRequest(municipality_code=LG, page_size=1))
    assert len(listed.notices) == 1 and listed.next_page_token
    rest = await stub.ListSentNotices(pb.ListSentNoticesRequest(municipality_code=LG, page_size=1,
                                                                page_token=listed.next_page_token))
    assert {listed.notices[0].notice_id, rest.notices[0].notice_id} == {later.notice.notice_id,
                                                                       dropped.notice.notice_id}
    assert not rest.next_page_token


async def test_a_resident_never_sees_or_touches_another_residents_notice(platform):
    a, a_meta = await add_card_holder(platform, "住民 A")
    b, b_meta = await add_card_holder(platform, "住民 B")
    stub = staff(platform)
    only_b = await stub.SendNotice(pb.SendNoticeRequest(
        request_id="p-1", municipality_code=LG, title="B さんへ", body="{name} 様",
        audience=pb.Audience(residents=pb.Audience.Residents(resident_ids=[b]))))
    assert (await inbox(platform, a_meta)).notices == []
    assert [n.notice_id for n in (await inbox(platform, b_meta)).notices] == [only_b.notice.notice_id]
    await refused(public(platform).MarkNoticeRead(pb.MarkNoticeReadRequest(
        request_id="p-2", notice_id=only_b.notice.notice_id), metadata=a_meta),
        grpc.StatusCode.NOT_FOUND, "NOTICE_NOT_FOUND")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(read_at_ms) FROM deliveries") == 0


async def test_inbox_pages_newest_first(platform):
    a, a_meta = await add_card_holder(platform, "住民 A")
    stub = staff(platform)
    ids = []
    for i in range(5):
        sent = await stub.SendNotice(pb.SendNoticeRequest(request_id=f"pg-{i}", municipality_code=LG,
                                                          title=f"n{i}", body="b", audience=everyone()))
        ids.append(sent.notice.notice_id)
    resident = public(platform)
    seen, token = [], ""
    while True:
        page = await resident.ListNotices(pb.ListNoticesRequest(page_size=2, page_token=token), metadata=a_meta)
        seen += [n.notice_id for n in page.notices]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    from server.pagination import encode_token
    for forged in ("garbage!", encode_token({"before": "x"}), encode_token({"other": 1}),
                   encode_token({"before": 2**70}), encode_token({"before": True})):
        await refused(resident.ListNotices(pb.ListNoticesRequest(page_token=forged), metadata=a_meta),
                      grpc.StatusCode.INVALID_ARGUMENT, field="page_token")
    await refused(stub.ListSentNotices(pb.ListSentNoticesRequest(municipality_code=LG,
                                                                 page_token=encode_token({"before": [1]}))),
                  grpc.StatusCode.INVALID_ARGUMENT, field="page_token")
    far = pb.SendNoticeRequest(request_id="far-1", municipality_code=LG, title="t", body="b", audience=everyone())
    far.send_at.seconds = 2**62
    await refused(stub.SendNotice(far), grpc.StatusCode.INVALID_ARGUMENT, field="send_at")


async def _approved(platform, resident_id: str, procedure: str, decided_ms: int) -> None:
    async with platform.db.write() as tx:
        await tx.execute(
            "INSERT INTO applications (application_id, resident_id, municipality_code, procedure_code, status, version,"
            " form_json, decision, created_at_ms, updated_at_ms, decided_at_ms)"
            " VALUES (?, ?, ?, ?, 'decided', 1, '{}', 'approved', ?, ?, ?)",
            (f"app_{resident_id}_{procedure}", resident_id, LG, procedure, decided_ms, decided_ms, decided_ms))


async def test_benefit_recipients_from_flags_and_from_approved_applications(platform):
    flagged = await add_person(platform, "手当 A", date(1985, 1, 1), household_id="hh-flag")
    await add_person(platform, "子 A", date(2020, 1, 1), household_id="hh-flag")
    ended = await add_person(platform, "手当 B", date(1985, 1, 1), household_id="hh-ended")
    approved = await add_person(platform, "手当 C", date(1985, 1, 1), household_id="hh-app")
    spouse = await add_person(platform, "配偶 C", date(1986, 1, 1), household_id="hh-app")
    lost = await add_person(platform, "手当 D", date(1985, 1, 1), household_id="hh-lost")
    await add_person(platform, "無関係", date(1985, 1, 1), household_id="hh-none")
    stub = staff(platform)
    await stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="bf-1", household_id="hh-flag", program=pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE, since="2025-04-01"))
    await stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="bf-2", household_id="hh-ended", program=pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE, since="2020-04-01",
        until="2026-03-31"))
    await refused(stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="bf-3", household_id="hh-none", program=pb.BENEFIT_PROGRAM_UNSPECIFIED, since="2025-04-01")),
        grpc.StatusCode.INVALID_ARGUMENT, field="program")
    await refused(stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="bf-4", household_id="hh-nope", program=pb.BENEFIT_PROGRAM_NURSERY, since="2025-04-01")),
        grpc.StatusCode.NOT_FOUND, "HOUSEHOLD_NOT_FOUND")
    expected = {flagged}
    async with platform.db.read() as tx:
        has_applications = await tx.scalar("SELECT 1 FROM sqlite_master WHERE name = 'applications'")
    if has_applications:  # the application area's table: decided, approved 認定請求 count too
        await _approved(platform, approved, "child_allowance.certification", 1_000)
        await _approved(platform, lost, "child_allowance.certification", 1_000)
        await _approved(platform, lost, "child_allowance.eligibility_loss", 2_000)
        expected |= {approved, spouse}
    sent = await stub.SendNotice(pb.SendNoticeRequest(
        request_id="bf-5", municipality_code=LG, category="allowance", title="児童手当", body="{name} 様",
        audience=pb.Audience(benefit_recipients=pb.Audience.BenefitRecipients(
            program=pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE))))
    assert set(await _deliveries(platform, sent.notice.notice_id)) == expected
    assert ended not in expected and lost not in expected
