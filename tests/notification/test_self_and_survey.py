"""自己情報表示 (own records only) and surveys (answered once)."""

import asyncio
from datetime import date

import grpc
from onestop.notification.v1 import notification_pb2 as pb

from tests.notification.support import LG, OTHER_LG, add_card_holder, add_person, inbox, public, refused, staff


async def test_self_information_shows_own_household_and_vaccinations_only(platform):
    me, meta = await add_card_holder(platform, "山田 花子", household_id="hh-y")
    child = await add_person(platform, "山田 ひな", date(2026, 7, 15), household_id="hh-y")
    neighbour, n_meta = await add_card_holder(platform, "鈴木 一郎", household_id="hh-s")
    stub = staff(platform)
    await stub.RecordVaccination(pb.RecordVaccinationRequest(request_id="v-1", resident_id=child, vaccine="hib",
                                                             dose=1, given_on="2026-09-20"))
    await stub.RecordVaccination(pb.RecordVaccinationRequest(request_id="v-2", resident_id=neighbour,
                                                             vaccine="influenza", dose=1, given_on="2026-11-01"))
    await stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="b-1", household_id="hh-y", program=pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE, since="2026-08-01"))

    mine = await public(platform).GetSelfInformation(pb.GetSelfInformationRequest(), metadata=meta)
    assert (mine.self.resident_id, mine.self.name, mine.self.birth_date) == (me, "山田 花子", "1990-04-10")
    assert [(m.resident_id, m.name) for m in mine.household_members] == [(child, "山田 ひな")]
    assert [(v.resident_id, v.vaccine, v.dose, v.given_on) for v in mine.vaccinations] == [
        (child, "hib", 1, "2026-09-20")]
    assert list(mine.benefits) == [pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE]
    async with platform.db.write() as tx:
        has_applications = await tx.scalar("SELECT 1 FROM sqlite_master WHERE name = 'applications'")
        if has_applications:
            for app_id, resident in (("app_mine", me), ("app_theirs", neighbour)):
                await tx.execute(
                    "INSERT INTO applications (application_id, resident_id, municipality_code, procedure_code, status,"
                    " version, form_json, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, 'submitted', 1, '{}', 1, 5)",
                    (app_id, resident, LG, "child_allowance.certification"))
    if has_applications:  # only the caller's own application, as the application area's table has it
        mine = await public(platform).GetSelfInformation(pb.GetSelfInformationRequest(), metadata=meta)
        assert [(a.application_id, a.procedure, a.status) for a in mine.applications] == [
            ("app_mine", "child_allowance.certification", "submitted")]
    theirs = await public(platform).GetSelfInformation(pb.GetSelfInformationRequest(), metadata=n_meta)
    assert theirs.self.resident_id == neighbour and not theirs.household_members
    assert [v.vaccine for v in theirs.vaccinations] == ["influenza"] and not theirs.benefits
    await refused(staff(platform).GetSelfInformation(pb.GetSelfInformationRequest()),
                  grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await refused(public(platform).GetSelfInformation(pb.GetSelfInformationRequest()),
                  grpc.StatusCode.UNAUTHENTICATED)


async def test_record_vaccination_checks(platform):
    child = await add_person(platform, "子", date(2026, 7, 15))
    other_city = await add_person(platform, "他市の子", date(2026, 7, 15), lgcode=OTHER_LG)
    stub = staff(platform)
    ok = pb.RecordVaccinationRequest(request_id="v-1", resident_id=child, vaccine="bcg", dose=1,
                                     given_on="2026-12-01")
    first = await stub.RecordVaccination(ok)
    assert (await stub.RecordVaccination(ok)) == first  # a retry: the first outcome
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-2", resident_id=child, vaccine="bcg", dose=1, given_on="2026-12-02")),
        grpc.StatusCode.ALREADY_EXISTS, "VACCINATION_ALREADY_RECORDED")
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-3", resident_id=child, vaccine="nope", dose=0, given_on="2026-12-01")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "dose")
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-4", resident_id=child, vaccine="mr", dose=1, given_on="2026-12-04")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "given_on")
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-5", resident_id=child, vaccine="mr", dose=1, given_on="2026-07-14")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "given_on")
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-6", resident_id=other_city, vaccine="mr", dose=1, given_on="2026-12-01")),
        grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(stub.RecordVaccination(pb.RecordVaccinationRequest(
        request_id="v-7", resident_id="res_nope", vaccine="mr", dose=1, given_on="2026-12-01")),
        grpc.StatusCode.NOT_FOUND, "RESIDENT_NOT_FOUND")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM vaccinations") == 1


