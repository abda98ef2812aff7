"""The plain rules, without a network: hours, the year-end closure, fiscal years, settings."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from server.clock import JST
from server.errors import DomainError, InvalidArgument
from server.issuance import rules
from server.issuance.kiosk import new_verification_code, normalise_code
from server.issuance.rules import KioskSettings


def jst(*args) -> datetime:
    return datetime(*args, tzinfo=JST)


@pytest.mark.parametrize("when,ok", [
    (jst(2026, 12, 3, 6, 29), False), (jst(2026, 12, 3, 6, 30), True), (jst(2026, 12, 3, 22, 59), True),
    (jst(2026, 12, 3, 23, 0), False), (jst(2026, 12, 28, 12), True), (jst(2026, 12, 29, 12), False),
    (jst(2027, 1, 3, 12), False), (jst(2027, 1, 4, 7), True),
])
def test_general_hours(when, ok):
    try:
        rules.check_hours(KioskSettings(), rules.RESIDENT_RECORD, when)
        assert ok
    except DomainError as error:
        assert not ok and error.reason == "OUTSIDE_HOURS"


def test_family_register_weekday_hours():
    s = KioskSettings(family_register_weekdays_only=True)
    rules.check_hours(s, rules.FAMILY_REGISTER_FULL, jst(2026, 12, 4, 9, 0))  # Friday 9:00
    for when in (jst(2026, 12, 4, 17, 0), jst(2026, 12, 5, 10, 0), jst(2026, 12, 6, 10, 0)):
        with pytest.raises(DomainError):
            rules.check_hours(s, rules.FAMILY_REGISTER_FULL, when)
    rules.check_hours(s, rules.RESIDENT_RECORD, jst(2026, 12, 5, 10, 0))  # Saturday, 住民票


@pytest.mark.parametrize("when,fy", [(jst(2026, 3, 31, 23, 59), 2025), (jst(2026, 4, 1, 0, 0), 2026),
                                     (jst(2026, 12, 3, 10), 2026), (jst(2027, 1, 10), 2026)])
def test_fiscal_year_starts_in_april(when, fy):
    assert rules.current_fiscal_year(when) == fy
    assert rules.income_year(fy) == fy - 1


def test_settings_round_trip_and_validation():
    s = KioskSettings(fees={rules.TAX: 200}, individual_number_allowed=True)
    assert KioskSettings.from_json(s.to_json()) == s
    assert s.fee(rules.TAX) == 200 and s.fee(rules.FAMILY_REGISTER_FULL) == 450
    with pytest.raises(InvalidArgument) as caught:
        KioskSettings(open_minute=1500).validate()
    assert [v.field for v in caught.value.violations] == ["settings.open_minute", "settings.close_minute"]


def test_verification_codes():
    code = new_verification_code()
    assert len(code) == 19 and code.count("-") == 3
    codes = {new_verification_code() for _ in range(2000)}
    assert len(codes) == 2000  # 80 random bits each
    letters = "".join(codes).replace("-", "")
    assert set(letters) == set("23456789ABCDEFGHJKLMNPQRSTUVWXYZ")  # every letter of the alphabet, no other
    assert all(letters[i::16].count("2") > 0 for i in range(16))  # each position draws from all of it
    assert normalise_code(code.lower().replace("-", " ")) == code
    assert rules.to_wareki(date(2019, 5, 1)) == "令和元年5月1日"
    assert rules.to_wareki(date(1990, 4, 10)) == "平成2年4月10日"
