"""Form data checked against a procedure's schema, and the procedures' own rules.

Form data is a JSON object (field name -> value; groups are objects, repeated fields arrays).
`check_form` returns the normalised data (kana folded to full-width katakana, computed fields set)
or raises InvalidArgument(FORM_INVALID) listing every violation with its path, e.g.
`form.children[1].birth_date`. A draft (`complete=False`) is checked for shape only; a submission
(`complete=True`) also for required fields and the procedure's cross-field rules.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from server.application.catalogue import Field, Procedure
from server.errors import FieldViolation, InvalidArgument

MAX_FORM_BYTES = 256 * 1024
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def parse_form_json(text: str, field: str = "form_json") -> dict[str, Any]:
    """The JSON object in `text` ("" is an empty form)."""
    if not text:
        return {}
    if len(text.encode()) > MAX_FORM_BYTES:
        raise InvalidArgument.field(field, f"at most {MAX_FORM_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument.field(field, "not valid JSON (or nested too deeply)") from None
    if not isinstance(data, dict):
        raise InvalidArgument.field(field, "must be a JSON object")
    return data


def to_katakana(text: str) -> str:
    """NFKC (half-width -> full-width) and hiragana -> katakana; spaces become one ideographic space."""
    text = unicodedata.normalize("NFKC", text).strip()
    text = "".join(chr(ord(c) + 0x60) if 0x3041 <= ord(c) <= 0x3096 else c for c in text)
    return re.sub(r"\s+", "\u3000", text)


def _is_katakana(text: str) -> bool:
    return all(0x30A0 <= ord(c) <= 0x30FF or c == "\u3000" for c in text)


def parse_date(value: str) -> date:
    return date.fromisoformat(value)


class _Checker:
    def __init__(self, complete: bool) -> None:
        self.complete = complete
        self.violations: list[FieldViolation] = []

    def bad(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(path, description))

    def object(self, fields: tuple[Field, ...], data: Any, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.bad(path, "must be an object")
            return {}
        known = {f.name: f for f in fields}
        out: dict[str, Any] = {}
        for name in data:
            if name not in known:
                self.bad(f"{path}.{name}", "unknown field")
        for f in fields:
            if f.computed:
                continue  # set by the procedure's rules, never taken from the caller
            sub = f"{path}.{f.name}"
            value = data.get(f.name)
            if value is None or value == "" or value == []:
                if f.required and self.complete:
                    self.bad(sub, "required")
                continue
            if f.repeated:
                if not isinstance(value, list):
                    self.bad(sub, "must be a list")
                    continue
                if f.max_items and len(value) > f.max_items:
                    self.bad(sub, f"at most {f.max_items} items")
                if self.complete and f.min_items and len(value) < f.min_items:
                    self.bad(sub, f"at least {f.min_items} items")
                out[f.name] = [self.value(f, item, f"{sub}[{i}]") for i, item in enumerate(value)]
            else:
                out[f.name] = self.value(f, value, sub)
        return out

    def value(self, f: Field, value: Any, path: str) -> Any:
        kind = f.type
        if kind == "group":
            return self.object(f.fields, value, path)
        if kind == "boolean":
            if not isinstance(value, bool):
                self.bad(path, "must be true or false")
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(path, "must be an integer")
                return value
            if f.min is not None and value < f.min:
                self.bad(path, f"must be at least {f.min}")
            if f.max is not None and value > f.max:
                self.bad(path, f"must be at most {f.max}")
            return value
        if kind == "multi_choice":
            allowed = {c[0] for c in f.choices}
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.bad(path, "must be a list of choices")
                return value
            wrong = [v for v in value if v not in allowed]
            if wrong:
                self.bad(path, f"not a choice: {', '.join(wrong)}; one of {', '.join(sorted(allowed))}")
            if len(set(value)) != len(value):
                self.bad(path, "a choice is repeated")
            return value
        if not isinstance(value, str):
            self.bad(path, "must be a string")
            return value
        if kind == "choice":
            allowed = [c[0] for c in f.choices]
            if value not in allowed:
                self.bad(path, f"must be one of {', '.join(allowed)}")
            return value
        if kind == "date":
            try:
                parse_date(value)
                if len(value) != 10:
                    raise ValueError
            except ValueError:
                self.bad(path, "must be a date YYYY-MM-DD")
            return value
        if kind == "time":
            if not _TIME.fullmatch(value):
                self.bad(path, "must be a time HH:MM")
            return value
        if kind == "kana":
            value = to_katakana(value)
            if not _is_katakana(value):
                self.bad(path, "must be written in katakana")
        if f.max_length and len(value) > f.max_length:
            self.bad(path, f"at most {f.max_length} characters")
        if f.pattern and not re.fullmatch(f.pattern, value):
            self.bad(path, "has the wrong format")
        return value


Rule = Callable[[dict[str, Any], date, _Checker], None]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn
    return register


def _date(data: dict[str, Any], key: str) -> date | None:
    try:
        return parse_date(data[key]) if isinstance(data.get(key), str) else None
    except ValueError:
        return None


def age_on(birth: date, on: date) -> int:
    """Completed years (満年齢) on a day."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _not_future(checker: _Checker, data: dict[str, Any], key: str, path: str, today: date) -> date | None:
    value = _date(data, key)
    if value is not None and value > today:
        checker.bad(f"{path}.{key}", "must not be in the future")
    return value


