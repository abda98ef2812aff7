"""The catalogue: every procedure of the seed §2(3), search with kana/width folding, local switches."""

from __future__ import annotations

import grpc
from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server.application.catalogue import BY_CODE, NATIONAL, fold
from server.ids import new_id
from tests.application.support import LG, OTHER_LG, refused

SEED_START_MONTHS = {
    "child_allowance.certification": "2017-07", "child_allowance.revision": "2017-07",
    "child_allowance.change_notification": "2017-07", "child_allowance.eligibility_loss": "2017-07",
    "child_allowance.unpaid_claim": "2017-07", "child_allowance.donation": "2017-07",
    "child_allowance.school_fee_collection": "2017-07", "child_allowance.status_report": "2018-06",
    "childcare.certification": "2017-09", "childcare.facility_application": "2017-09",
    "childcare.status_report": "2017-09",
    "single_parent.child_support_status_report": "2018-07", "single_parent.interview_booking": "2018-07",
    "maternal_child_health.pregnancy_notification": "2017-07", "maternal_child_health.pre_survey": "2017-07",
}


def test_every_seed_procedure_is_in_the_catalogue_with_its_start_month():
    assert {p.code: p.start_month for p in NATIONAL} == SEED_START_MONTHS
    notices = {n.title: n.start_month for p in NATIONAL for n in p.notices}
    assert notices["児童手当の現況届の提出時期の通知"] == "2018-05"
    assert notices["妊婦健診の勧奨の通知"] == "2017-07"
    assert notices["募集要項の公表などHPの更新の通知"] == "2017-09"
    assert sum(len(p.notices) for p in NATIONAL) == 14
    for procedure in NATIONAL:
        assert procedure.fields and procedure.title


def test_fold_treats_width_and_kana_alike():
    assert fold("ﾎｲｸｴﾝ") == fold("ホイクエン") == fold("ほいくえん")
    assert fold("ＡＢＣ　１２３") == "abc123"


async def _search(stub, **kw) -> list[str]:
    codes, token = [], ""
    for _ in range(20):
        reply = await stub.SearchProcedures(pb.SearchProceduresRequest(page_token=token, **kw))
        codes += [p.code for p in reply.procedures]
        token = reply.next_page_token
        if not token:
            return codes
    raise AssertionError("too many pages")


async def test_search_by_keyword_folds_kana_and_width(platform):
    stub = pb_grpc.ApplicationServiceStub(platform.channel())
    pregnancy = "maternal_child_health.pregnancy_notification"
    for keyword in ("妊娠の届出", "にんしん", "ニンシン", "ﾆﾝｼﾝ"):
        assert pregnancy in await _search(stub, keyword=keyword), keyword
    nursery = await _search(stub, keyword="ﾎｲｸｴﾝ")
    assert "childcare.certification" in nursery and pregnancy not in nursery
    assert await _search(stub, keyword="存在しない手続") == []


