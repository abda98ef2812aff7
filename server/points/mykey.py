"""MyKey ID, bound accounts and facility memberships: the rules (synchronous, over sqlite3).

A MyKey ID is 8 random letters and digits bound to the card's user-authentication certificate
(issuer + serial), derived from nothing personal. The card holder proves presence by signing a
fresh challenge; the adapter verifies that signature (AuthService's Authenticator) and hands the
verified card here as `SignedCard`.

Memberships record only that a MyKey ID is a member of a facility, under the facility's own
member number: no lending or purchase history is kept, by rule (tests/points/test_guards.py
inspects the schema and the API for such fields).
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass

from onestop.points.v1 import points_pb2 as pb

from server.convert import ts_ms
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from server.points.ledger import new_mykey_id

MAX_REF = 64


@dataclass(frozen=True)
class SignedCard:
    """A card that signed this request's fresh challenge: the resident it is linked to, and its cert."""

    resident_id: str
    issuer: str
    serial: str


def check_ref(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument.field(name, "required")
    if len(value) > MAX_REF or not value.isprintable():
        raise InvalidArgument.field(name, f"at most {MAX_REF} printable characters")


def _callers_card(caller_resident: str, card: SignedCard) -> None:
    if card.resident_id != caller_resident:
        raise PermissionDenied("CARD_NOT_CALLERS", "the card presented is not the signed-in resident's")


def mykey_for_card(conn: sqlite3.Connection, card: SignedCard) -> str:
    """The MyKey ID bound to this card; a renewed card must be relinked first."""
    row = conn.execute("SELECT mykey_id FROM mykeys WHERE auth_issuer=? AND auth_serial=?",
                       (card.issuer, card.serial)).fetchone()
    if row is not None:
        return row[0]
    if conn.execute("SELECT 1 FROM mykeys WHERE resident_id=?", (card.resident_id,)).fetchone():
        raise FailedPrecondition("MYKEY_NOT_LINKED_TO_CARD", "relink your MyKey ID to this card first")
    raise NotFound("MYKEY_ID_NOT_FOUND", "this card has no MyKey ID")


def create(conn: sqlite3.Connection, now_ms: int, caller_resident: str, card: SignedCard) -> pb.CreateMyKeyIdResponse:
    _callers_card(caller_resident, card)
    if conn.execute("SELECT 1 FROM mykeys WHERE resident_id=?", (caller_resident,)).fetchone():
        raise AlreadyExists("MYKEY_ID_EXISTS", "you already have a MyKey ID")
    for _ in range(8):
        mykey_id = new_mykey_id()
        try:
            conn.execute(
                "INSERT INTO mykeys (mykey_id, resident_id, auth_issuer, auth_serial, created_at_ms)"
                " VALUES (?, ?, ?, ?, ?)", (mykey_id, caller_resident, card.issuer, card.serial, now_ms),
            )
        except sqlite3.IntegrityError:
            if conn.execute("SELECT 1 FROM mykeys WHERE mykey_id=?", (mykey_id,)).fetchone():
                continue  # a collision of random ids: draw again
            raise
        return pb.CreateMyKeyIdResponse(mykey_id=mykey_id, created_at=ts_ms(now_ms))
    raise RuntimeError("could not draw a free MyKey ID")


def relink(conn: sqlite3.Connection, now_ms: int, caller_resident: str, card: SignedCard) -> pb.RelinkMyKeyIdResponse:
    _callers_card(caller_resident, card)
    row = conn.execute("SELECT mykey_id FROM mykeys WHERE resident_id=?", (caller_resident,)).fetchone()
    if row is None:
        raise NotFound("MYKEY_ID_NOT_FOUND", "create a MyKey ID first")
    conn.execute("UPDATE mykeys SET auth_issuer=?, auth_serial=?, relinked_at_ms=? WHERE mykey_id=?",
                 (card.issuer, card.serial, now_ms, row[0]))
    return pb.RelinkMyKeyIdResponse(mykey_id=row[0])


def bind(conn: sqlite3.Connection, now_ms: int, caller_resident: str, card: SignedCard, kind: str, provider: str,
         account_ref: str) -> str:
    """Bind an account that moves value; refused when it is someone else's already."""
    _callers_card(caller_resident, card)
    mykey_id = mykey_for_card(conn, card)
    row = conn.execute("SELECT mykey_id FROM points_bound_accounts WHERE kind=? AND provider=? AND account_ref=?",
                       (kind, provider, account_ref)).fetchone()
    if row is not None:
        if row[0] != mykey_id:
            raise AlreadyExists("ACCOUNT_BOUND_ELSEWHERE", "this account is bound to another person")
        return mykey_id
    conn.execute("INSERT INTO points_bound_accounts (kind, provider, account_ref, mykey_id, bound_at_ms)"
                 " VALUES (?, ?, ?, ?, ?)", (kind, provider, account_ref, mykey_id, now_ms))
    return mykey_id


def membership_message(row: sqlite3.Row) -> pb.Membership:
    return pb.Membership(facility_id=row["facility_id"], facility_kind=row["facility_kind"],
                         member_number=row["member_number"], registered_at=ts_ms(row["registered_at_ms"]))


def register(conn: sqlite3.Connection, now_ms: int, facility_id: str, facility_kind: str, card: SignedCard,
             member_number: str) -> pb.RegisterMembershipResponse:
    if member_number:
        check_ref(member_number, "member_number")
    mykey_id = mykey_for_card(conn, card)
    if conn.execute("SELECT 1 FROM memberships WHERE facility_id=? AND mykey_id=?", (facility_id, mykey_id)).fetchone():
        raise AlreadyExists("MEMBERSHIP_EXISTS", "already a member of this facility")
    number = member_number or "".join(secrets.choice("0123456789") for _ in range(10))
    if conn.execute("SELECT 1 FROM memberships WHERE facility_id=? AND member_number=?",
                    (facility_id, number)).fetchone():
        raise AlreadyExists("MEMBER_NUMBER_TAKEN", "this member number is someone else's")
    conn.execute("INSERT INTO memberships (facility_id, mykey_id, facility_kind, member_number, registered_at_ms)"
                 " VALUES (?, ?, ?, ?, ?)", (facility_id, mykey_id, facility_kind, number, now_ms))
    row = conn.execute("SELECT * FROM memberships WHERE facility_id=? AND mykey_id=?", (facility_id, mykey_id)).fetchone()
    return pb.RegisterMembershipResponse(membership=membership_message(row))
