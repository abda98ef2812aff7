"""SQL of the registry area (one place; the rules never write SQL themselves)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from server.db import Tx

# --- municipalities ------------------------------------------------------------------------


async def municipality(tx: Tx, code: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM municipalities WHERE code = ?", (code,))


async def list_municipalities(tx: Tx, *, prefecture: str, keyword: str, after: str, limit: int) -> list[sqlite3.Row]:
    sql = "SELECT * FROM municipalities WHERE code > ?"
    params: list[Any] = [after]
    if prefecture:
        sql += " AND prefecture = ?"
        params.append(prefecture)
    if keyword:
        sql += " AND (instr(name, ?) > 0 OR instr(name_kana, ?) > 0)"
        params += [keyword, keyword]
    sql += " ORDER BY code LIMIT ?"
    params.append(limit)
    return await tx.all(sql, params)


# --- residents and households --------------------------------------------------------------


async def resident(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT r.*, (h.head_resident_id = r.resident_id) AS household_head FROM residents r"
        " LEFT JOIN households h ON h.household_id = r.household_id WHERE r.resident_id = ?",
        (resident_id,),
    )


async def list_residents(tx: Tx, lgcode: str, *, household_id: str, status: str, after: str,
                         limit: int) -> list[sqlite3.Row]:
    sql = ("SELECT r.*, (h.head_resident_id = r.resident_id) AS household_head FROM residents r"
           " LEFT JOIN households h ON h.household_id = r.household_id"
           " WHERE r.municipality_code = ? AND r.resident_id > ?")
    params: list[Any] = [lgcode, after]
    if household_id:
        sql += " AND r.household_id = ?"
        params.append(household_id)
    if status:
        sql += " AND r.status = ?"
        params.append(status)
    sql += " ORDER BY r.resident_id LIMIT ?"
    params.append(limit)
    return await tx.all(sql, params)


async def household(tx: Tx, household_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM households WHERE household_id = ?", (household_id,))


async def households(tx: Tx, household_ids: Sequence[str]) -> list[sqlite3.Row]:
    marks = ", ".join("?" for _ in household_ids)
    return await tx.all(f"SELECT * FROM households WHERE household_id IN ({marks})", tuple(household_ids))


async def residents_by_id(tx: Tx, resident_ids: Sequence[str]) -> list[sqlite3.Row]:
    marks = ", ".join("?" for _ in resident_ids)
    return await tx.all(f"SELECT resident_id, municipality_code, version FROM residents WHERE resident_id IN ({marks})",
                        tuple(resident_ids))


async def existing_codes(tx: Tx, codes: Sequence[str]) -> list[str]:
    marks = ", ".join("?" for _ in codes)
    return [r[0] for r in await tx.all(f"SELECT code FROM municipalities WHERE code IN ({marks})", tuple(codes))]


async def insert_household(tx: Tx, household_id: str, lgcode: str) -> None:
    await tx.execute("INSERT INTO households (household_id, municipality_code) VALUES (?, ?)", (household_id, lgcode))


async def set_household_head(tx: Tx, household_id: str, resident_id: str | None) -> None:
    await tx.execute("UPDATE households SET head_resident_id = ? WHERE household_id = ?", (resident_id, household_id))


async def clear_head_elsewhere(tx: Tx, resident_id: str, keep_household: str | None) -> None:
    """The resident stops heading any household other than `keep_household`."""
    await tx.execute(
        "UPDATE households SET head_resident_id = NULL WHERE head_resident_id = ? AND household_id IS NOT ?",
        (resident_id, keep_household),
    )


async def insert_resident(tx: Tx, values: dict[str, Any]) -> None:
    await tx.execute(
        f"INSERT INTO residents ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()),
    )


async def update_resident(tx: Tx, resident_id: str, values: dict[str, Any], *,
                          expected_version: int | None = None) -> bool:
    """Set `values`, bump the version; False if `expected_version` is given and stale."""
    assignments = ", ".join(f"{column} = ?" for column in values)
    sql = f"UPDATE residents SET {assignments}, version = version + 1 WHERE resident_id = ?"
    params: list[Any] = [*values.values(), resident_id]
    if expected_version is not None:
        sql += " AND version = ?"
        params.append(expected_version)
    return await tx.execute(sql, params) == 1


# --- card links ------------------------------------------------------------------------------


async def active_link(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM card_links WHERE resident_id = ? AND unlinked_at_ms IS NULL ORDER BY linked_at_ms DESC",
        (resident_id,),
    )


async def link(tx: Tx, link_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM card_links WHERE link_id = ?", (link_id,))


async def active_links_of_card(tx: Tx, auth_issuer: str, auth_serials: Sequence[str], sign_issuer: str,
                               sign_serials: Sequence[str]) -> list[sqlite3.Row]:
    a = ", ".join("?" for _ in auth_serials)
    s = ", ".join("?" for _ in sign_serials)
    return await tx.all(
        f"SELECT * FROM card_links WHERE unlinked_at_ms IS NULL AND ((auth_issuer = ? AND auth_serial IN ({a}))"
        f" OR (sign_issuer = ? AND sign_serial IN ({s})))",
        (auth_issuer, *auth_serials, sign_issuer, *sign_serials),
    )


async def end_links(tx: Tx, resident_id: str, now_ms: int) -> list[str]:
    rows = await tx.all("SELECT link_id FROM card_links WHERE resident_id = ? AND unlinked_at_ms IS NULL",
                        (resident_id,))
    await tx.execute("UPDATE card_links SET unlinked_at_ms = ? WHERE resident_id = ? AND unlinked_at_ms IS NULL",
                     (now_ms, resident_id))
    return [r["link_id"] for r in rows]


async def end_link(tx: Tx, link_id: str, now_ms: int) -> None:
    await tx.execute("UPDATE card_links SET unlinked_at_ms = ? WHERE link_id = ? AND unlinked_at_ms IS NULL",
                     (now_ms, link_id))


async def insert_link(tx: Tx, values: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO card_links (link_id, resident_id, auth_issuer, auth_serial, sign_issuer, sign_serial,"
        " linked_at_ms) VALUES (:link_id, :resident_id, :auth_issuer, :auth_serial, :sign_issuer, :sign_serial,"
        " :linked_at_ms)",
        values,
    )


# --- seal registrations ------------------------------------------------------------------------


async def live_seal(tx: Tx, resident_id: str) -> sqlite3.Row | None:
    return await tx.one(
        "SELECT * FROM seal_registrations WHERE resident_id = ? AND abolished_at_ms IS NULL", (resident_id,)
    )


async def seal(tx: Tx, registration_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM seal_registrations WHERE registration_id = ?", (registration_id,))


async def insert_seal(tx: Tx, values: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO seal_registrations (registration_id, resident_id, registration_number, registered_on,"
        " updated_at_ms) VALUES (:registration_id, :resident_id, :registration_number, :registered_on,"
        " :updated_at_ms)",
        values,
    )


async def abolish_seal(tx: Tx, registration_id: str, now_ms: int) -> bool:
    return await tx.execute(
        "UPDATE seal_registrations SET abolished_at_ms = ?, updated_at_ms = ?"
        " WHERE registration_id = ? AND abolished_at_ms IS NULL",
        (now_ms, now_ms, registration_id),
    ) == 1


# --- tax records -------------------------------------------------------------------------------


async def put_tax_record(tx: Tx, values: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO tax_records (resident_id, fiscal_year, total_income, taxable_income, municipal_tax,"
        " prefectural_tax, dependents, updated_at_ms) VALUES (:resident_id, :fiscal_year, :total_income,"
        " :taxable_income, :municipal_tax, :prefectural_tax, :dependents, :updated_at_ms)"
        " ON CONFLICT (resident_id, fiscal_year) DO UPDATE SET total_income = excluded.total_income,"
        " taxable_income = excluded.taxable_income, municipal_tax = excluded.municipal_tax,"
        " prefectural_tax = excluded.prefectural_tax, dependents = excluded.dependents,"
        " updated_at_ms = excluded.updated_at_ms",
        values,
    )


async def tax_record(tx: Tx, resident_id: str, fiscal_year: int) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM tax_records WHERE resident_id = ? AND fiscal_year = ?",
                        (resident_id, fiscal_year))


async def tax_records(tx: Tx, resident_id: str, *, before_year: int, limit: int) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT * FROM tax_records WHERE resident_id = ? AND fiscal_year < ? ORDER BY fiscal_year DESC LIMIT ?",
        (resident_id, before_year, limit),
    )


# --- family registers ----------------------------------------------------------------------------


async def family_register(tx: Tx, register_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM family_registers WHERE register_id = ?", (register_id,))


async def family_register_members(tx: Tx, register_id: str) -> list[sqlite3.Row]:
    return await tx.all("SELECT * FROM family_register_members WHERE register_id = ? ORDER BY member_no",
                        (register_id,))


async def put_family_register(tx: Tx, values: dict[str, Any], members: list[dict[str, Any]]) -> None:
    await tx.execute(
        "INSERT INTO family_registers (register_id, honseki_code, honseki_address, head_name, pending_notification,"
        " updated_at_ms) VALUES (:register_id, :honseki_code, :honseki_address, :head_name, :pending_notification,"
        " :updated_at_ms) ON CONFLICT (register_id) DO UPDATE SET honseki_code = excluded.honseki_code,"
        " honseki_address = excluded.honseki_address, head_name = excluded.head_name,"
        " pending_notification = excluded.pending_notification, updated_at_ms = excluded.updated_at_ms",
        values,
    )
    await tx.execute("DELETE FROM family_register_members WHERE register_id = ?", (values["register_id"],))
    await tx.executemany(
        "INSERT INTO family_register_members (register_id, member_no, resident_id, name, birth_date, sex,"
        " relationship, removed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(values["register_id"], m["member_no"], m["resident_id"], m["name"], m["birth_date"], m["sex"],
          m["relationship"], m["removed"]) for m in members],
    )


async def residents_of_register(tx: Tx, register_id: str) -> list[str]:
    rows = await tx.all("SELECT resident_id FROM residents WHERE family_register_id = ?", (register_id,))
    return [r["resident_id"] for r in rows]


async def savepoint(tx: Tx, name: str) -> None:
    await tx.execute(f"SAVEPOINT {name}")


async def release(tx: Tx, name: str) -> None:
    await tx.execute(f"RELEASE {name}")


async def rollback_to(tx: Tx, name: str) -> None:
    await tx.execute(f"ROLLBACK TO {name}")
    await tx.execute(f"RELEASE {name}")