@rule("child_allowance.certification")
def _child_allowance(form: dict[str, Any], today: date, c: _Checker) -> None:
    claimant = form.get("claimant") or {}
    if c.complete:
        _not_future(c, claimant, "birth_date", "form.claimant", today)
        if isinstance(form.get("spouse"), dict):
            _not_future(c, form["spouse"], "birth_date", "form.spouse", today)
    for i, child in enumerate(form.get("children") or []):
        if not isinstance(child, dict):
            continue
        path = f"form.children[{i}]"
        born = _not_future(c, child, "birth_date", path, today)
        # 児童手当 covers children up to the 31 March after their 18th birthday (2024 reform).
        if born is not None and born <= today and age_on(born, today) >= 19:
            c.bad(f"{path}.birth_date", "the child is older than the allowance covers (18 years)")
        if c.complete and child.get("lives_with_claimant") is False and not child.get("address"):
            c.bad(f"{path}.address", "required when the child does not live with the claimant")
    account = form.get("payment_account") or {}
    holder, claimant_kana = account.get("holder_kana"), claimant.get("name_kana")
    if c.complete and isinstance(holder, str) and isinstance(claimant_kana, str):
        if holder.replace("\u3000", "") != claimant_kana.replace("\u3000", ""):
            c.bad("form.payment_account.holder_kana", "the account must be in the claimant's own name "
                                                       "(holder kana must match the claimant's name kana)")


def certification_class(child_birth: date, on: date, wants_childcare: bool) -> str | None:
    """保育 支給認定区分: 1号 (3+ and education only), 2号 (3+ needing care), 3号 (under 3 needing care).

    The age is 満年齢 on the first day of the wished period. A child under 3 who needs no care
    gets no certification (None).
    """
    three_or_more = age_on(child_birth, on) >= 3
    if three_or_more:
        return "2" if wants_childcare else "1"
    return "3" if wants_childcare else None


@rule("childcare.certification")
def _childcare(form: dict[str, Any], today: date, c: _Checker) -> None:
    child = form.get("child") or {}
    period = form.get("period") or {}
    born = _not_future(c, child, "birth_date", "form.child", today)
    start, end = _date(period, "start_date"), _date(period, "end_date")
    if start and end and end < start:
        c.bad("form.period.end_date", "must not be before the start date")
    wants = form.get("wants_childcare")
    if born is not None and isinstance(wants, bool):
        klass = certification_class(born, start or today, wants)
        if klass is None:
            if c.complete:
                c.bad("form.wants_childcare", "a child under 3 is certified only for childcare (3号)")
        else:
            form["certification_class"] = klass
    if wants is True and c.complete:
        for key in ("care_reason", "days", "hours"):
            if not form.get(key):
                c.bad(f"form.{key}", "required when childcare is wished")
    hours = form.get("hours")
    if isinstance(hours, dict) and all(isinstance(hours.get(k), str) and _TIME.fullmatch(hours[k])
                                       for k in ("start_time", "end_time")):
        if hours["end_time"] <= hours["start_time"]:
            c.bad("form.hours.end_time", "must be after the start time")


@rule("maternal_child_health.pregnancy_notification")
def _pregnancy(form: dict[str, Any], today: date, c: _Checker) -> None:
    diagnosed = form.get("diagnosed_by") or {}
    _not_future(c, diagnosed, "diagnosis_date", "form.diagnosed_by", today)
    expected = _date(form, "expected_delivery_date")
    weeks = form.get("weeks_of_pregnancy")
    if expected is not None and expected < today:
        c.bad("form.expected_delivery_date", "must not be in the past")
    if c.complete and expected is not None and isinstance(weeks, int) and not isinstance(weeks, bool):
        # 40 weeks 0 days is the due date: the stated week should agree within four weeks.
        implied = today + timedelta(days=280 - 7 * weeks)
        if abs((expected - implied).days) > 28:
            c.bad("form.expected_delivery_date", f"does not agree with {weeks} weeks of pregnancy")


def check_form(procedure: Procedure, data: dict[str, Any], *, complete: bool, today: date) -> dict[str, Any]:
    """The normalised form, or InvalidArgument(FORM_INVALID) with every violation."""
    checker = _Checker(complete)
    form = checker.object(procedure.fields, data, "form")
    if not checker.violations and procedure.rules in RULES:
        RULES[procedure.rules](form, today, checker)
    if checker.violations:
        raise InvalidArgument.fields(checker.violations, reason="FORM_INVALID")
    return form


def required_slots(procedure: Procedure, form: dict[str, Any]) -> list[str]:
    """The attachment slots this form must carry at submission."""
    slots = [s.slot for s in procedure.slots if s.required]
    if procedure.code == "childcare.certification":
        if form.get("tax_data_consent") is False:
            slots.append("tax_certificate")
        # 就労: the employment certificate is either entered electronically or attached.
        if (form.get("wants_childcare") is True and form.get("care_reason") == "employment"
                and not form.get("employment_certificate")):
            slots.append("employment_certificate")
    return slots


def today_in_japan(now: datetime) -> date:
    from server.clock import JST

    return now.astimezone(JST).date()