async def test_survey_answered_once_and_read_by_staff_in_pages(platform):
    a, a_meta = await add_card_holder(platform, "住民 A")
    b, b_meta = await add_card_holder(platform, "住民 B")
    outsider, o_meta = await add_card_holder(platform, "他市 住民", lgcode=OTHER_LG)
    stub = staff(platform)
    survey = await stub.SendNotice(pb.SendNoticeRequest(
        request_id="sv-1", municipality_code=LG, category="survey", title="面談日程のご希望", body="{name} 様",
        audience=pb.Audience(all_residents=pb.Audience.AllResidents()),
        survey_choices=[pb.SurveyChoice(choice_id="mon", label="月曜午前"),
                        pb.SurveyChoice(choice_id="wed", label="水曜午後")]))
    notice_id = survey.notice.notice_id
    assert [c.choice_id for c in (await inbox(platform, a_meta)).notices[0].survey_choices] == ["mon", "wed"]
    resident = public(platform)
    answer = pb.AnswerSurveyRequest(request_id="ans-1", notice_id=notice_id, choice_id="wed", comment="午後希望")
    replies = await asyncio.gather(*(resident.AnswerSurvey(answer, metadata=a_meta) for _ in range(3)))
    assert all(r == replies[0] for r in replies)  # same request id: the first outcome
    await refused(resident.AnswerSurvey(pb.AnswerSurveyRequest(request_id="ans-2", notice_id=notice_id,
                                                               choice_id="mon"), metadata=a_meta),
                  grpc.StatusCode.ALREADY_EXISTS, "SURVEY_ALREADY_ANSWERED")
    await refused(resident.AnswerSurvey(pb.AnswerSurveyRequest(request_id="ans-3", notice_id=notice_id,
                                                               choice_id="fri"), metadata=b_meta),
                  grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "choice_id")
    await refused(resident.AnswerSurvey(pb.AnswerSurveyRequest(request_id="ans-4", notice_id=notice_id,
                                                               choice_id="mon"), metadata=o_meta),
                  grpc.StatusCode.NOT_FOUND, "NOTICE_NOT_FOUND")  # not in the outsider's inbox
    platform.clock.advance(seconds=1)
    await resident.AnswerSurvey(pb.AnswerSurveyRequest(request_id="ans-5", notice_id=notice_id, choice_id="mon"),
                                metadata=b_meta)

    page1 = await stub.ListSurveyAnswers(pb.ListSurveyAnswersRequest(notice_id=notice_id, page_size=1))
    page2 = await stub.ListSurveyAnswers(pb.ListSurveyAnswersRequest(notice_id=notice_id, page_size=1,
                                                                     page_token=page1.next_page_token))
    assert [(x.resident_id, x.choice_id, x.comment) for x in [*page1.answers, *page2.answers]] == [
        (a, "wed", "午後希望"), (b, "mon", "")]
    assert not page2.next_page_token
    assert dict(page1.counts) == {"wed": 1, "mon": 1}
    shown = await stub.GetNotice(pb.GetNoticeRequest(notice_id=notice_id))  # answering reads the notice
    assert (shown.notice.delivered_count, shown.notice.read_count) == (2, 2)  # A and B (the outsider lives elsewhere)
    await refused(staff(platform, OTHER_LG).ListSurveyAnswers(pb.ListSurveyAnswersRequest(notice_id=notice_id)),
                  grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    plain = await stub.SendNotice(pb.SendNoticeRequest(request_id="sv-2", municipality_code=LG, title="t", body="b",
                                                       audience=pb.Audience(all_residents=pb.Audience.AllResidents())))
    await refused(stub.ListSurveyAnswers(pb.ListSurveyAnswersRequest(notice_id=plain.notice.notice_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_SURVEY")
    await refused(resident.AnswerSurvey(pb.AnswerSurveyRequest(request_id="ans-6", notice_id=plain.notice.notice_id,
                                                               choice_id="mon"), metadata=b_meta),
                  grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_SURVEY")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM survey_answers") == 2
