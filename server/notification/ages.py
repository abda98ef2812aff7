"""Ages in completed months, by the Japanese convention (年齢計算ニ関スル法律, 民法 第143条).

The day of birth counts (the law excludes 民法140's "first day not counted"). A period of n months
from the birth date ends at the end of the day before the day with the birth date's number n
months later; where that month has no such day (born on the 31st, a 30-day month), it ends on the
last day of that month. A child has *reached* n months on that day: its age in months on a date is
the largest n reached on or before that date.

    born 2026-08-31: 1 month on 2026-09-30 (no 9/31), 2 months on 2026-10-30, 3 months on 2026-11-30
    born 2026-09-01: 3 months on 2026-11-30 (the day before 12/1)
    born 2008-02-29: 18 years (216 months) on 2026-02-28 (2026 has no 2/29: the month's last day)

Ages in years are ages in months // 12 (18 years = 216 months).
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

ADULT_MONTHS = 18 * 12
_DAY = timedelta(days=1)


def _month_shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def reached_on(birth: date, months: int) -> date:
    """The day on which a child born on `birth` has completed `months` months."""
    if months < 0:
        raise ValueError("months must not be negative")
    if months == 0:
        return birth
    year, month = _month_shift(birth.year, birth.month, months)
    last = calendar.monthrange(year, month)[1]
    if birth.day > last:
        return date(year, month, last)
    return date(year, month, birth.day) - _DAY


def age_in_months(birth: date, on: date) -> int:
    """Completed months on `on` (negative: not yet born)."""
    if on < birth:
        return -1
    months = max(0, (on.year - birth.year) * 12 + on.month - birth.month - 1)
    while reached_on(birth, months + 1) <= on:
        months += 1
    return months


def birth_range(min_months: int, max_months: int, on: date) -> tuple[date, date]:
    """(earliest, latest) birth dates, both included, of children aged min..max months on `on`.

    Age is non-increasing in the birth date, so the set is one interval; found by stepping from an
    estimate (at most a few days either way).
    """
    if not 0 <= min_months <= max_months:
        raise ValueError("need 0 <= min_months <= max_months")
    # latest: the last birth date that has reached min_months by `on`.
    year, month = _month_shift(on.year, on.month, -min_months)
    latest = date(year, month, min(on.day, calendar.monthrange(year, month)[1]))
    while reached_on(latest + _DAY, min_months) <= on:
        latest += _DAY
    while reached_on(latest, min_months) > on:
        latest -= _DAY
    # earliest: the first birth date that has not yet reached max_months + 1 by `on`.
    year, month = _month_shift(on.year, on.month, -(max_months + 1))
    earliest = date(year, month, min(on.day, calendar.monthrange(year, month)[1]))
    while reached_on(earliest - _DAY, max_months + 1) > on:
        earliest -= _DAY
    while reached_on(earliest, max_months + 1) <= on:
        earliest += _DAY
    return earliest, latest


def adult_born_by(on: date) -> date:
    """The latest birth date of someone aged 18 or more on `on`."""
    return birth_range(ADULT_MONTHS, ADULT_MONTHS, on)[1]


def parse_date(text: str, field: str) -> date:
    from server.errors import InvalidArgument

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument.field(field, "a date YYYY-MM-DD") from None
