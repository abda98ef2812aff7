"""The registry's field rules and the check digit, without a network or a database."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from server.registry.municipalities import check_digit, code_problem, is_valid_code
from server.registry.records import (ResidentFields, check_date, check_id, check_resident, check_text, normalise)

TODAY = date(2026, 12, 3)


@given(st.from_regex(r"^[0-9]{5}$", fullmatch=True))
def test_exactly_one_check_digit_fits_every_prefix(prefix):
    valid = [d for d in "0123456789" if is_valid_code(prefix + d)]
    assert valid == [str(check_digit(prefix))]


@given(st.text(max_size=8))
def test_code_problem_never_raises(text):
    problem = code_problem(text)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        assert len(text) == 6 and text.isascii() and text.isdigit()


def test_dates():
    assert check_date("d", "2024-02-29", required=True) == []
    assert [v.field for v in check_date("d", "2023-02-29", required=True)] == ["d"]
    assert check_date("d", "", required=False) == []
    assert check_date("d", "", required=True)[0].description.startswith("required")
    assert check_date("d", "2026-12-04", required=True, today=TODAY, not_future=True)[0].description == "in the future"
    assert check_date("d", "1867-12-31", required=True)[0].description == "before 1868"
    assert check_date("d", "２０２０-01-01", required=True)  # full-width digits are not a date


def test_text_ids_and_whitespace():
    assert check_text("n", "山田\u3000花子", required=True, limit=10) == []
    assert check_text("n", "a\x00b", required=True, limit=10)[0].description == "contains control characters"
    assert check_text("n", "   ", required=True, limit=10)[0].description == "required"
    assert check_id("i", "res_01ab-c.d:e", required=True) == []
    assert check_id("i", "../etc", required=True)
    assert normalise(" 東京都\u3000千代田区  千代田\t1-1 ") == "東京都 千代田区 千代田 1-1"


def test_resident_checks_name_every_bad_field_with_the_prefix():
    fields = ResidentFields(resident_id="", municipality_code="131016", household_id="", household_head=True,
                            name="", name_kana="", birth_date="1990-02-30", sex="4", address="",
                            relationship="", honseki_code="131017", moved_in_on="soon")
    assert sorted(v.field for v in check_resident(fields, prefix="resident.", today=TODAY)) == [
        "resident.address", "resident.birth_date", "resident.honseki_code", "resident.household_id",
        "resident.moved_in_on", "resident.name", "resident.sex"]
