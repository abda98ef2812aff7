"""Completed months by 年齢計算ニ関スル法律 / 民法143: both sides of each boundary."""

from datetime import date

import pytest

from server.notification.ages import adult_born_by, age_in_months, birth_range, reached_on


@pytest.mark.parametrize("birth, on, months", [
    (date(2026, 8, 31), date(2026, 11, 29), 2),   # day before the boundary
    (date(2026, 8, 31), date(2026, 11, 30), 3),   # no 11/31: the month's last day
    (date(2026, 9, 1), date(2026, 11, 29), 2),
    (date(2026, 9, 1), date(2026, 11, 30), 3),    # the day before 12/1
    (date(2026, 9, 15), date(2026, 12, 13), 2),
    (date(2026, 9, 15), date(2026, 12, 14), 3),   # the day before 12/15
    (date(2026, 1, 31), date(2026, 2, 27), 0),
    (date(2026, 1, 31), date(2026, 2, 28), 1),    # no 2/31: 2/28
    (date(2026, 1, 28), date(2026, 2, 26), 0),
    (date(2026, 1, 28), date(2026, 2, 27), 1),
    (date(2026, 12, 3), date(2026, 12, 3), 0),    # the day of birth counts
    (date(2024, 2, 29), date(2025, 2, 27), 11),
    (date(2024, 2, 29), date(2025, 2, 28), 12),   # a 29 February birthday: 28 February
])
def test_age_in_months_at_boundaries(birth, on, months):
    assert age_in_months(birth, on) == months


def test_reached_on_examples():
    assert reached_on(date(2026, 8, 31), 1) == date(2026, 9, 30)
    assert reached_on(date(2026, 8, 31), 2) == date(2026, 10, 30)
    assert reached_on(date(2026, 8, 31), 3) == date(2026, 11, 30)
    assert reached_on(date(2008, 4, 2), 216) == date(2026, 4, 1)  # 18 on 1 April: 早生まれ cut-off


def test_birth_range_is_exactly_the_children_in_range():
    on = date(2026, 11, 30)
    earliest, latest = birth_range(3, 4, on)
    assert (earliest, latest) == (date(2026, 7, 2), date(2026, 9, 1))
    assert age_in_months(latest, on) == 3 and age_in_months(date(2026, 9, 2), on) == 2
    assert age_in_months(earliest, on) == 4 and age_in_months(date(2026, 7, 1), on) == 5  # 5 months on 11/30


def test_adult_boundary():
    on = date(2026, 12, 3)
    assert adult_born_by(on) == date(2008, 12, 4)  # reaches 18 on 12/3
    assert age_in_months(date(2008, 12, 4), on) == 216 and age_in_months(date(2008, 12, 5), on) == 215
