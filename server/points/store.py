"""Reads of the points area (async, on the core database's read snapshots).

Writes go through the batch writer (server.points.writer) and the synchronous rules in
server.points.ledger / server.points.mykey.
"""

from __future__ import annotations

import sqlite3

from google.protobuf.message import Message

from server import idempotency
from server.db import Tx
from server.errors import FailedPrecondition, NotFound


async def recall(tx: Tx, key: tuple[str, str, str], digest: bytes, response_type: type[Message]) -> Message | None:
    """The stored first outcome of a points request (the shared recall, on the ledger's own table)."""
    return await idempotency.recall(tx, key, digest, response_type, table="points_requests")


async def mykey_of_resident(tx: Tx, resident_id: str) -> sqlite3.Row:
    row = await tx.one("SELECT mykey_id, created_at_ms FROM mykeys WHERE resident_id=?", (resident_id,))
    if row is None:
        raise NotFound("MYKEY_ID_NOT_FOUND", "create a MyKey ID first")
    return row


async def mykey_for_card(tx: Tx, resident_id: str, issuer: str, serial: str) -> str:
    mykey_id = await tx.scalar("SELECT mykey_id FROM mykeys WHERE auth_issuer=? AND auth_serial=?", (issuer, serial))
    if mykey_id is not None:
        return mykey_id
    if await tx.scalar("SELECT 1 FROM mykeys WHERE resident_id=?", (resident_id,)):
        raise FailedPrecondition("MYKEY_NOT_LINKED_TO_CARD", "relink your MyKey ID to this card first")
    raise NotFound("MYKEY_ID_NOT_FOUND", "this card has no MyKey ID")


async def membership(tx: Tx, facility_id: str, mykey_id: str) -> sqlite3.Row | None:
    return await tx.one("SELECT * FROM memberships WHERE facility_id=? AND mykey_id=?", (facility_id, mykey_id))


async def balances(tx: Tx, mykey_id: str, now_ms: int) -> list[sqlite3.Row]:
    """The resident's accounts with what pending, unexpired holds keep back."""
    return await tx.all(
        "SELECT a.kind, a.municipality_code, a.event_id, a.balance,"
        " COALESCE((SELECT SUM(h.amount) FROM points_holds h WHERE h.account_id = a.account_id"
        "           AND h.state = 'pending' AND h.expires_at_ms > ?), 0) AS held"
        " FROM points_accounts a WHERE a.kind IN ('resident', 'holding') AND a.owner = ?"
        " ORDER BY a.kind, a.municipality_code, a.event_id", (now_ms, mykey_id),
    )


async def transfers(tx: Tx, mykey_id: str, after: tuple[int, int], limit: int) -> list[sqlite3.Row]:
    """Transfers touching the resident's accounts, one row per side that is theirs (keyset: seq, sign)."""
    side = "CASE WHEN a.account_id = t.credit_account_id THEN 1 ELSE -1 END"
    return await tx.all(
        "SELECT t.seq, t.transfer_id, t.code, t.amount, t.created_at_ms, a.kind, a.municipality_code, a.event_id,"
        " CASE WHEN a.account_id = t.credit_account_id THEN 1 ELSE -1 END AS sign"
        " FROM points_accounts a JOIN points_transfers t"
        "   ON t.debit_account_id = a.account_id OR t.credit_account_id = a.account_id"
        f" WHERE a.kind IN ('resident', 'holding') AND a.owner = ? AND (t.seq > ? OR (t.seq = ? AND {side} > ?))"
        " ORDER BY t.seq, sign LIMIT ?", (mykey_id, after[0], after[0], after[1], limit),
    )


async def held_conversions(tx: Tx, mykey_id: str, after: str, limit: int) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT conversion_id, partner_id, municipal_points, held_until_ms FROM points_conversions"
        " WHERE mykey_id = ? AND placed_at_ms IS NULL AND conversion_id > ? ORDER BY conversion_id LIMIT ?",
        (mykey_id, after, limit),
    )


async def settlement(tx: Tx, municipality: str, after: str, limit: int) -> list[sqlite3.Row]:
    return await tx.all(
        "SELECT a.owner AS merchant_id, a.balance AS owed,"
        " (SELECT COUNT(*) FROM points_transfers t WHERE t.credit_account_id = a.account_id AND t.code = 'capture')"
        "   AS captures"
        " FROM points_accounts a WHERE a.kind = 'merchant' AND a.municipality_code = ? AND a.owner > ?"
        " ORDER BY a.owner LIMIT ?", (municipality, after, limit),
    )
