"""SQL of the application area (one place, so another backend can replace it)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.db import Tx


# ---- catalogue -------------------------------------------------------------------------------

async def municipality_exists(tx: Tx, code: str) -> bool:
    return await tx.scalar("SELECT 1 FROM municipalities WHERE code = ?", (code,)) is not None


async def disabled_codes(tx: Tx, municipality_code: str) -> set[str]:
    rows = await tx.all("SELECT procedure_code FROM application_procedure_settings"
                        " WHERE municipality_code = ? AND enabled = 0", (municipality_code,))
    return {r["procedure_code"] for r in rows}


async def set_enabled(tx: Tx, municipality_code: str, code: str, enabled: bool, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO application_procedure_settings (municipality_code, procedure_code, enabled, updated_at_ms)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (municipality_code, procedure_code)"
        " DO UPDATE SET enabled = excluded.enabled, updated_at_ms = excluded.updated_at_ms",
        (municipality_code, code, int(enabled), now_ms),
    )


async def local_procedures(tx: Tx, municipality_code: str) -> list[dict[str, Any]]:
    rows = await tx.all("SELECT definition FROM application_local_procedures WHERE municipality_code = ?"
                        " ORDER BY procedure_code", (municipality_code,))
    return [json.loads(r["definition"]) for r in rows]


async def put_local_procedure(tx: Tx, municipality_code: str, code: str, definition: dict, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO application_local_procedures (municipality_code, procedure_code, definition, updated_at_ms)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (municipality_code, procedure_code)"
        " DO UPDATE SET definition = excluded.definition, updated_at_ms = excluded.updated_at_ms",
        (municipality_code, code, json.dumps(definition, ensure_ascii=False), now_ms),
    )


async def resident_municipality(tx: Tx, resident_id: str) -> str | None:
    return await tx.scalar("SELECT municipality_code FROM residents WHERE resident_id = ?", (resident_id,))


async def sign_certificate_owner(tx: Tx, issuer: str, serials: tuple[str, ...]) -> str | None:
    marks = ", ".join("?" for _ in serials)
    return await tx.scalar(
        f"SELECT resident_id FROM card_links WHERE sign_issuer = ? AND sign_serial IN ({marks})"
        " AND unlinked_at_ms IS NULL", (issuer, *serials))


# ---- applications ----------------------------------------------------------------------------

async def insert_application(tx: Tx, row: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO applications (application_id, resident_id, municipality_code, procedure_code, status, version,"
        " form_json, created_at_ms, updated_at_ms) VALUES (:application_id, :resident_id, :municipality_code,"
        " :procedure_code, :status, :version, :form_json, :created_at_ms, :updated_at_ms)",
        row,
    )


async def get_application(tx: Tx, application_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM applications WHERE application_id = ?", (application_id,))


async def update_application(tx: Tx, application_id: str, expected_version: int, **changes: Any) -> bool:
    """Apply `changes` and raise the version by one, only if the version is still `expected_version`."""
    sets = ", ".join(f"{k} = :{k}" for k in changes)
    changed = await tx.execute(
        f"UPDATE applications SET {sets}{', ' if sets else ''}version = version + 1"
        " WHERE application_id = :_id AND version = :_version",
        {**changes, "_id": application_id, "_version": expected_version},
    )
    return changed == 1


async def add_history(tx: Tx, application_id: str, *, actor: str, at_ms: int, action: str, status: str,
                      reason: str, version: int) -> None:
    seq = await tx.scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM application_history WHERE application_id = ?",
                          (application_id,))
    await tx.execute(
        "INSERT INTO application_history (application_id, seq, actor, at_ms, action, status, reason, version)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (application_id, seq, actor, at_ms, action, status, reason, version),
    )


async def history(tx: Tx, application_id: str) -> list[sqlite3.Row]:
    return await tx.all("SELECT * FROM application_history WHERE application_id = ? ORDER BY seq", (application_id,))


async def attachments(tx: Tx, application_id: str) -> list[sqlite3.Row]:
    return await tx.all("SELECT * FROM application_attachments WHERE application_id = ? ORDER BY slot,"
                        " uploaded_at_ms, attachment_id", (application_id,))


async def insert_attachment(tx: Tx, row: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO application_attachments (attachment_id, application_id, slot, content_type, size, sha256,"
        " filename, uploaded_at_ms) VALUES (:attachment_id, :application_id, :slot, :content_type, :size, :sha256,"
        " :filename, :uploaded_at_ms)",
        row,
    )


async def delete_attachment(tx: Tx, application_id: str, attachment_id: str) -> sqlite3.Row | None:
    row = await tx.one("SELECT * FROM application_attachments WHERE application_id = ? AND attachment_id = ?",
                       (application_id, attachment_id))
    if row is not None:
        await tx.execute("DELETE FROM application_attachments WHERE attachment_id = ?", (attachment_id,))
    return row


# Files still needed: named by an attachment, or by a signed submission's evidence (audit).
REFERENCED_BLOBS = ("SELECT sha256 FROM application_attachments WHERE sha256 IN ({marks})"
                    " UNION SELECT sha256 FROM application_evidence_blobs WHERE sha256 IN ({marks})")


async def blob_referenced(tx: Tx, sha256: str) -> bool:
    return bool(await referenced_blobs(tx, [sha256]))


async def referenced_blobs(tx: Tx, shas: list[str]) -> set[str]:
    """Which of `shas` an attachment or a submission's evidence names."""
    marks = ",".join("?" * len(shas))
    return {row[0] for row in await tx.all(REFERENCED_BLOBS.format(marks=marks), [*shas, *shas])}


