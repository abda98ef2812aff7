"""SQL of the issuance area: settings, kiosk transactions and steps, documents, charges, operator
fee lines, 利用登録; and the registry records it reads (residents, seals, tax, family registers)."""

from __future__ import annotations

import sqlite3

from server.db import Database, Tx

# registry records (read only) ------------------------------------------------------------------


async def resident(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM residents WHERE resident_id = ?", (resident_id,))


async def household_members(tx: Tx, household_id: str) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT * FROM residents WHERE household_id = ? ORDER BY resident_id", (household_id,)
    )


async def household_head(tx: Tx, household_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT r.* FROM households h JOIN residents r ON r.resident_id = h.head_resident_id"
        " WHERE h.household_id = ?", (household_id,)
    )


async def municipality(tx: Tx, code: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM municipalities WHERE code = ?", (code,))


async def live_seal(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM seal_registrations WHERE resident_id = ? AND abolished_at_ms IS NULL", (resident_id,)
    )


async def tax_record(tx: Tx, resident_id: str, fiscal_year: int) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM tax_records WHERE resident_id = ? AND fiscal_year = ?", (resident_id, fiscal_year)
    )


async def family_register(tx: Tx, register_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM family_registers WHERE register_id = ?", (register_id,))


async def family_register_members(tx: Tx, register_id: str) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT * FROM family_register_members WHERE register_id = ? ORDER BY member_no", (register_id,)
    )


# settings ---------------------------------------------------------------------------------------


