"""Signed submission and the lifecycle: signatures, revocation, ownership, versions, history, notices."""

from __future__ import annotations

import asyncio
import json

import grpc
from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server.application.canonical import FORMAT
from server.crypto.jpki import serial_text
from server.application.blobs import BlobStore
from server.ids import new_id
from server.testing import PASSWORD
from tests.application.support import (CERT, LG, OTHER_LG, child_allowance_form, jpeg_bytes, make_applicant,
                                      nursery_form, pregnancy_form, refused)

S = pb  # short alias for statuses


async def test_prepare_gives_canonical_bytes_and_submit_keeps_evidence(platform, applicant, staff):
    draft = await applicant.draft()
    photo = await applicant.upload(draft.application_id)
    prepared = await applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=draft.application_id), metadata=applicant.md)
    body = json.loads(prepared.canonical_bytes)
    assert prepared.canonical_bytes == json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                  ensure_ascii=False).encode()
    assert body["format"] == FORMAT and body["application_id"] == draft.application_id
    assert body["procedure_code"] == CERT and body["municipality_code"] == LG and body["version"] == prepared.version
    assert body["attachments"] == [{"content_type": "image/jpeg", "sha256": photo.attachment.sha256,
                                    "size": photo.attachment.size, "slot": "health_insurance"}]
    assert body["form"]["payment_account"]["holder_kana"] == "ヤマダ\u3000ハナコ"
    platform.clock.advance(minutes=5)
    signature = applicant.card.sign_with_signature_key(prepared.canonical_bytes, PASSWORD)
    reply = await applicant.stub.SubmitApplication(pb.SubmitApplicationRequest(
        request_id="submit-1", application_id=draft.application_id, signature=signature,
        signature_certificate=applicant.card.sign_certificate_der), metadata=applicant.md)
    application = reply.application
    assert application.status == S.APPLICATION_STATUS_SUBMITTED
    assert application.submitted_at.ToDatetime().replace(tzinfo=None) == \
        platform.clock.now().replace(tzinfo=None)
    # A retry of the same submission returns the first outcome, nothing is stored twice.
    again = await applicant.stub.SubmitApplication(pb.SubmitApplicationRequest(
        request_id="submit-1", application_id=draft.application_id, signature=signature,
        signature_certificate=applicant.card.sign_certificate_der), metadata=applicant.md)
    assert again == reply
    evidence = await staff.ListSubmissionEvidence(pb.ListSubmissionEvidenceRequest(
        application_id=draft.application_id))
    assert len(evidence.evidence) == 1
    kept = evidence.evidence[0]
    assert (kept.canonical_bytes, kept.signature, kept.signature_certificate) == (
        prepared.canonical_bytes, signature, applicant.card.sign_certificate_der)
    assert kept.certificate_serial == serial_text(applicant.card.sign_certificate.serial_number)
    # Submitted: no more edits.
    code, reason, _ = await refused(applicant.stub.UpdateDraft(pb.UpdateDraftRequest(
        request_id=new_id("rq"), application_id=draft.application_id, version=application.version,
        form_json="{}"), metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_EDITABLE")


async def test_incomplete_application_cannot_be_prepared(applicant):
    draft = await applicant.draft({"claimant": {"name": "山田 花子"}})
    code, reason, fields = await refused(applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=draft.application_id), metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FORM_INVALID")
    assert {"form.claimant.name_kana", "form.children", "form.payment_account"} <= set(fields)
    complete = await applicant.draft()
    code, reason, fields = await refused(applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=complete.application_id), metadata=applicant.md))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "ATTACHMENT_REQUIRED",
                                      ["attachments.health_insurance"])


