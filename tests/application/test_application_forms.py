"""Form validation: field paths in BadRequest, the procedures' own rules, computed 認定区分."""

from __future__ import annotations

import json
from datetime import date

import grpc
import pytest
from onestop.application.v1 import application_pb2 as pb

from server.application.catalogue import BY_CODE
from server.application.forms import certification_class, check_form
from server.errors import InvalidArgument
from server.ids import new_id
from tests.application.support import CERT, child_allowance_form, nursery_form, pregnancy_form, refused

TODAY = date(2026, 12, 3)


def violations(code: str, form: dict, *, complete: bool = True) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        check_form(BY_CODE[code], form, complete=complete, today=TODAY)
    assert caught.value.reason == "FORM_INVALID"
    return {v.field: v.description for v in caught.value.violations}


def test_child_allowance_form_passes_and_normalises_kana():
    form = check_form(BY_CODE[CERT], child_allowance_form(), complete=True, today=TODAY)
    assert form["payment_account"]["holder_kana"] == "ヤマダ\u3000ハナコ"  # half-width folded to full-width


def test_nested_and_repeated_paths_are_named():
    form = child_allowance_form()
    form["children"][1]["birth_date"] = "2023-02-30"
    form["children"][0]["relationship"] = "cousin"
    form["claimant"]["phone"] = "not a phone"
    form["claimant"]["extra"] = 1
    del form["payment_account"]["account_number"]
    found = violations(CERT, form)
    assert set(found) == {"form.children[1].birth_date", "form.children[0].relationship", "form.claimant.phone",
                          "form.claimant.extra", "form.payment_account.account_number"}
    assert found["form.payment_account.account_number"] == "required"


def test_draft_is_checked_for_shape_only():
    assert check_form(BY_CODE[CERT], {"claimant": {"name": "山田"}}, complete=False, today=TODAY) == {
        "claimant": {"name": "山田"}}
    assert set(violations(CERT, {"claimant": {"birth_date": 19900410}}, complete=False)) == {
        "form.claimant.birth_date"}


def test_account_must_be_in_the_claimants_own_name():
    form = child_allowance_form(payment_account={"bank_code": "0001", "branch_code": "123",
                                                 "account_type": "ordinary", "account_number": "1234567",
                                                 "holder_kana": "ヤマダ タロウ"})
    assert set(violations(CERT, form)) == {"form.payment_account.holder_kana"}


def test_children_rules():
    form = child_allowance_form()
    form["children"][0]["lives_with_claimant"] = False
    form["children"][1]["birth_date"] = "2027-01-01"
    assert set(violations(CERT, form)) == {"form.children[0].address", "form.children[1].birth_date"}
    assert set(violations(CERT, child_allowance_form(children=[]))) == {"form.children"}


def test_childcare_class_is_computed_not_asked():
    code = "childcare.certification"
    assert check_form(BY_CODE[code], nursery_form("2022-06-01", True), complete=True,
                      today=TODAY)["certification_class"] == "2"
    assert check_form(BY_CODE[code], nursery_form("2022-06-01", False), complete=True,
                      today=TODAY)["certification_class"] == "1"
    assert check_form(BY_CODE[code], nursery_form("2025-06-01", True), complete=True,
                      today=TODAY)["certification_class"] == "3"
    # A value sent by the caller is ignored: the server decides.
    sent = nursery_form("2025-06-01", True, certification_class="1")
    assert check_form(BY_CODE[code], sent, complete=True, today=TODAY)["certification_class"] == "3"
    assert set(violations(code, nursery_form("2025-06-01", False))) == {"form.wants_childcare"}
    missing = nursery_form("2022-06-01", True)
    del missing["days"], missing["hours"]
    assert set(violations(code, missing)) == {"form.days", "form.hours"}
    late = nursery_form("2022-06-01", True, hours={"start_time": "18:00", "end_time": "09:00"})
    assert set(violations(code, late)) == {"form.hours.end_time"}
    # Age is taken on the first day of the wished period: three on 2027-04-01.
    assert certification_class(date(2024, 4, 1), date(2027, 4, 1), True) == "2"
    assert certification_class(date(2024, 4, 2), date(2027, 4, 1), True) == "3"