async def list_for_resident(tx: Tx, resident_id: str, *, status: str | None, procedure: str | None,
                            after: str | None, limit: int) -> list[sqlite3.Row]:
    sql = "SELECT * FROM applications WHERE resident_id = ?"
    params: list[Any] = [resident_id]
    if status:
        sql += " AND status = ?"
        params.append(status)
    if procedure:
        sql += " AND procedure_code = ?"
        params.append(procedure)
    if after:
        sql += " AND application_id < ?"
        params.append(after)
    sql += " ORDER BY application_id DESC LIMIT ?"
    params.append(limit)
    return await tx.all(sql, params)


async def queue(tx: Tx, municipality_code: str, *, status: str | None, procedure: str | None,
                after: tuple[int, str] | None, limit: int) -> list[sqlite3.Row]:
    sql = "SELECT * FROM applications WHERE municipality_code = ? AND submitted_at_ms IS NOT NULL"
    params: list[Any] = [municipality_code]
    if status:
        sql += " AND status = ?"
        params.append(status)
    if procedure:
        sql += " AND procedure_code = ?"
        params.append(procedure)
    if after:
        sql += " AND (submitted_at_ms, application_id) > (?, ?)"
        params.extend(after)
    sql += " ORDER BY submitted_at_ms, application_id LIMIT ?"
    params.append(limit)
    return await tx.all(sql, params)


async def insert_evidence(tx: Tx, row: dict[str, Any]) -> None:
    """The signed submission, and the files it named (kept while evidence names them)."""
    await tx.execute(
        "INSERT INTO application_evidence (evidence_id, application_id, version, canonical, signature, certificate,"
        " certificate_issuer, certificate_serial, arrived_at_ms) VALUES (:evidence_id, :application_id, :version,"
        " :canonical, :signature, :certificate, :certificate_issuer, :certificate_serial, :arrived_at_ms)",
        row,
    )
    await tx.execute(
        "INSERT OR IGNORE INTO application_evidence_blobs (sha256, evidence_id)"
        " SELECT json_extract(value, '$.sha256'), ? FROM json_each(CAST(? AS TEXT), '$.attachments')",
        (row["evidence_id"], row["canonical"]),
    )


async def evidence(tx: Tx, application_id: str, *, after: str | None, limit: int) -> list[sqlite3.Row]:
    sql = "SELECT * FROM application_evidence WHERE application_id = ?"
    params: list[Any] = [application_id]
    if after:
        sql += " AND evidence_id > ?"
        params.append(after)
    sql += " ORDER BY evidence_id LIMIT ?"
    params.append(limit)
    return await tx.all(sql, params)