async def settings_row(tx: Tx, lgcode: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM kiosk_settings WHERE municipality_code = ?", (lgcode,))


async def put_settings(tx: Tx, lgcode: str, settings_json: str, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO kiosk_settings (municipality_code, settings_json, updated_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT(municipality_code) DO UPDATE SET settings_json = excluded.settings_json,"
        " updated_at_ms = excluded.updated_at_ms",
        (lgcode, settings_json, now_ms),
    )


# transactions and steps --------------------------------------------------------------------------


async def step(tx: Tx, kiosk_id: str, ktid: str, step_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT request_digest, response FROM kiosk_steps WHERE kiosk_id = ? AND kiosk_transaction_id = ?"
        " AND step_id = ?", (kiosk_id, ktid, step_id),
    )


async def step_and_transaction(tx: Tx, kiosk_id: str, ktid: str, step_id: str) -> tuple[sqlite3.Row | None, dict | None]:
    """(the step's stored answer, the kiosk transaction as a dict), by one statement where the
    transaction exists (every step but a begin); a step can be stored without one (a refused begin)."""
    row = await tx.one(
        "SELECT t.*, s.request_digest AS step_request_digest, s.response AS step_response"
        " FROM kiosk_transactions t LEFT JOIN kiosk_steps s ON s.kiosk_id = t.kiosk_id"
        " AND s.kiosk_transaction_id = t.kiosk_transaction_id AND s.step_id = ?"
        " WHERE t.kiosk_id = ? AND t.kiosk_transaction_id = ?", (step_id, kiosk_id, ktid),
    )
    if row is None:
        return await step(tx, kiosk_id, ktid, step_id), None
    txn = dict(row)
    digest, response = txn.pop("step_request_digest"), txn.pop("step_response")
    return (None if digest is None else {"request_digest": digest, "response": response}), txn


async def step_now(db: Database, kiosk_id: str, ktid: str, step_id: str) -> sqlite3.Row | None:
    """The stored answer of a step, by one point lookup outside any transaction (the pre-check of
    steps that act before their write transaction; that transaction checks again)."""
    rows = await db.query(
        "SELECT request_digest, response FROM kiosk_steps WHERE kiosk_id = ? AND kiosk_transaction_id = ?"
        " AND step_id = ?", (kiosk_id, ktid, step_id),
    )
    return rows[0] if rows else None


async def put_step(tx: Tx, kiosk_id: str, ktid: str, step_id: str, digest: bytes, response: bytes,
                   now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO kiosk_steps (kiosk_id, kiosk_transaction_id, step_id, request_digest, response,"
        " created_at_ms) VALUES (?, ?, ?, ?, ?, ?)", (kiosk_id, ktid, step_id, digest, response, now_ms),
    )


async def transaction(tx: Tx, kiosk_id: str, ktid: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM kiosk_transactions WHERE kiosk_id = ? AND kiosk_transaction_id = ?", (kiosk_id, ktid)
    )


async def transaction_now(db: Database, kiosk_id: str, ktid: str) -> sqlite3.Row | None:
    """A kiosk transaction by one point lookup outside any transaction (see `step_now`)."""
    rows = await db.query(
        "SELECT * FROM kiosk_transactions WHERE kiosk_id = ? AND kiosk_transaction_id = ?", (kiosk_id, ktid)
    )
    return rows[0] if rows else None


async def insert_transaction(tx: Tx, row: dict) -> None:
    await tx.execute(
        f"INSERT INTO kiosk_transactions ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


async def update_transaction(tx: Tx, txn_id: str, **columns) -> None:
    sets = ", ".join(f"{k} = ?" for k in columns)
    await tx.execute(f"UPDATE kiosk_transactions SET {sets} WHERE txn_id = ?", (*columns.values(), txn_id))


async def expired_transactions(tx: Tx, now_ms: int, open_states: tuple[str, ...], limit: int = 200) -> list[str]:
    marks = ", ".join("?" for _ in open_states)
    rows = await tx.all(
        f"SELECT txn_id FROM kiosk_transactions WHERE state IN ({marks}) AND expires_at_ms <= ? LIMIT ?",
        (*open_states, now_ms, limit),
    )
    return [r["txn_id"] for r in rows]


# documents and money ----------------------------------------------------------------------------


async def next_serial(tx: Tx, lgcode: str, year: int) -> int:
    return int(await tx.scalar(
        "INSERT INTO issuance_serials (municipality_code, year, last_no) VALUES (?, ?, 1)"
        " ON CONFLICT(municipality_code, year) DO UPDATE SET last_no = last_no + 1 RETURNING last_no",
        (lgcode, year),
    ))


async def insert_document(tx: Tx, row: dict) -> None:
    await tx.execute(
        f"INSERT INTO issued_documents ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


async def insert_charge(tx: Tx, row: dict) -> None:
    await tx.execute(
        f"INSERT INTO issuance_charges ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


async def documents(tx: Tx, txn_id: str) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT d.*, c.amount_yen, c.status AS charge_status FROM issued_documents d"
        " JOIN issuance_charges c ON c.document_id = d.document_id WHERE d.txn_id = ? ORDER BY d.copy_no",
        (txn_id,),
    )


async def resolve_document(tx: Tx, document_id: str, status: str, charge_status: str, now_ms: int) -> None:
    await tx.execute(
        "UPDATE issued_documents SET status = ?, resolved_at_ms = ? WHERE document_id = ? AND status = 'issued'",
        (status, now_ms, document_id),
    )
    await tx.execute(
        "UPDATE issuance_charges SET status = ?, resolved_at_ms = ? WHERE document_id = ? AND status = 'pending'",
        (charge_status, now_ms, document_id),
    )


async def void_open_documents(tx: Tx, txn_id: str, now_ms: int) -> int:
    """Void every copy of a transaction that has not been confirmed printed; returns how many."""
    await tx.execute(
        "UPDATE issuance_charges SET status = 'voided', resolved_at_ms = ? WHERE txn_id = ? AND status = 'pending'",
        (now_ms, txn_id),
    )
    return await tx.execute(
        "UPDATE issued_documents SET status = 'voided', resolved_at_ms = ? WHERE txn_id = ? AND status = 'issued'",
        (now_ms, txn_id),
    )


async def insert_operator_fee(tx: Tx, row: dict) -> None:
    await tx.execute(
        f"INSERT INTO operator_fee_lines ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
        tuple(row.values()),
    )


async def document_by_code(tx: Tx, code: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT d.*, m.name AS municipality_name FROM issued_documents d"
        " LEFT JOIN municipalities m ON m.code = d.municipality_code WHERE d.verification_code = ?", (code,),
    )


async def settlement(tx: Tx, lgcode: str, month: str) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT operator, COUNT(*) AS copies, SUM(amount_yen) AS owed, SUM(fee_collected_yen) AS fees"
        " FROM operator_fee_lines WHERE municipality_code = ? AND month = ? GROUP BY operator ORDER BY operator",
        (lgcode, month),
    )


# 利用登録 ---------------------------------------------------------------------------------------


async def honseki_usage(tx: Tx, resident_id: str, honseki_code: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM honseki_usages WHERE resident_id = ? AND honseki_code = ?", (resident_id, honseki_code)
    )


async def honseki_usage_by_id(tx: Tx, usage_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM honseki_usages WHERE usage_id = ?", (usage_id,))


async def insert_honseki_usage(tx: Tx, usage_id: str, resident_id: str, honseki_code: str, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO honseki_usages (usage_id, resident_id, honseki_code, status, applied_at_ms)"
        " VALUES (?, ?, ?, 'pending', ?)", (usage_id, resident_id, honseki_code, now_ms),
    )


async def decide_honseki_usage(tx: Tx, usage_id: str, status: str, now_ms: int) -> None:
    await tx.execute(
        "UPDATE honseki_usages SET status = ?, decided_at_ms = ? WHERE usage_id = ?", (status, now_ms, usage_id)
    )


async def honseki_usages_page(tx: Tx, honseki_code: str, after: str | None, limit: int) -> list[sqlite3.Row]:
    if after:
        return await tx.all(
            "SELECT * FROM honseki_usages WHERE honseki_code = ? AND usage_id < ? ORDER BY usage_id DESC LIMIT ?",
            (honseki_code, after, limit),
        )
    return await tx.all(
        "SELECT * FROM honseki_usages WHERE honseki_code = ? ORDER BY usage_id DESC LIMIT ?", (honseki_code, limit)
    )
