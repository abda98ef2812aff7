"""SQL of the notification area: notices, deliveries (inboxes), rule firings, vaccinations, surveys.

Fan-out is always one set-based INSERT ... SELECT over the resident register (never a Python loop
over recipients); per-recipient text is rendered in SQL from the markers `templates.prepare` left.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date

from server.db import Tx
from server.notification import ages
from server.notification.templates import render_sql

ACTIVE = "('active', 'moving_out')"  # residents who still receive notices

_NAME = {"name": "p.name"}
_NAME_AND_CHILD = {"name": "p.name", "child_name": "group_concat(c.name, '、')"}


def row_fields(audience: dict) -> frozenset[str]:
    """Per-recipient placeholders an audience can fill."""
    if audience["kind"] in ("parents_of_children", "rule_children"):
        return frozenset(_NAME_AND_CHILD)
    return frozenset(_NAME)


async def insert_notice(tx: Tx, row: dict) -> None:
    row = {"link": "", "fields": "{}", "survey": None, "send_at_ms": None, "sent_at_ms": None, "sent_by": None,
           "recipient_count": 0, "dedupe_key": None, **row}
    columns = ", ".join(row)
    await tx.execute(f"INSERT INTO notices ({columns}) VALUES ({', '.join(':' + c for c in row)})", row)


async def get_notice(tx: Tx, notice_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM notices WHERE notice_id = ?", (notice_id,))


async def notice_counts(tx: Tx, notice_id: str) -> tuple[int, int]:
    """(delivered, read): kept on the notice as deliveries are written and reads marked."""
    row = await tx.one("SELECT recipient_count, read_count FROM notices WHERE notice_id = ?", (notice_id,))
    return (row["recipient_count"], row["read_count"]) if row else (0, 0)


async def list_sent(tx: Tx, municipality_code: str, limit: int, before: str | None) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT * FROM notices WHERE municipality_code = ? AND (? IS NULL OR notice_id < ?)"
        " ORDER BY notice_id DESC LIMIT ?",
        (municipality_code, before, before, limit),
    )


async def missing_residents(tx: Tx, municipality_code: str, resident_ids: list[str]) -> list[str]:
    found = {r[0] for r in await tx.all(
        f"SELECT resident_id FROM residents WHERE municipality_code = ? AND status IN {ACTIVE}"
        " AND resident_id IN (SELECT value FROM json_each(?))",
        (municipality_code, json.dumps(resident_ids)),
    )}
    return [r for r in resident_ids if r not in found]


async def _audience_sql(tx: Tx, notice_id: str, municipality_code: str, audience: dict,
                        on: date) -> tuple[str, list, dict[str, str]]:
    """(" FROM ... WHERE ...", its parameters, per-recipient fields) selecting recipients as `p`."""
    kind = audience["kind"]
    adult = ages.adult_born_by(on).isoformat()
    if kind in ("residents", "all_residents"):
        sql = f" FROM residents p WHERE p.municipality_code = ? AND p.status IN {ACTIVE}"
        params: list = [municipality_code]
        if kind == "residents":
            sql += " AND p.resident_id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(audience["resident_ids"]))
        return sql, params, _NAME
    if kind == "parents_of_children":
        as_of = date.fromisoformat(audience["as_of"]) if audience.get("as_of") else on
        earliest, latest = ages.birth_range(audience["min_months"], audience["max_months"], as_of)
        return (
            " FROM residents c JOIN residents p ON p.household_id = c.household_id AND p.resident_id <> c.resident_id"
            f" WHERE c.municipality_code = ? AND c.status IN {ACTIVE} AND c.birth_date BETWEEN ? AND ?"
            f" AND p.status IN {ACTIVE} AND p.birth_date <= ?",
            [municipality_code, earliest.isoformat(), latest.isoformat(), ages.adult_born_by(as_of).isoformat()],
            _NAME_AND_CHILD)
    if kind == "benefit_recipients":
        households, extra = await benefit_households_sql(tx, audience["program"], municipality_code, on)
        return (f" FROM residents p WHERE p.household_id IN ({households}) AND p.status IN {ACTIVE}"
                " AND p.birth_date <= ?", [*extra, adult], _NAME)
    if kind == "rule_children":  # parents of the children a rule fired for under this notice
        return (
            " FROM rule_firings f JOIN residents c ON c.resident_id = f.subject_id"
            " JOIN residents p ON p.household_id = c.household_id AND p.resident_id <> c.resident_id"
            f" WHERE f.notice_id = ? AND p.status IN {ACTIVE} AND p.birth_date <= ?",
            [notice_id, adult], _NAME_AND_CHILD)
    if kind == "rule_households":  # adults of the households a rule fired for under this notice
        return (f" FROM rule_firings f JOIN residents p ON p.household_id = f.subject_id"
                f" WHERE f.notice_id = ? AND p.status IN {ACTIVE} AND p.birth_date <= ?", [notice_id, adult], _NAME)
    if kind == "rule_applicants":  # the applicants of the applications a rule fired for
        return (" FROM rule_firings f JOIN applications a ON a.application_id = f.subject_id"
                f" JOIN residents p ON p.resident_id = a.resident_id WHERE f.notice_id = ? AND p.status IN {ACTIVE}",
                [notice_id], _NAME)
    raise ValueError(f"unknown audience kind {kind}")


async def fan_out(tx: Tx, notice_id: str, municipality_code: str, audience: dict, title: str, body: str,
                  now_ms: int, on: date, *, after: str | None = None,
                  limit: int | None = None) -> tuple[int, str | None]:
    """Write deliveries of a notice to its audience (as it stands at `on`), one INSERT ... SELECT.

    Recipients go in resident_id order: with `limit`, only the next `limit` after `after`. Returns
    (deliveries written, the last resident_id covered), the position being None when the audience is
    exhausted (then the fan-out is complete).
    """
    from_where, params, row_fields_sql = await _audience_sql(tx, notice_id, municipality_code, audience, on)
    title_sql, body_sql = render_sql("?", row_fields_sql), render_sql("?", row_fields_sql)
    lower, lower_params = (" AND p.resident_id > ?", [after]) if after else ("", [])
    upper, upper_params, position = "", [], None
    if limit:
        boundary = await tx.scalar(
            f"SELECT p.resident_id{from_where}{lower} GROUP BY p.resident_id ORDER BY p.resident_id"
            " LIMIT 1 OFFSET ?", [*params, *lower_params, limit - 1])
        if boundary is not None:
            upper, upper_params, position = " AND p.resident_id <= ?", [boundary], boundary
    count = await tx.execute(
        "INSERT OR IGNORE INTO deliveries (notice_id, resident_id, title, body, delivered_at_ms)"
        f" SELECT ?, p.resident_id, {title_sql}, {body_sql}, ?{from_where}{lower}{upper} GROUP BY p.resident_id",
        [notice_id, title, body, now_ms, *params, *lower_params, *upper_params])
    await tx.execute(
        "UPDATE notices SET recipient_count = recipient_count + ?, fanout_after = ?, fanout_done = ?"
        " WHERE notice_id = ?", (count, position, 0 if position else 1, notice_id))
    return count, position


async def incomplete_fan_outs(tx: Tx, limit: int) -> list[str]:
    rows = await tx.all("SELECT notice_id FROM notices WHERE fanout_done = 0 AND status = 'sent' LIMIT ?", (limit,))
    return [r[0] for r in rows]


async def due_notices(tx: Tx, now_ms: int, limit: int) -> list[str]:
    rows = await tx.all(
        "SELECT notice_id FROM notices WHERE status = 'scheduled' AND send_at_ms <= ? ORDER BY send_at_ms LIMIT ?",
        (now_ms, limit),
    )
    return [r[0] for r in rows]


async def claim_scheduled(tx: Tx, notice_id: str, now_ms: int, by: str, on: date) -> bool:
    """Atomically move a due notice to sent (its fan-out pending, its audience fixed at `on`); False if
    another process (or a cancel) got there first."""
    changed = await tx.execute(
        "UPDATE notices SET status = 'sent', sent_at_ms = ?, sent_by = ?, fanout_done = 0, fanout_after = NULL,"
        " audience = json_set(audience, '$.on', ?) WHERE notice_id = ? AND status = 'scheduled' AND send_at_ms <= ?",
        (now_ms, by, on.isoformat(), notice_id, now_ms),
    )
    return changed == 1


async def cancel(tx: Tx, notice_id: str, now_ms: int) -> bool:
    changed = await tx.execute(
        "UPDATE notices SET status = 'cancelled', cancelled_at_ms = ? WHERE notice_id = ? AND status = 'scheduled'",
        (now_ms, notice_id),
    )
    return changed == 1


# Inbox ---------------------------------------------------------------------------------------

_INBOX = (
    "SELECT d.seq, d.resident_id, d.notice_id, d.title, d.body, d.delivered_at_ms, d.read_at_ms, n.category, n.link, n.survey,"
    " n.municipality_code FROM deliveries d JOIN notices n ON n.notice_id = d.notice_id"
)


async def inbox_page(tx: Tx, resident_id: str, limit: int, before_seq: int | None, unread_only: bool):
    return await tx.all(
        f"{_INBOX} WHERE d.resident_id = ? AND (? IS NULL OR d.seq < ?)"
        f"{' AND d.read_at_ms IS NULL' if unread_only else ''} ORDER BY d.seq DESC LIMIT ?",
        (resident_id, before_seq, before_seq, limit),
    )


async def inbox_after(tx: Tx, resident_id: str, after_seq: int, limit: int):
    return await tx.all(f"{_INBOX} WHERE d.resident_id = ? AND d.seq > ? ORDER BY d.seq LIMIT ?",
                        (resident_id, after_seq, limit))


async def inbox_rows(tx: Tx, seqs_json: str):
    """Full inbox rows by delivery seq (the stream hub's batch read)."""
    return await tx.all(f"{_INBOX} WHERE d.seq IN (SELECT value FROM json_each(?)) ORDER BY d.seq", (seqs_json,))


async def inbox_item(tx: Tx, resident_id: str, notice_id: str):
    return await tx.one(f"{_INBOX} WHERE d.resident_id = ? AND d.notice_id = ?", (resident_id, notice_id))


async def inbox_counts(tx: Tx, resident_id: str) -> tuple[int, int]:
    row = await tx.one(
        "SELECT count(*) - count(read_at_ms) AS unread, coalesce(max(seq), 0) AS latest FROM deliveries"
        " WHERE resident_id = ?", (resident_id,))
    return row["unread"], row["latest"]


async def mark_read(tx: Tx, resident_id: str, notice_id: str, now_ms: int) -> None:
    changed = await tx.execute(
        "UPDATE deliveries SET read_at_ms = ? WHERE resident_id = ? AND notice_id = ? AND read_at_ms IS NULL",
        (now_ms, resident_id, notice_id),
    )
    if changed:
        await tx.execute("UPDATE notices SET read_count = read_count + 1 WHERE notice_id = ?", (notice_id,))


async def max_seq(tx: Tx) -> int:
    return int(await tx.scalar("SELECT coalesce(max(seq), 0) FROM deliveries"))


async def recipients_after(tx: Tx, after_seq: int, limit: int) -> list[sqlite3.Row]:
    return await tx.all("SELECT seq, resident_id FROM deliveries WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after_seq, limit))


# Registry reads --------------------------------------------------------------------------------

async def resident(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM residents WHERE resident_id = ?", (resident_id,))


async def household_members(tx: Tx, household_id: str, except_id: str) -> list[sqlite3.Row]:
    return await tx.all(f"SELECT * FROM residents WHERE household_id = ? AND resident_id <> ? AND status IN {ACTIVE}"
                        " ORDER BY birth_date", (household_id, except_id))


async def household(tx: Tx, household_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM households WHERE household_id = ?", (household_id,))


# Benefits derived from the application area's decided applications (when its table exists):
# program -> (procedure granting it, procedure ending it). 児童扶養手当 has no certification procedure
# in the catalogue, so it comes from benefit_households only.
DERIVED_BENEFITS = {
    "child_allowance": ("child_allowance.certification", "child_allowance.eligibility_loss"),
    "nursery": ("childcare.certification", None),
}


async def _has_applications(tx: Tx) -> bool:
    return bool(await tx.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'applications'"))


async def benefit_households_sql(tx: Tx, program: str, municipality_code: str, on: date) -> tuple[str, list]:
    """A subquery of the household ids receiving `program` on `on`, and its parameters: the flags kept
    here, plus households whose member had the granting application approved (and not a later
    approved ending one)."""
    sql = ("SELECT household_id FROM benefit_households WHERE municipality_code = ? AND program = ?"
           " AND since <= ? AND (until IS NULL OR until >= ?)")
    params: list = [municipality_code, program, on.isoformat(), on.isoformat()]
    derived = DERIVED_BENEFITS.get(program)
    if derived and await _has_applications(tx):
        grant, end = derived
        sql += (" UNION SELECT r.household_id FROM applications a JOIN residents r ON r.resident_id = a.resident_id"
                " WHERE a.municipality_code = ? AND a.procedure_code = ? AND a.status = 'decided'"
                " AND a.decision = 'approved' AND r.household_id IS NOT NULL")
        params += [municipality_code, grant]
        if end:
            sql += (" AND NOT EXISTS (SELECT 1 FROM applications x WHERE x.resident_id = a.resident_id"
                    " AND x.procedure_code = ? AND x.status = 'decided' AND x.decision = 'approved'"
                    " AND x.decided_at_ms > a.decided_at_ms)")
            params.append(end)
    return sql, params


async def benefits_of(tx: Tx, household_id: str, municipality_code: str, on: date) -> list[str]:
    programs = []
    for program in ("child_allowance", "child_rearing_allowance", "nursery"):
        households, params = await benefit_households_sql(tx, program, municipality_code, on)
        if await tx.scalar(f"SELECT 1 FROM ({households}) WHERE household_id = ?", (*params, household_id)):
            programs.append(program)
    return programs


async def set_benefit(tx: Tx, household_id: str, program: str, municipality_code: str, since: str,
                      until: str | None) -> None:
    await tx.execute(
        "INSERT INTO benefit_households (household_id, program, municipality_code, since, until)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (household_id, program)"
        " DO UPDATE SET since = excluded.since, until = excluded.until",
        (household_id, program, municipality_code, since, until),
    )


async def vaccinations_of(tx: Tx, resident_ids: list[str]) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT * FROM vaccinations WHERE resident_id IN (SELECT value FROM json_each(?))"
        " ORDER BY resident_id, given_on, vaccine, dose", (json.dumps(resident_ids),))


async def insert_vaccination(tx: Tx, row: dict) -> bool:
    changed = await tx.execute(
        "INSERT OR IGNORE INTO vaccinations (vaccination_id, resident_id, municipality_code, vaccine, dose, given_on,"
        " recorded_at_ms, recorded_by) VALUES (:vaccination_id, :resident_id, :municipality_code, :vaccine, :dose,"
        " :given_on, :recorded_at_ms, :recorded_by)", row)
    return changed == 1


async def applications_of(tx: Tx, resident_id: str) -> list[dict]:
    """The caller's applications, if the application area's table exists (read defensively: its
    columns are the application area's; only the few shown here are looked for)."""
    if not await tx.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'applications'"):
        return []
    columns = {r["name"] for r in await tx.all("PRAGMA table_info(applications)")}
    if not {"application_id", "resident_id"} <= columns:
        return []
    procedure = next((c for c in ("procedure_code", "procedure_id", "procedure") if c in columns), None)
    status = next((c for c in ("status", "state") if c in columns), None)
    updated = next((c for c in ("updated_at_ms", "created_at_ms") if c in columns), None)
    select = ", ".join([
        "application_id",
        f"{procedure} AS procedure" if procedure else "'' AS procedure",
        f"{status} AS status" if status else "'' AS status",
        f"{updated} AS updated_at_ms" if updated else "NULL AS updated_at_ms",
    ])
    rows = await tx.all(f"SELECT {select} FROM applications WHERE resident_id = ? ORDER BY application_id",
                        (resident_id,))
    return [dict(r) for r in rows]


# Surveys ---------------------------------------------------------------------------------------

async def insert_answer(tx: Tx, notice_id: str, resident_id: str, choice_id: str, comment: str,
                        now_ms: int) -> bool:
    changed = await tx.execute(
        "INSERT OR IGNORE INTO survey_answers (notice_id, resident_id, choice_id, comment, answered_at_ms)"
        " VALUES (?, ?, ?, ?, ?)", (notice_id, resident_id, choice_id, comment, now_ms))
    return changed == 1


async def answers_page(tx: Tx, notice_id: str, limit: int, after: tuple[int, str] | None) -> list[sqlite3.Row]:
    if after is None:
        return await tx.all("SELECT * FROM survey_answers WHERE notice_id = ? ORDER BY answered_at_ms, resident_id"
                            " LIMIT ?", (notice_id, limit))
    return await tx.all(
        "SELECT * FROM survey_answers WHERE notice_id = ? AND (answered_at_ms, resident_id) > (?, ?)"
        " ORDER BY answered_at_ms, resident_id LIMIT ?", (notice_id, after[0], after[1], limit))


async def answer_counts(tx: Tx, notice_id: str) -> dict[str, int]:
    rows = await tx.all("SELECT choice_id, count(*) FROM survey_answers WHERE notice_id = ? GROUP BY choice_id",
                        (notice_id,))
    return {r[0]: r[1] for r in rows}
