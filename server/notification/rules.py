"""Rule-based notices: what the records say is due at a date (the injected clock's, or as_of).

Age rules follow the child's completed age in months (see `ages`): they fire while the child is in
its n-th month, so a run missed for a few days still catches every child. Calendar rules fire in
their month for the households receiving a benefit (現況届 periods). Every firing is a row of
`rule_firings` with PRIMARY KEY (rule, subject, occasion), written with INSERT OR IGNORE: a rule
fires once per child and occasion whatever the number of runs, restarts and server processes.

One run of one rule = one notice (source "rule") to the parents of every child it fired for now;
parents with several such children get one delivery naming them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from server.db import Tx
from server.ids import new_id
from server.notification import ages, store, templates

ACTIVE = store.ACTIVE


@dataclass(frozen=True)
class AgeRule:
    code: str
    months: int
    category: str
    title: str
    body: str
    vaccine: str | None = None  # children with a recorded dose of it are skipped


@dataclass(frozen=True)
class CalendarRule:
    code: str
    program: str  # benefit_households.program
    month: int    # fires during this month; occasion = the year
    category: str
    title: str
    body: str     # may use {deadline}: the last day of the month


_CHECKUP = "{name} 様\n{child_name}さんの{what}の時期になりました。日程と会場は市区町村のお知らせをご確認ください。"
_VACCINE = "{name} 様\n{child_name}さんは{what}の定期接種の対象年齢になりました。医療機関に予約のうえ接種してください。"

# 母子保健: 乳幼児健診 (by the child's age in months) and 定期予防接種 (by the recommended start age).
AGE_RULES: tuple[AgeRule, ...] = (
    AgeRule("checkup_1m", 1, "health", "1か月児健康診査のご案内", _CHECKUP.replace("{what}", "1か月児健康診査")),
    AgeRule("checkup_3_4m", 3, "health", "3〜4か月児健康診査のご案内", _CHECKUP.replace("{what}", "3〜4か月児健康診査")),
    AgeRule("checkup_1y6m", 18, "health", "1歳6か月児健康診査のご案内",
            _CHECKUP.replace("{what}", "1歳6か月児健康診査")),
    AgeRule("checkup_3y", 36, "health", "3歳児健康診査のご案内", _CHECKUP.replace("{what}", "3歳児健康診査")),
    AgeRule("vaccine_hib", 2, "vaccination", "Hib感染症の予防接種", _VACCINE.replace("{what}", "Hib感染症"), "hib"),
    AgeRule("vaccine_pcv", 2, "vaccination", "小児用肺炎球菌の予防接種", _VACCINE.replace("{what}", "小児用肺炎球菌"), "pcv"),
    AgeRule("vaccine_hepb", 2, "vaccination", "B型肝炎の予防接種", _VACCINE.replace("{what}", "B型肝炎"), "hepb"),
    AgeRule("vaccine_dpt_ipv", 3, "vaccination", "四種混合の予防接種", _VACCINE.replace("{what}", "四種混合"), "dpt_ipv"),
    AgeRule("vaccine_bcg", 5, "vaccination", "BCGの予防接種（1歳になるまで）",
            _VACCINE.replace("{what}", "BCG（1歳になるまでに接種）"), "bcg"),
    AgeRule("vaccine_mr1", 12, "vaccination", "麻しん風しん混合（MR）第1期の予防接種",
            _VACCINE.replace("{what}", "麻しん風しん混合（MR）第1期"), "mr"),
    AgeRule("vaccine_varicella", 12, "vaccination", "水痘の予防接種", _VACCINE.replace("{what}", "水痘"), "varicella"),
    AgeRule("vaccine_je", 36, "vaccination", "日本脳炎の予防接種", _VACCINE.replace("{what}", "日本脳炎"), "je"),
)

_GENKYO = "{name} 様\n{what}の現況届の提出時期です。{deadline}までにマイナポータルから提出してください。"

# 現況届の提出時期の通知 (seed: 児童手当 6月, 保育 / ひとり親 の現況届).
CALENDAR_RULES: tuple[CalendarRule, ...] = (
    CalendarRule("genkyo_child_allowance", "child_allowance", 6, "allowance", "児童手当の現況届のお知らせ",
                 _GENKYO.replace("{what}", "児童手当")),
    CalendarRule("genkyo_child_rearing_allowance", "child_rearing_allowance", 8, "single_parent",
                 "児童扶養手当の現況届のお知らせ", _GENKYO.replace("{what}", "児童扶養手当")),
    CalendarRule("genkyo_nursery", "nursery", 9, "nursery", "保育施設等の現況届のお知らせ",
                 _GENKYO.replace("{what}", "保育施設等")),
)


@dataclass(frozen=True)
class ApplicationRule:
    """Fires once per application of `procedure` once the municipality has accepted it (the
    application area's table, read when it exists); the notice goes to the applicant."""

    code: str
    procedure: str
    category: str
    title: str
    body: str


# 母子保健: 妊婦健診の勧奨の通知, after the 妊娠の届出 is accepted.
APPLICATION_RULES: tuple[ApplicationRule, ...] = (
    ApplicationRule("pregnancy_checkup", "maternal_child_health.pregnancy_notification", "health",
                    "妊婦健康診査のご案内",
                    "{name} 様\n妊娠の届出を受け付けました。妊婦健康診査の受診票を使って、定期的に健診を受けましょう。"),
)


@dataclass(frozen=True)
class Outcome:
    rule: str
    fired: int
    delivered: int
    notice_id: str


async def _notice_for(tx: Tx, *, notice_id: str, municipality_code: str, category: str, title: str, body: str,
                      audience: dict, values: dict[str, str], now_ms: int, on: date) -> int:
    prepared = templates.prepare({"title": title, "body": body}, values, store.row_fields(audience))
    await store.insert_notice(tx, {
        "notice_id": notice_id, "municipality_code": municipality_code, "category": category, "title": title,
        "body": body, "audience": json.dumps(audience), "fields": json.dumps(values, ensure_ascii=False),
        "status": "sent", "source": "rule", "created_at_ms": now_ms, "created_by": "rules", "sent_at_ms": now_ms,
        "sent_by": "rules",
    })
    delivered, _ = await store.fan_out(tx, notice_id, municipality_code, audience, prepared["title"],
                                       prepared["body"], now_ms, on)
    return delivered


async def run(tx: Tx, municipality_code: str, on: date, now_ms: int) -> list[Outcome]:
    """Fire every rule due at `on` for the municipality, inside `tx`."""
    outcomes = []
    for rule in AGE_RULES:
        earliest, latest = ages.birth_range(rule.months, rule.months, on)
        notice_id = new_id("ntc")
        skip = (" AND NOT EXISTS (SELECT 1 FROM vaccinations v WHERE v.resident_id = c.resident_id"
                " AND v.vaccine = :vaccine)") if rule.vaccine else ""
        fired = await tx.execute(
            "INSERT OR IGNORE INTO rule_firings (rule, subject_id, occasion, municipality_code, as_of, notice_id,"
            " fired_at_ms) SELECT :rule, c.resident_id, :occasion, c.municipality_code, :as_of, :notice_id, :now"
            f" FROM residents c WHERE c.municipality_code = :lg AND c.status IN {ACTIVE}"
            f" AND c.birth_date BETWEEN :earliest AND :latest{skip}",
            {"rule": rule.code, "occasion": f"{rule.months}m", "as_of": on.isoformat(), "notice_id": notice_id,
             "now": now_ms, "lg": municipality_code, "earliest": earliest.isoformat(), "latest": latest.isoformat(),
             "vaccine": rule.vaccine},
        )
        delivered = 0
        if fired:
            delivered = await _notice_for(
                tx, notice_id=notice_id, municipality_code=municipality_code, category=rule.category,
                title=rule.title, body=rule.body, audience={"kind": "rule_children", "rule": rule.code},
                values={}, now_ms=now_ms, on=on)
        outcomes.append(Outcome(rule.code, fired, delivered, notice_id if fired else ""))
    for rule in CALENDAR_RULES:
        if on.month != rule.month:
            outcomes.append(Outcome(rule.code, 0, 0, ""))
            continue
        notice_id = new_id("ntc")
        households, params = await store.benefit_households_sql(tx, rule.program, municipality_code, on)
        fired = await tx.execute(
            "INSERT OR IGNORE INTO rule_firings (rule, subject_id, occasion, municipality_code, as_of, notice_id,"
            f" fired_at_ms) SELECT ?, h.household_id, ?, ?, ?, ?, ? FROM ({households}) h",
            (rule.code, str(on.year), municipality_code, on.isoformat(), notice_id, now_ms, *params),
        )
        delivered = 0
        if fired:
            deadline = ages.reached_on(date(on.year, on.month, 1), 1)  # the month's last day
            delivered = await _notice_for(
                tx, notice_id=notice_id, municipality_code=municipality_code, category=rule.category,
                title=rule.title, body=rule.body, audience={"kind": "rule_households", "rule": rule.code},
                values={"deadline": f"{deadline.year}年{deadline.month}月{deadline.day}日"}, now_ms=now_ms, on=on)
        outcomes.append(Outcome(rule.code, fired, delivered, notice_id if fired else ""))
    has_applications = await tx.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'applications'")
    for rule in APPLICATION_RULES:
        if not has_applications:
            outcomes.append(Outcome(rule.code, 0, 0, ""))
            continue
        notice_id = new_id("ntc")
        fired = await tx.execute(
            "INSERT OR IGNORE INTO rule_firings (rule, subject_id, occasion, municipality_code, as_of, notice_id,"
            " fired_at_ms) SELECT ?, a.application_id, 'accepted', a.municipality_code, ?, ?, ? FROM applications a"
            " WHERE a.municipality_code = ? AND a.procedure_code = ? AND a.status IN ('accepted', 'decided')"
            " AND a.decision <> 'rejected'",
            (rule.code, on.isoformat(), notice_id, now_ms, municipality_code, rule.procedure),
        )
        delivered = 0
        if fired:
            delivered = await _notice_for(
                tx, notice_id=notice_id, municipality_code=municipality_code, category=rule.category,
                title=rule.title, body=rule.body, audience={"kind": "rule_applicants", "rule": rule.code},
                values={}, now_ms=now_ms, on=on)
        outcomes.append(Outcome(rule.code, fired, delivered, notice_id if fired else ""))
    return outcomes