def test_pregnancy_notification_rules():
    code = "maternal_child_health.pregnancy_notification"
    assert check_form(BY_CODE[code], pregnancy_form(), complete=True, today=TODAY)["first_birth"] is True
    assert set(violations(code, pregnancy_form(expected_delivery_date="2027-01-10"))) == {
        "form.expected_delivery_date"}
    assert set(violations(code, pregnancy_form(weeks_of_pregnancy=50))) == {"form.weeks_of_pregnancy"}
    assert set(violations(code, pregnancy_form(weeks_of_pregnancy="10"))) == {"form.weeks_of_pregnancy"}
    bad_doctor = pregnancy_form(diagnosed_by={"kind": "nurse", "name": "x", "facility_name": "y",
                                              "diagnosis_date": "2026-12-31"})
    assert set(violations(code, bad_doctor)) == {"form.diagnosed_by.kind"}


async def test_create_draft_refuses_bad_form_naming_the_field(platform, applicant):
    form = child_allowance_form()
    form["children"][1]["birth_date"] = "yesterday"
    code, reason, fields = await refused(applicant.stub.CreateDraft(pb.CreateDraftRequest(
        request_id=new_id("rq"), procedure_code=CERT, form_json=json.dumps(form)), metadata=applicant.md))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "FORM_INVALID", ["form.children[1].birth_date"])
    code, _, fields = await refused(applicant.stub.CreateDraft(pb.CreateDraftRequest(
        request_id=new_id("rq"), procedure_code=CERT, form_json="[1, 2]"), metadata=applicant.md))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["form_json"])
    code, _, fields = await refused(applicant.stub.CreateDraft(pb.CreateDraftRequest(
        procedure_code=CERT, form_json="{}"), metadata=applicant.md))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request_id"])
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM applications") == 0


def test_form_json_that_is_not_an_object_or_too_deep_is_refused_by_field():
    from server.application.forms import parse_form_json

    for text, description in (("[" * 100_000, "nested"), ("{", "JSON"), ("42", "object"),
                              ('{"a": "' + "x" * 300_000 + '"}', "bytes")):
        with pytest.raises(InvalidArgument) as caught:
            parse_form_json(text)
        assert [v.field for v in caught.value.violations] == ["form_json"]
        assert description in caught.value.violations[0].description


def test_childcare_employment_certificate_entered_or_attached():
    from server.application.forms import required_slots

    procedure = BY_CODE["childcare.certification"]
    form = check_form(procedure, nursery_form("2022-06-01", True), complete=True, today=TODAY)
    assert required_slots(procedure, form) == ["employment_certificate"]
    entered = nursery_form("2022-06-01", True, employment_certificate={
        "employer_name": "千代田商事株式会社", "employer_address": "東京都千代田区丸の内1-1",
        "employer_phone": "03-0000-0000", "employment_type": "regular", "employed_since": "2015-04-01",
        "days_per_month": 20, "hours_per_day": 8})
    form = check_form(procedure, entered, complete=True, today=TODAY)
    assert required_slots(procedure, form) == []
    no_consent = check_form(procedure, nursery_form("2022-06-01", False, tax_data_consent=False), complete=True,
                            today=TODAY)
    assert required_slots(procedure, no_consent) == ["tax_certificate"]
    bad = nursery_form("2022-06-01", True, employment_certificate={"employer_name": "x", "days_per_month": 40})
    assert set(violations("childcare.certification", bad)) == {
        "form.employment_certificate.employer_address", "form.employment_certificate.employer_phone",
        "form.employment_certificate.employment_type", "form.employment_certificate.employed_since",
        "form.employment_certificate.days_per_month", "form.employment_certificate.hours_per_day"}