async def test_change_after_signing_is_refused(platform, applicant):
    draft = await applicant.draft()
    await applicant.upload(draft.application_id)
    prepared = await applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=draft.application_id), metadata=applicant.md)
    signature = applicant.card.sign_with_signature_key(prepared.canonical_bytes, PASSWORD)

    def submit(sig=signature):
        return applicant.stub.SubmitApplication(pb.SubmitApplicationRequest(
            request_id=new_id("rq"), application_id=draft.application_id, signature=sig,
            signature_certificate=applicant.card.sign_certificate_der), metadata=applicant.md)

    # The form changes after signing (a different account number, same shape).
    changed = child_allowance_form()
    changed["payment_account"]["account_number"] = "7654321"
    await applicant.stub.UpdateDraft(pb.UpdateDraftRequest(
        request_id=new_id("rq"), application_id=draft.application_id, version=prepared.version,
        form_json=json.dumps(changed)), metadata=applicant.md)
    code, reason, fields = await refused(submit())
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_MISMATCH", ["signature"])
    # An attachment added after signing: refused too.
    prepared = await applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=draft.application_id), metadata=applicant.md)
    signature = applicant.card.sign_with_signature_key(prepared.canonical_bytes, PASSWORD)
    await applicant.upload(draft.application_id, jpeg_bytes(color=(1, 2, 3)), slot="bank_book")
    code, reason, _ = await refused(submit(signature))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_MISMATCH")
    # A flipped bit in the signature itself.
    prepared = await applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=draft.application_id), metadata=applicant.md)
    signature = bytearray(applicant.card.sign_with_signature_key(prepared.canonical_bytes, PASSWORD))
    signature[10] ^= 1
    code, reason, _ = await refused(submit(bytes(signature)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_MISMATCH")
    # The authentication certificate is not for signing applications.
    code, reason, _ = await refused(applicant.stub.SubmitApplication(pb.SubmitApplicationRequest(
        request_id=new_id("rq"), application_id=draft.application_id,
        signature=applicant.card.sign_with_auth_key(prepared.canonical_bytes, "1234"),
        signature_certificate=applicant.card.auth_certificate_der), metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WRONG_CERTIFICATE_USAGE")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM application_evidence") == 0
        assert await tx.scalar("SELECT status FROM applications") == "draft"
    # Signed afresh, it goes through.
    reply = await applicant.sign_and_submit(draft.application_id)
    assert reply.application.status == S.APPLICATION_STATUS_SUBMITTED


async def test_revoked_signature_certificate_is_refused(platform, applicant):
    draft = await applicant.draft()
    await applicant.upload(draft.application_id)
    platform.clock.advance(minutes=1)
    platform.pki.revoke_card(applicant.card, now=platform.clock.now())
    auth = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await auth.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id=new_id("rq"), crl=platform.pki.crl_path.read_bytes()))
    code, reason, fields = await refused(applicant.sign_and_submit(draft.application_id))
    assert (code, reason, fields) == (grpc.StatusCode.FAILED_PRECONDITION, "CERT_REVOKED", ["signature_certificate"])
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM application_evidence") == 0


async def test_someone_elses_card_cannot_sign(platform, applicant):
    other = await make_applicant(platform, "鈴木 一郎")
    draft = await applicant.draft()
    await applicant.upload(draft.application_id)
    code, reason, _ = await refused(applicant.sign_and_submit(draft.application_id, card=other.card))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CERTIFICATE_NOT_LINKED")


async def test_resident_b_can_neither_read_nor_change_a(platform, applicant):
    a_app = await applicant.submitted()
    draft = await applicant.draft()
    b = await make_applicant(platform, "鈴木 一郎")
    for application_id in (a_app.application_id, draft.application_id):
        calls = [
            b.stub.GetApplication(pb.GetApplicationRequest(application_id=application_id), metadata=b.md),
            b.stub.UpdateDraft(pb.UpdateDraftRequest(request_id=new_id("rq"), application_id=application_id,
                                                     version=1, form_json="{}"), metadata=b.md),
            b.stub.WithdrawApplication(pb.WithdrawApplicationRequest(
                request_id=new_id("rq"), application_id=application_id, version=a_app.version), metadata=b.md),
            b.stub.PrepareSubmission(pb.PrepareSubmissionRequest(application_id=application_id), metadata=b.md),
            b.stub.ListSubmissionEvidence(pb.ListSubmissionEvidenceRequest(application_id=application_id),
                                          metadata=b.md),
            b.upload(application_id),
        ]
        for call in calls:
            code, reason, _ = await refused(call)
            assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND")
    listed = await b.stub.ListApplications(pb.ListApplicationsRequest(), metadata=b.md)
    assert list(listed.applications) == []
    mine = await applicant.stub.ListApplications(pb.ListApplicationsRequest(), metadata=applicant.md)
    assert {a.application_id for a in mine.applications} == {a_app.application_id, draft.application_id}
    # Nothing changed: A's application is as it was.
    assert (await applicant.get(a_app.application_id)).version == a_app.version
    # Residents cannot act as staff.
    code, _, _ = await refused(b.stub.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=a_app.application_id, version=a_app.version), metadata=b.md))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_staff_of_another_municipality_is_refused(platform, applicant, staff):
    application = await applicant.submitted()
    await platform.add_municipality(OTHER_LG, "大阪市", "大阪府")
    osaka = pb_grpc.ApplicationServiceStub(platform.municipality(OTHER_LG))
    for call in (
        osaka.GetApplication(pb.GetApplicationRequest(application_id=application.application_id)),
        osaka.AcceptApplication(pb.AcceptApplicationRequest(request_id=new_id("rq"),
                                                            application_id=application.application_id,
                                                            version=application.version)),
        osaka.DecideApplication(pb.DecideApplicationRequest(
            request_id=new_id("rq"), application_id=application.application_id, version=application.version,
            decision=pb.DECISION_APPROVED, result_text="x")),
    ):
        code, reason, _ = await refused(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    queue = await osaka.ListApplications(pb.ListApplicationsRequest())
    assert list(queue.applications) == []
    # Own staff never see drafts.
    draft = await applicant.draft()
    code, reason, _ = await refused(staff.GetApplication(pb.GetApplicationRequest(
        application_id=draft.application_id)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND")
    queue = await staff.ListApplications(pb.ListApplicationsRequest())
    assert [a.application_id for a in queue.applications] == [application.application_id]


async def test_two_concurrent_decisions_exactly_one_wins(platform, applicant, staff):
    application = await applicant.submitted()
    accepted = (await staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=application.application_id, version=application.version))).application
    officers = [pb_grpc.ApplicationServiceStub(platform.municipality(LG)) for _ in range(2)]
    results = await asyncio.gather(*(
        officer.DecideApplication(pb.DecideApplicationRequest(
            request_id=new_id("rq"), application_id=application.application_id, version=accepted.version,
            decision=decision, result_text=text))
        for officer, decision, text in zip(officers, (pb.DECISION_APPROVED, pb.DECISION_REJECTED),
                                           ("月額10,000円で認定", "要件を満たさないため却下"))
    ), return_exceptions=True)
    wins = [r for r in results if isinstance(r, pb.DecideApplicationResponse)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 1
    from tests.application.support import error_details
    assert losses[0].code() == grpc.StatusCode.ABORTED and error_details(losses[0])[0] == "VERSION_CONFLICT"
    final = await applicant.get(application.application_id)
    assert final.status == S.APPLICATION_STATUS_DECIDED
    assert (final.decision, final.result_text) == (wins[0].application.decision, wins[0].application.result_text)
    assert [h.action for h in final.history].count("decided") == 1
    code, reason, _ = await refused(applicant.stub.WithdrawApplication(pb.WithdrawApplicationRequest(
        request_id=new_id("rq"), application_id=application.application_id, version=final.version),
        metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_DECIDED")


async def test_whole_lifecycle_with_correction_and_resubmission(platform, applicant, staff):
    application = await applicant.submitted()
    app_id = application.application_id
    platform.clock.advance(hours=2)
    # Deciding before 受理 is not a valid transition; a stale version is a conflict.
    code, reason, _ = await refused(staff.DecideApplication(pb.DecideApplicationRequest(
        request_id=new_id("rq"), application_id=app_id, version=application.version,
        decision=pb.DECISION_APPROVED, result_text="ok")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION")
    code, reason, _ = await refused(staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=app_id, version=application.version - 1)))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "VERSION_CONFLICT")
    accepted = (await staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=app_id, version=application.version, note="受付"))).application
    assert accepted.status == S.APPLICATION_STATUS_ACCEPTED
    assert accepted.accepted_at.ToDatetime().replace(tzinfo=None) == platform.clock.now().replace(tzinfo=None)

    platform.clock.advance(hours=3)
    code, _, fields = await refused(staff.RequestCorrection(pb.RequestCorrectionRequest(
        request_id=new_id("rq"), application_id=app_id, version=accepted.version,
        reasons=[pb.CorrectionReason(field_path="form.children[1].name_kana", reason=""),
                 pb.CorrectionReason(attachment_slot="passport", reason="x")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["reasons[0].reason", "reasons[1].attachment_slot"]
    correction = (await staff.RequestCorrection(pb.RequestCorrectionRequest(
        request_id=new_id("rq"), application_id=app_id, version=accepted.version, message="ご確認ください。",
        reasons=[pb.CorrectionReason(field_path="form.children[1].name_kana", reason="フリガナを記入してください"),
                 pb.CorrectionReason(attachment_slot="health_insurance", reason="画像が不鮮明です")]))).application
    assert correction.status == S.APPLICATION_STATUS_CORRECTION_REQUESTED
    await applicant.sign_in_again(platform)
    seen = await applicant.get(app_id)
    assert [(c.field_path, c.attachment_slot) for c in seen.corrections] == [
        ("form.children[1].name_kana", ""), ("", "health_insurance")]

    # The resident corrects the form and the photo, signs again, resubmits.
    form = child_allowance_form()
    form["children"][1]["name_kana"] = "ヤマダ ジロウ"
    updated = (await applicant.stub.UpdateDraft(pb.UpdateDraftRequest(
        request_id=new_id("rq"), application_id=app_id, version=seen.version, form_json=json.dumps(form)),
        metadata=applicant.md)).application
    assert updated.status == S.APPLICATION_STATUS_CORRECTION_REQUESTED
    old_photos = [a for a in updated.attachments if a.slot == "health_insurance"]
    await applicant.stub.RemoveAttachment(pb.RemoveAttachmentRequest(
        request_id=new_id("rq"), application_id=app_id, attachment_id=old_photos[0].attachment_id),
        metadata=applicant.md)
    # The replaced photo was signed in the first submission: its file stays for audit.
    assert BlobStore(platform.settings.blob_dir).path_for(old_photos[0].sha256).exists()
    await applicant.upload(app_id, jpeg_bytes(color=(10, 200, 10), size=(200, 150)))
    platform.clock.advance(minutes=10)
    resubmitted = (await applicant.sign_and_submit(app_id)).application
    assert resubmitted.status == S.APPLICATION_STATUS_RESUBMITTED
    assert resubmitted.submitted_at == application.submitted_at
    assert resubmitted.last_submitted_at.ToDatetime().replace(tzinfo=None) == platform.clock.now().replace(tzinfo=None)
    assert list(resubmitted.corrections) == []

    again = (await staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=app_id, version=resubmitted.version))).application
    decided = (await staff.DecideApplication(pb.DecideApplicationRequest(
        request_id=new_id("rq"), application_id=app_id, version=again.version, decision=pb.DECISION_APPROVED,
        result_text="令和9年1月分から月額10,000円"))).application
    assert decided.status == S.APPLICATION_STATUS_DECIDED and decided.decision == pb.DECISION_APPROVED

    history = (await applicant.get(app_id)).history
    assert [h.action for h in history] == [
        "created", "attachment_added", "submitted", "accepted", "correction_requested", "updated",
        "attachment_removed", "attachment_added", "resubmitted", "accepted", "decided"]
    assert [h.version for h in history] == list(range(1, 12))
    assert history[3].actor == f"municipality:{LG}" and history[2].actor == f"resident:{applicant.resident_id}"
    assert "フリガナを記入してください" in history[4].reason
    evidence = await staff.ListSubmissionEvidence(pb.ListSubmissionEvidenceRequest(application_id=app_id))
    # Each signature covers the version just before its submission.
    assert [json.loads(e.canonical_bytes)["version"] for e in evidence.evidence] == [2, 8]

    # Each staff action left the resident a notice (when the notification area is there).
    if "notices" in platform.server.platform.services:
        async with platform.db.read() as tx:
            rows = await tx.all("SELECT title, link, dedupe_key FROM notices WHERE dedupe_key LIKE ?",
                                (f"{app_id}:%",))
        assert len(rows) == 4 and {r["link"] for r in rows} == {f"application/{app_id}"}

    # The staff queue filters by status and pages.
    queue = await staff.ListApplications(pb.ListApplicationsRequest(status=S.APPLICATION_STATUS_DECIDED))
    assert [a.application_id for a in queue.applications] == [app_id]
    assert list((await staff.ListApplications(pb.ListApplicationsRequest(
        status=S.APPLICATION_STATUS_SUBMITTED))).applications) == []


async def test_withdraw_before_decision(platform, applicant, staff):
    application = await applicant.submitted()
    code, reason, _ = await refused(applicant.stub.WithdrawApplication(pb.WithdrawApplicationRequest(
        request_id=new_id("rq"), application_id=application.application_id, version=application.version - 1),
        metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "VERSION_CONFLICT")
    withdrawn = (await applicant.stub.WithdrawApplication(pb.WithdrawApplicationRequest(
        request_id=new_id("rq"), application_id=application.application_id, version=application.version,
        reason="別の方法で申請します"), metadata=applicant.md)).application
    assert withdrawn.status == S.APPLICATION_STATUS_WITHDRAWN
    assert withdrawn.history[-1].reason == "別の方法で申請します"
    code, reason, _ = await refused(staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=application.application_id, version=withdrawn.version)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION")


async def test_queue_pages_in_arrival_order(platform, staff):
    applicants = [await make_applicant(platform, f"住民 {i}") for i in range(3)]
    ids = []
    for person in applicants:
        platform.clock.advance(minutes=1)
        ids.append((await person.submitted()).application_id)
    seen, token = [], ""
    for _ in range(5):
        page = await staff.ListApplications(pb.ListApplicationsRequest(page_size=2, page_token=token,
                                                                       procedure_code=CERT))
        seen += [a.application_id for a in page.applications]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


async def test_staff_retry_with_same_request_id_applies_once(platform, applicant, staff):
    application = await applicant.submitted()
    request = pb.AcceptApplicationRequest(request_id="accept-1", application_id=application.application_id,
                                          version=application.version)
    first = await staff.AcceptApplication(request)
    again = await staff.AcceptApplication(request)
    assert again == first and first.application.version == application.version + 1
    history = (await applicant.get(application.application_id)).history
    assert [h.action for h in history].count("accepted") == 1
    # The same request id for a different request is refused, not replayed.
    code, reason, fields = await refused(staff.AcceptApplication(pb.AcceptApplicationRequest(
        request_id="accept-1", application_id=application.application_id, version=first.application.version)))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED", ["request_id"])
    # A refusal is replayed too: the stale version stays refused under its request id.
    stale = pb.DecideApplicationRequest(request_id="decide-1", application_id=application.application_id,
                                        version=application.version, decision=pb.DECISION_APPROVED, result_text="x")
    for _ in range(2):
        code, reason, _ = await refused(staff.DecideApplication(stale))
        assert (code, reason) == (grpc.StatusCode.ABORTED, "VERSION_CONFLICT")


async def test_staff_read_the_form_that_was_signed(applicant, staff):
    application = await applicant.submitted()
    evidence = (await staff.ListSubmissionEvidence(pb.ListSubmissionEvidenceRequest(
        application_id=application.application_id))).evidence[0]
    shown = (await staff.GetApplication(pb.GetApplicationRequest(application_id=application.application_id))).application
    assert json.loads(shown.form_json) == json.loads(evidence.canonical_bytes)["form"]
    assert json.loads(shown.form_json)["payment_account"]["holder_kana"] == "ヤマダ\u3000ハナコ"


async def test_nursery_and_pregnancy_applications_end_to_end(applicant, staff):
    nursery = await applicant.draft(nursery_form("2025-06-01", True), procedure="childcare.certification")
    assert json.loads(nursery.form_json)["certification_class"] == "3"  # computed by the server
    code, reason, fields = await refused(applicant.stub.PrepareSubmission(pb.PrepareSubmissionRequest(
        application_id=nursery.application_id), metadata=applicant.md))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "ATTACHMENT_REQUIRED",
                                      ["attachments.employment_certificate"])
    await applicant.upload(nursery.application_id, slot="employment_certificate")
    submitted = (await applicant.sign_and_submit(nursery.application_id)).application
    assert submitted.status == pb.APPLICATION_STATUS_SUBMITTED

    pregnancy = await applicant.draft(pregnancy_form(), procedure="maternal_child_health.pregnancy_notification")
    submitted = (await applicant.sign_and_submit(pregnancy.application_id)).application  # no attachment needed
    assert submitted.procedure_title == "妊娠の届出"
    queue = await staff.ListApplications(pb.ListApplicationsRequest(
        procedure_code="maternal_child_health.pregnancy_notification"))
    assert [a.application_id for a in queue.applications] == [pregnancy.application_id]