async def test_search_filters_and_pages(platform):
    stub = pb_grpc.ApplicationServiceStub(platform.channel())
    everything = await _search(stub, page_size=4)
    assert everything == sorted(SEED_START_MONTHS) and len(set(everything)) == len(everything)
    first = await stub.SearchProcedures(pb.SearchProceduresRequest(page_size=4))
    assert len(first.procedures) == 4 and first.next_page_token
    assert not first.procedures[0].form_fields  # the list leaves the schema out
    single = await _search(stub, category=pb.PROCEDURE_CATEGORY_SINGLE_PARENT)
    assert single == ["single_parent.child_support_status_report", "single_parent.interview_booking"]
    pregnancy = await _search(stub, life_event=pb.LIFE_EVENT_PREGNANCY)
    assert set(pregnancy) == {"maternal_child_health.pregnancy_notification", "maternal_child_health.pre_survey"}
    code, reason, fields = await refused(stub.SearchProcedures(pb.SearchProceduresRequest(page_token="@@not")))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])
    code, reason, fields = await refused(stub.SearchProcedures(pb.SearchProceduresRequest(municipality_code="12")))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["municipality_code"])
    code, reason, fields = await refused(stub.SearchProcedures(pb.SearchProceduresRequest(category=99)))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["category"])
    code, reason, _ = await refused(stub.SearchProcedures(pb.SearchProceduresRequest(municipality_code="999999")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "MUNICIPALITY_NOT_FOUND")


async def test_get_procedure_has_the_real_form(platform):
    stub = pb_grpc.ApplicationServiceStub(platform.channel())
    reply = await stub.GetProcedure(pb.GetProcedureRequest(procedure_code="childcare.certification"))
    fields = {f.name: f for f in reply.procedure.form_fields}
    assert fields["certification_class"].computed
    assert fields["facility_preferences"].repeated and fields["facility_preferences"].type == pb.FIELD_TYPE_GROUP
    assert fields["tax_data_consent"].required
    code, reason, _ = await refused(stub.GetProcedure(pb.GetProcedureRequest(procedure_code="nope")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PROCEDURE_NOT_FOUND")


async def test_municipality_switches_off_and_adds_its_own(platform):
    await platform.add_municipality(LG)
    await platform.add_municipality(OTHER_LG, "大阪市", "大阪府")
    staff = pb_grpc.ApplicationServiceStub(platform.municipality(LG))
    anyone = pb_grpc.ApplicationServiceStub(platform.channel())
    await staff.SetProcedureEnabled(pb.SetProcedureEnabledRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure_code="child_allowance.donation", enabled=False))
    local = pb.Procedure(
        code="local.baby_goods", category=pb.PROCEDURE_CATEGORY_OTHER, title="出産祝い品の申請",
        start_month="2026-04", life_events=[pb.LIFE_EVENT_BIRTH], keywords=["出産", "祝い"],
        form_fields=[pb.FormField(name="child_name", label="子の氏名", type=pb.FIELD_TYPE_TEXT, required=True)],
        attachment_slots=[pb.AttachmentSlot(slot="birth_proof", title="出生を証する書類", required=True,
                                            accepted_types=["application/pdf"])],
    )
    await staff.CreateLocalProcedure(pb.CreateLocalProcedureRequest(request_id=new_id("rq"), municipality_code=LG,
                                                                    procedure=local))
    here = await _search(anyone, municipality_code=LG)
    assert "child_allowance.donation" not in here and "local.baby_goods" in here
    there = await _search(anyone, municipality_code=OTHER_LG)
    assert "child_allowance.donation" in there and "local.baby_goods" not in there
    assert await _search(anyone, municipality_code=LG, keyword="祝い　出産") == ["local.baby_goods"]
    code, reason, _ = await refused(anyone.GetProcedure(pb.GetProcedureRequest(
        procedure_code="child_allowance.donation", municipality_code=LG)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PROCEDURE_NOT_FOUND")

    # Staff of another municipality cannot touch 千代田区's catalogue; residents and anonymous callers neither.
    osaka = pb_grpc.ApplicationServiceStub(platform.municipality(OTHER_LG))
    code, reason, _ = await refused(osaka.SetProcedureEnabled(pb.SetProcedureEnabledRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure_code="child_allowance.revision")))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    code, _, _ = await refused(anyone.SetProcedureEnabled(pb.SetProcedureEnabledRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure_code="child_allowance.revision")))
    assert code == grpc.StatusCode.UNAUTHENTICATED

    bad = pb.Procedure(code="child_allowance.certification", title="", category=pb.PROCEDURE_CATEGORY_OTHER,
                       start_month="2026-04", form_fields=[pb.FormField(name="x", type=pb.FIELD_TYPE_GROUP)])
    code, reason, fields = await refused(staff.CreateLocalProcedure(pb.CreateLocalProcedureRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure=bad)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"procedure.code", "procedure.title", "procedure.form_fields[0].fields"} <= set(fields)
    assert "child_allowance.certification" in BY_CODE  # the national one is untouched


async def test_drafts_only_for_offered_and_started_procedures(platform):
    from tests.application.support import make_applicant

    applicant = await make_applicant(platform)
    staff = pb_grpc.ApplicationServiceStub(platform.municipality(LG))
    await staff.SetProcedureEnabled(pb.SetProcedureEnabledRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure_code="child_allowance.donation", enabled=False))
    future = pb.Procedure(
        code="local.future", category=pb.PROCEDURE_CATEGORY_OTHER, title="来年度からの手続", start_month="2027-04",
        form_fields=[pb.FormField(name="note", label="備考", type=pb.FIELD_TYPE_TEXT)])
    await staff.CreateLocalProcedure(pb.CreateLocalProcedureRequest(request_id=new_id("rq"), municipality_code=LG,
                                                                    procedure=future))
    code, reason, _ = await refused(applicant.draft({}, procedure="child_allowance.donation"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PROCEDURE_NOT_FOUND")
    code, reason, _ = await refused(applicant.draft({}, procedure="local.future"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROCEDURE_NOT_STARTED")
    # From its start month on, the local procedure takes drafts, checked against its own schema.
    platform.clock.advance(days=130)
    await auth_pb2_grpc.AuthServiceStub(platform.operator()).SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id=new_id("rq"), crl=platform.pki.refresh_crl(now=platform.clock.now())))  # a current CRL
    await applicant.sign_in_again(platform)
    code, reason, fields = await refused(applicant.draft({"note": 5}, procedure="local.future"))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "FORM_INVALID", ["form.note"])
    draft = await applicant.draft({"note": "よろしくお願いします"}, procedure="local.future")
    assert draft.status == pb.APPLICATION_STATUS_DRAFT and draft.procedure_title == "来年度からの手続"
    # Switching the national procedure back on makes it available again.
    await staff.SetProcedureEnabled(pb.SetProcedureEnabledRequest(
        request_id=new_id("rq"), municipality_code=LG, procedure_code="child_allowance.donation", enabled=True))
    assert (await applicant.draft({}, procedure="child_allowance.donation")).status == pb.APPLICATION_STATUS_DRAFT
