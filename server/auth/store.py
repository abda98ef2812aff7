"""SQL of the auth area: the challenge key and spent challenges, sessions, received CRLs, and the card-link lookup."""

from __future__ import annotations

import sqlite3

from server.db import Database, Tx


async def challenge_key(tx: Tx, candidate: bytes, now_ms: int) -> bytes:
    """The challenge key every process on this database shares: `candidate` if none was made yet."""
    await tx.execute("INSERT OR IGNORE INTO challenge_keys (key_id, secret, created_at_ms) VALUES (1, ?, ?)",
                     (candidate, now_ms))
    return await tx.scalar("SELECT secret FROM challenge_keys WHERE key_id = 1")


async def spend_challenge(tx: Tx, challenge_id: str, expires_ms: int, now_ms: int) -> bool:
    """Record the challenge as spent; False when it was spent already (single use, atomically)."""
    return await tx.execute(
        "INSERT INTO challenges (expires_at_ms, challenge_id, used_at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (expires_ms, challenge_id, now_ms),
    ) == 1


async def purge_challenges(tx: Tx, before_ms: int) -> None:
    await tx.execute("DELETE FROM challenges WHERE expires_at_ms < ?", (before_ms,))


async def linked_resident(tx: Tx, issuer: str, serial: str) -> str | None:
    return await tx.scalar(
        "SELECT resident_id FROM card_links WHERE auth_issuer = ? AND auth_serial = ? AND unlinked_at_ms IS NULL",
        (issuer, serial),
    )


async def insert_session(tx: Tx, row: dict) -> None:
    await tx.execute(
        "INSERT INTO sessions (session_id, resident_id, access_hash, refresh_hash, created_at_ms, last_seen_ms,"
        " access_expires_ms, absolute_expires_ms) VALUES (:session_id, :resident_id, :access_hash, :refresh_hash,"
        " :created_at_ms, :last_seen_ms, :access_expires_ms, :absolute_expires_ms)",
        row,
    )


async def session_by_access(db: Database, access_hash: bytes) -> sqlite3.Row | None:
    """The session behind an access token (hot path: a single statement, no transaction): session_id,
    resident_id, last_seen_ms, access_expires_ms, absolute_expires_ms, ended_at_ms, municipality_code."""
    rows = await db.query(
        "SELECT s.session_id, s.resident_id, s.last_seen_ms, s.access_expires_ms, s.absolute_expires_ms,"
        " s.ended_at_ms, r.municipality_code FROM sessions s JOIN residents r USING (resident_id)"
        " WHERE s.access_hash = ?", (access_hash,))
    return rows[0] if rows else None


async def session_by_refresh(tx: Tx, refresh_hash: bytes) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM sessions WHERE refresh_hash = ?", (refresh_hash,))


async def rotate_tokens(tx: Tx, session_id: str, old_refresh: bytes, access: bytes, refresh: bytes,
                        now_ms: int, access_expires_ms: int) -> bool:
    changed = await tx.execute(
        "UPDATE sessions SET access_hash = ?, refresh_hash = ?, last_seen_ms = ?, access_expires_ms = ?"
        " WHERE session_id = ? AND refresh_hash = ? AND ended_at_ms IS NULL",
        (access, refresh, now_ms, access_expires_ms, session_id, old_refresh),
    )
    return changed == 1


async def touch_session(tx: Tx, session_id: str, now_ms: int, access_expires_ms: int) -> None:
    await tx.execute(
        "UPDATE sessions SET last_seen_ms = ?, access_expires_ms = ? WHERE session_id = ? AND ended_at_ms IS NULL",
        (now_ms, access_expires_ms, session_id),
    )


async def end_session(tx: Tx, session_id: str, now_ms: int) -> None:
    await tx.execute(
        "UPDATE sessions SET ended_at_ms = ? WHERE session_id = ? AND ended_at_ms IS NULL", (now_ms, session_id)
    )


async def crl_versions(reader: Tx | Database) -> dict[str, int]:
    """Which CRL each issuer has in force (checked before every card verification: keep it cheap)."""
    sql = "SELECT issuer, this_update_ms FROM card_crls"
    rows = await (reader.query(sql) if isinstance(reader, Database) else reader.all(sql))
    return {r["issuer"]: r["this_update_ms"] for r in rows}


async def crls(tx: Tx) -> list[bytes]:
    return [r["der"] for r in await tx.all("SELECT der FROM card_crls")]


async def put_crl(tx: Tx, issuer: str, der: bytes, this_update_ms: int) -> bool:
    """Keep the newest CRL per issuer; False when the one held is newer."""
    held = await tx.scalar("SELECT this_update_ms FROM card_crls WHERE issuer = ?", (issuer,))
    if held is not None and held > this_update_ms:
        return False
    await tx.execute(
        "INSERT INTO card_crls (issuer, der, this_update_ms) VALUES (?, ?, ?)"
        " ON CONFLICT(issuer) DO UPDATE SET der = excluded.der, this_update_ms = excluded.this_update_ms",
        (issuer, der, this_update_ms),
    )
    return True
