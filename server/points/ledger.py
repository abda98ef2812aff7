"""The municipal points ledger: the rules, as plain synchronous Python over one sqlite3 connection.

Every function takes a connection whose row_factory is sqlite3.Row (writer.connect) and runs
inside a transaction the caller opened (the batch writer's, or a test's) and
either returns a response message or raises a `server.errors` refusal, in which case the caller
rolls back its savepoint: a refusal leaves nothing behind.

Semantics follow TigerBeetle's: double-entry transfers (debit one account, credit another by the
same amount, so the sum over all accounts is zero), never edited; two-phase redemption (a pending
hold counts against the available balance; capture posts it, void or expiry releases it; a hold
resolves once); the idempotency key is the request id (see writer.apply_once).

Conversion from partner points is one way: `post` refuses any transfer that credits a partner
clearing account. Partner rates are in thousandths: municipal = partner_points * rate_milli // 1000,
rounded DOWN to a whole point (1 partner point at 0.5 gives 0; 3 give 1).

Lots: every credit to a resident account opens a lot expiring after the municipality's
`expiry_months` (default 24; same day of month, clamped, in Japan time). Spending, donation and
expiry consume lots oldest-expiry first, so the sum of open lots equals the account's balance.
"""

from __future__ import annotations

import calendar
import functools
import secrets
import sqlite3

from onestop.points.v1 import points_pb2 as pb

from server.clock import JST, from_epoch_ms, to_epoch_ms
from server.convert import ts_ms
from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.ids import new_id

HOLDING_DAYS = 14
HOLD_TTL_MS = 10 * 60 * 1000
DEFAULT_EXPIRY_MONTHS = 24
MAX_AMOUNT = 100_000_000
RESIDENT_KINDS = ("resident", "holding")


# --- accounts and transfers -------------------------------------------------------------------

def account_id(conn: sqlite3.Connection, kind: str, owner: str, municipality: str = "", event_id: str = "") -> int:
    """The account's id, opening it at zero on first use."""
    key = (kind, owner, municipality, event_id)
    row = conn.execute(
        "SELECT account_id FROM points_accounts WHERE kind=? AND owner=? AND municipality_code=? AND event_id=?", key
    ).fetchone()
    if row is not None:
        return row[0]
    return conn.execute(
        "INSERT INTO points_accounts (kind, owner, municipality_code, event_id) VALUES (?, ?, ?, ?)", key
    ).lastrowid


def find_account(conn: sqlite3.Connection, kind: str, owner: str, municipality: str = "",
                 event_id: str = "") -> sqlite3.Row | None:
    return conn.execute(
        "SELECT account_id, kind, balance, pending FROM points_accounts"
        " WHERE kind=? AND owner=? AND municipality_code=? AND event_id=?",
        (kind, owner, municipality, event_id),
    ).fetchone()


def post(conn: sqlite3.Connection, debit: int, credit: int, amount: int, code: str, ref: str, now_ms: int) -> str:
    """One balanced, immutable transfer. Resident and holding accounts are never overdrawn."""
    if amount <= 0:
        raise InvalidArgument.field("amount", "must be positive")
    sides = {row[0]: row for row in conn.execute(
        "SELECT account_id, kind, balance, pending FROM points_accounts WHERE account_id IN (?, ?)", (debit, credit))}
    if sides[credit][1] == "partner":
        raise FailedPrecondition("CONVERSION_IS_ONE_WAY", "municipal points never turn back into partner points")
    _, kind, balance, pending = sides[debit]
    if kind in RESIDENT_KINDS and balance - pending < amount:
        raise FailedPrecondition("INSUFFICIENT_FUNDS", "not enough points available",
                                 metadata={"available": str(balance - pending)})
    return _write_transfer(conn, debit, credit, amount, code, ref, now_ms)


def _write_transfer(conn: sqlite3.Connection, debit: int, credit: int, amount: int, code: str, ref: str,
                    now_ms: int) -> str:
    """The rows of a transfer whose sides `post` (or, for a grant, the caller) has checked."""
    conn.execute("UPDATE points_accounts SET balance = balance - ? WHERE account_id=?", (amount, debit))
    conn.execute("UPDATE points_accounts SET balance = balance + ? WHERE account_id=?", (amount, credit))
    transfer_id = new_id("trf")
    conn.execute(
        "INSERT INTO points_transfers (transfer_id, debit_account_id, credit_account_id, amount, code, ref,"
        " created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (transfer_id, debit, credit, amount, code, ref, now_ms),
    )
    return transfer_id


def balance_of(conn: sqlite3.Connection, account: int) -> int:
    return conn.execute("SELECT balance FROM points_accounts WHERE account_id=?", (account,)).fetchone()[0]


# --- lots and expiry --------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def add_months(ms: int, months: int) -> int:
    """`ms` plus `months` calendar months in Japan time (a pure function: a batch's transfers share
    one `now_ms`, so it is worked out once a batch)."""
    at = from_epoch_ms(ms).astimezone(JST)
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return to_epoch_ms(at.replace(year=year, month=month, day=day))


def expiry_months(conn: sqlite3.Connection, municipality: str) -> int:
    row = conn.execute("SELECT expiry_months FROM points_rules WHERE municipality_code=?", (municipality,)).fetchone()
    return row[0] if row else DEFAULT_EXPIRY_MONTHS


def open_lot(conn: sqlite3.Connection, account: int, amount: int, municipality: str, now_ms: int) -> None:
    _insert_lot(conn, account, amount, now_ms, add_months(now_ms, expiry_months(conn, municipality)))


def _insert_lot(conn: sqlite3.Connection, account: int, amount: int, now_ms: int, expires_ms: int) -> None:
    conn.execute(
        "INSERT INTO points_lots (account_id, amount, remaining, granted_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?)",
        (account, amount, amount, now_ms, expires_ms),
    )


def consume_lots(conn: sqlite3.Connection, account: int, amount: int) -> None:
    """Take `amount` from the account's open lots, the soonest to expire first."""
    rows = conn.execute(
        "SELECT lot_id, remaining FROM points_lots WHERE account_id=? AND remaining > 0"
        " ORDER BY expires_at_ms, lot_id", (account,)
    ).fetchall()
    for lot_id, remaining in rows:
        if amount <= 0:
            break
        take = min(remaining, amount)
        conn.execute("UPDATE points_lots SET remaining = remaining - ? WHERE lot_id=?", (take, lot_id))
        amount -= take
    if amount > 0:  # the lots and the balance disagree: a bug, never a refusal
        raise RuntimeError("lots do not cover the balance")


def credit_resident(conn: sqlite3.Connection, source: int, account: int, amount: int, code: str, ref: str,
                    municipality: str, now_ms: int) -> str:
    transfer_id = post(conn, source, account, amount, code, ref, now_ms)
    open_lot(conn, account, amount, municipality, now_ms)
    return transfer_id


def debit_resident(conn: sqlite3.Connection, account: int, target: int, amount: int, code: str, ref: str,
                   now_ms: int) -> str:
    transfer_id = post(conn, account, target, amount, code, ref, now_ms)
    consume_lots(conn, account, amount)
    return transfer_id


# --- checks -----------------------------------------------------------------------------------

def check_amount(amount: int, name: str = "amount") -> None:
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidArgument.field(name, f"must be between 1 and {MAX_AMOUNT}")


def check_lgcode(code: str, name: str = "municipality_code") -> None:
    if len(code) != 6 or not code.isdigit():
        raise InvalidArgument.field(name, "a 6-digit local-government code")


def require_mykey(conn: sqlite3.Connection, mykey_id: str) -> None:
    if conn.execute("SELECT 1 FROM mykeys WHERE mykey_id=?", (mykey_id,)).fetchone() is None:
        raise NotFound("MYKEY_ID_NOT_FOUND", "no such MyKey ID")


def mykey_of_resident(conn: sqlite3.Connection, resident_id: str) -> str:
    row = conn.execute("SELECT mykey_id FROM mykeys WHERE resident_id=?", (resident_id,)).fetchone()
    if row is None:
        raise NotFound("MYKEY_ID_NOT_FOUND", "create a MyKey ID first")
    return row[0]


def event_row(conn: sqlite3.Connection, event_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT event_id, municipality_code FROM points_events WHERE event_id=?", (event_id,)).fetchone()
    if row is None:
        raise NotFound("EVENT_NOT_FOUND", "no such support event")
    return row


# --- configuration ----------------------------------------------------------------------------

def set_partner_rate(conn: sqlite3.Connection, now_ms: int, partner_id: str, rate_milli: int) -> pb.SetPartnerRateResponse:
    if not partner_id:
        raise InvalidArgument.field("partner_id", "required")
    if not 1 <= rate_milli <= 100_000:
        raise InvalidArgument.field("rate_milli", "between 1 and 100000 (thousandths of a municipal point)")
    conn.execute(
        "INSERT INTO points_partner_rates (partner_id, rate_milli, updated_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT(partner_id) DO UPDATE SET rate_milli=excluded.rate_milli, updated_at_ms=excluded.updated_at_ms",
        (partner_id, rate_milli, now_ms),
    )
    return pb.SetPartnerRateResponse(partner_id=partner_id, rate_milli=rate_milli)


def set_point_rules(conn: sqlite3.Connection, now_ms: int, municipality: str, months: int) -> pb.SetPointRulesResponse:
    check_lgcode(municipality)
    if not 1 <= months <= 120:
        raise InvalidArgument.field("expiry_months", "between 1 and 120")
    conn.execute(
        "INSERT INTO points_rules (municipality_code, expiry_months, updated_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT(municipality_code) DO UPDATE SET expiry_months=excluded.expiry_months,"
        " updated_at_ms=excluded.updated_at_ms",
        (municipality, months, now_ms),
    )
    return pb.SetPointRulesResponse(municipality_code=municipality, expiry_months=months)


def define_event(conn: sqlite3.Connection, now_ms: int, municipality: str, title: str,
                 merchant_ids: list[str]) -> pb.DefineSupportEventResponse:
    check_lgcode(municipality)
    if not title.strip() or len(title) > 200:
        raise InvalidArgument.field("title", "required, at most 200 characters")
    if not merchant_ids or any(not m for m in merchant_ids):
        raise InvalidArgument.field("merchant_ids", "at least one non-empty merchant id")
    event_id = new_id("evt")
    conn.execute("INSERT INTO points_events (event_id, municipality_code, title, created_at_ms) VALUES (?, ?, ?, ?)",
                 (event_id, municipality, title, now_ms))
    conn.executemany("INSERT OR IGNORE INTO points_event_merchants (event_id, merchant_id) VALUES (?, ?)",
                     [(event_id, m) for m in merchant_ids])
    return pb.DefineSupportEventResponse(event_id=event_id)


# --- grants, conversion, placement ------------------------------------------------------------

_GRANT_LOOKUP = (
    "SELECT (SELECT account_id FROM points_accounts WHERE kind='issuance' AND owner='' AND municipality_code=:lg"
    "        AND event_id='') AS source,"
    " (SELECT expiry_months FROM points_rules WHERE municipality_code=:lg) AS months,"
    " a.account_id AS target, a.balance AS balance"
    " FROM (SELECT 1) LEFT JOIN points_accounts a"
    "   ON a.kind='resident' AND a.owner=:mykey AND a.municipality_code=:lg AND a.event_id=:event"
)


def grant(conn: sqlite3.Connection, now_ms: int, municipality: str, mykey_id: str, amount: int,
          event_id: str = "") -> pb.GrantPointsResponse:
    check_lgcode(municipality)
    if not mykey_id:
        raise InvalidArgument.field("mykey_id", "required")
    check_amount(amount)
    # The issuance account, the expiry rule and the resident's account in one statement (three
    # indexed lookups), rather than three round trips through the driver.
    source, months, target, balance = conn.execute(
        _GRANT_LOOKUP, {"lg": municipality, "mykey": mykey_id, "event": event_id}).fetchone()
    if target is None:  # an account exists only once its owner and event were checked
        require_mykey(conn, mykey_id)
        if event_id and event_row(conn, event_id)["municipality_code"] != municipality:
            raise NotFound("EVENT_NOT_FOUND", "no such support event in this municipality")
        target, balance = account_id(conn, "resident", mykey_id, municipality, event_id), 0
    if source is None:
        source = account_id(conn, "issuance", "", municipality)
    # What `post` would look up is known here: the debit is an issuance account (never overdrawn by
    # rule), the credit a resident account (not a partner's), the amount was checked above.
    transfer_id = _write_transfer(conn, source, target, amount, "grant", "", now_ms)
    _insert_lot(conn, target, amount, now_ms, add_months(now_ms, months or DEFAULT_EXPIRY_MONTHS))
    return pb.GrantPointsResponse(transfer_id=transfer_id, balance=balance + amount)


def correct_grant(conn: sqlite3.Connection, now_ms: int, municipality: str, transfer_id: str,
                  amount: int) -> pb.CorrectGrantResponse:
    """A new reversing transfer for (part of) a grant; the grant itself is never touched."""
    check_lgcode(municipality)
    if not transfer_id:
        raise InvalidArgument.field("transfer_id", "required")
    if amount < 0 or amount > MAX_AMOUNT:
        raise InvalidArgument.field("amount", f"between 0 (all that is left) and {MAX_AMOUNT}")
    issuance = account_id(conn, "issuance", "", municipality)
    grant_row = conn.execute(
        "SELECT credit_account_id, amount FROM points_transfers WHERE transfer_id=? AND code='grant'"
        " AND debit_account_id=?", (transfer_id, issuance),
    ).fetchone()
    if grant_row is None:
        raise NotFound("TRANSFER_NOT_FOUND", "no such grant of this municipality")
    account, granted = grant_row
    corrected = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM points_transfers WHERE code='correction'"
                             " AND ref=?", (transfer_id,)).fetchone()[0]
    left = granted - corrected
    take = amount or left
    if take <= 0 or take > left:
        raise FailedPrecondition("CORRECTION_EXCEEDS_GRANT", f"only {left} points of this grant are left to correct",
                                 metadata={"left": str(left)})
    release_expired_holds(conn, now_ms, account)
    correction_id = debit_resident(conn, account, issuance, take, "correction", transfer_id, now_ms)
    return pb.CorrectGrantResponse(transfer_id=correction_id, amount=take, balance=balance_of(conn, account))


def convert(conn: sqlite3.Connection, now_ms: int, partner_id: str, member_account: str,
            partner_points: int) -> pb.ConvertPartnerPointsResponse:
    if not member_account:
        raise InvalidArgument.field("member_account", "required")
    check_amount(partner_points, "partner_points")
    rate = conn.execute("SELECT rate_milli FROM points_partner_rates WHERE partner_id=?", (partner_id,)).fetchone()
    if rate is None:
        raise FailedPrecondition("PARTNER_NOT_CONFIGURED", "this partner has no conversion rate")
    bound = conn.execute(
        "SELECT mykey_id FROM points_bound_accounts WHERE kind='partner' AND provider=? AND account_ref=?",
        (partner_id, member_account),
    ).fetchone()
    if bound is None:
        raise NotFound("ACCOUNT_NOT_BOUND", "this member account is not bound to a MyKey ID")
    municipal = partner_points * rate[0] // 1000  # rounded down to a whole municipal point
    if municipal <= 0:
        raise InvalidArgument.field("partner_points", "converts to zero municipal points at this partner's rate",
                                    reason="CONVERTS_TO_ZERO")
    conversion_id = new_id("cnv")
    held_until = now_ms + HOLDING_DAYS * 86_400_000
    post(conn, account_id(conn, "partner", partner_id), account_id(conn, "holding", bound[0]), municipal,
         "convert", conversion_id, now_ms)
    conn.execute(
        "INSERT INTO points_conversions (conversion_id, mykey_id, partner_id, partner_points, municipal_points,"
        " held_until_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (conversion_id, bound[0], partner_id, partner_points, municipal, held_until),
    )
    return pb.ConvertPartnerPointsResponse(conversion_id=conversion_id, municipal_points=municipal,
                                           held_until=ts_ms(held_until))


def _place(conn: sqlite3.Connection, now_ms: int, conversion: sqlite3.Row, municipality: str) -> tuple[str, int]:
    holding = account_id(conn, "holding", conversion["mykey_id"])
    target = account_id(conn, "resident", conversion["mykey_id"], municipality)
    transfer_id = credit_resident(conn, holding, target, conversion["municipal_points"], "place",
                                  conversion["conversion_id"], municipality, now_ms)
    changed = conn.execute(
        "UPDATE points_conversions SET placed_at_ms=?, placed_municipality=? WHERE conversion_id=? AND placed_at_ms IS NULL",
        (now_ms, municipality, conversion["conversion_id"]),
    ).rowcount
    if changed != 1:
        raise RuntimeError("conversion placed twice")
    return transfer_id, balance_of(conn, target)


def choose_municipality(conn: sqlite3.Connection, now_ms: int, resident_id: str, conversion_id: str,
                        municipality: str) -> pb.ChooseMunicipalityResponse:
    if not conversion_id:
        raise InvalidArgument.field("conversion_id", "required")
    check_lgcode(municipality)
    mykey_id = mykey_of_resident(conn, resident_id)
    conversion = conn.execute(
        "SELECT * FROM points_conversions WHERE conversion_id=? AND mykey_id=?", (conversion_id, mykey_id)
    ).fetchone()
    if conversion is None:
        raise NotFound("CONVERSION_NOT_FOUND", "no such conversion of yours")
    if conversion["placed_at_ms"] is not None:
        raise FailedPrecondition("ALREADY_PLACED", "these points are already in a municipality")
    if now_ms >= conversion["held_until_ms"]:
        raise FailedPrecondition("HOLDING_PERIOD_OVER", "the 14 days are over; they go to your municipality")
    if conn.execute("SELECT 1 FROM municipalities WHERE code=?", (municipality,)).fetchone() is None:
        raise NotFound("UNKNOWN_MUNICIPALITY", "no such municipality")
    transfer_id, balance = _place(conn, now_ms, conversion, municipality)
    return pb.ChooseMunicipalityResponse(transfer_id=transfer_id, balance=balance)


# --- redemption (two phases) ------------------------------------------------------------------

def release_expired_holds(conn: sqlite3.Connection, now_ms: int, account: int | None = None) -> int:
    sql = "SELECT hold_id, account_id, amount FROM points_holds WHERE state='pending' AND expires_at_ms <= ?"
    params: tuple = (now_ms,)
    if account is not None:
        sql += " AND account_id=?"
        params = (now_ms, account)
    rows = conn.execute(sql, params).fetchall()
    for hold_id, acct, amount in rows:
        conn.execute("UPDATE points_holds SET state='expired', resolved_at_ms=? WHERE hold_id=?", (now_ms, hold_id))
        conn.execute("UPDATE points_accounts SET pending = pending - ? WHERE account_id=?", (amount, acct))
    return len(rows)


def authorize(conn: sqlite3.Connection, now_ms: int, merchant_id: str, merchant_lg: str | None, mykey_id: str,
              municipality: str, event_id: str, amount: int) -> pb.AuthorizeRedemptionResponse:
    check_lgcode(municipality)
    check_amount(amount)
    if event_id:
        if event_row(conn, event_id)["municipality_code"] != municipality:
            raise NotFound("EVENT_NOT_FOUND", "no such support event in this municipality")
        if conn.execute("SELECT 1 FROM points_event_merchants WHERE event_id=? AND merchant_id=?",
                        (event_id, merchant_id)).fetchone() is None:
            raise FailedPrecondition("EVENT_ONLY_MERCHANT", "this event's points are spent only at its merchants")
    elif merchant_lg != municipality:
        raise FailedPrecondition("MERCHANT_NOT_IN_MUNICIPALITY", "these points are spent in their municipality only")
    row = find_account(conn, "resident", mykey_id, municipality, event_id)
    if row is None:
        raise FailedPrecondition("INSUFFICIENT_FUNDS", "not enough points available", metadata={"available": "0"})
    account = row[0]
    release_expired_holds(conn, now_ms, account)
    balance, pending = conn.execute("SELECT balance, pending FROM points_accounts WHERE account_id=?",
                                    (account,)).fetchone()
    if balance - pending < amount:
        raise FailedPrecondition("INSUFFICIENT_FUNDS", "not enough points available",
                                 metadata={"available": str(balance - pending)})
    hold_id = new_id("hld")
    expires = now_ms + HOLD_TTL_MS
    conn.execute(
        "INSERT INTO points_holds (hold_id, account_id, merchant_id, amount, state, created_at_ms, expires_at_ms)"
        " VALUES (?, ?, ?, ?, 'pending', ?, ?)", (hold_id, account, merchant_id, amount, now_ms, expires),
    )
    conn.execute("UPDATE points_accounts SET pending = pending + ? WHERE account_id=?", (amount, account))
    return pb.AuthorizeRedemptionResponse(hold_id=hold_id, expires_at=ts_ms(expires),
                                          available=balance - pending - amount)


def _pending_hold(conn: sqlite3.Connection, now_ms: int, merchant_id: str, hold_id: str) -> tuple:
    if not hold_id:
        raise InvalidArgument.field("hold_id", "required")
    row = conn.execute(
        "SELECT account_id, amount, state, expires_at_ms FROM points_holds WHERE hold_id=? AND merchant_id=?",
        (hold_id, merchant_id),
    ).fetchone()
    if row is None:
        raise NotFound("HOLD_NOT_FOUND", "no such hold of this merchant")
    account, amount, state, expires = row
    if state == "captured":
        raise FailedPrecondition("ALREADY_CAPTURED", "this hold has been captured")
    if state == "voided":
        raise FailedPrecondition("ALREADY_VOIDED", "this hold has been voided")
    if state == "expired" or now_ms >= expires:
        raise FailedPrecondition("HOLD_EXPIRED", "this authorisation has expired; authorise again")
    return account, amount


def _resolve(conn: sqlite3.Connection, hold_id: str, state: str, account: int, amount: int, now_ms: int) -> None:
    changed = conn.execute("UPDATE points_holds SET state=?, resolved_at_ms=? WHERE hold_id=? AND state='pending'",
                           (state, now_ms, hold_id)).rowcount
    if changed != 1:
        raise RuntimeError("hold resolved twice")
    conn.execute("UPDATE points_accounts SET pending = pending - ? WHERE account_id=?", (amount, account))


def capture(conn: sqlite3.Connection, now_ms: int, merchant_id: str, hold_id: str) -> pb.CaptureRedemptionResponse:
    account, amount = _pending_hold(conn, now_ms, merchant_id, hold_id)
    _resolve(conn, hold_id, "captured", account, amount, now_ms)
    municipality = conn.execute("SELECT municipality_code FROM points_accounts WHERE account_id=?",
                                (account,)).fetchone()[0]
    payable = account_id(conn, "merchant", merchant_id, municipality)
    transfer_id = debit_resident(conn, account, payable, amount, "capture", hold_id, now_ms)
    return pb.CaptureRedemptionResponse(transfer_id=transfer_id, amount=amount)


def void(conn: sqlite3.Connection, now_ms: int, merchant_id: str, hold_id: str) -> pb.VoidRedemptionResponse:
    account, amount = _pending_hold(conn, now_ms, merchant_id, hold_id)
    _resolve(conn, hold_id, "voided", account, amount, now_ms)
    return pb.VoidRedemptionResponse(hold_id=hold_id)


# --- donation, expiry, sweeps -----------------------------------------------------------------

def donate(conn: sqlite3.Connection, now_ms: int, resident_id: str, municipality: str, event_id: str,
           amount: int) -> pb.DonateToEventResponse:
    check_lgcode(municipality)
    if not event_id:
        raise InvalidArgument.field("event_id", "required")
    check_amount(amount)
    mykey_id = mykey_of_resident(conn, resident_id)
    event_row(conn, event_id)
    row = find_account(conn, "resident", mykey_id, municipality)
    if row is None:
        raise FailedPrecondition("INSUFFICIENT_FUNDS", "not enough points available", metadata={"available": "0"})
    release_expired_holds(conn, now_ms, row[0])
    fund = account_id(conn, "event_fund", event_id, municipality)
    transfer_id = debit_resident(conn, row[0], fund, amount, "donate", event_id, now_ms)
    return pb.DonateToEventResponse(transfer_id=transfer_id, balance=balance_of(conn, row[0]))


def expire(conn: sqlite3.Connection, now_ms: int, municipality: str) -> pb.ExpirePointsResponse:
    """Expire lots past their date, oldest first; points under a pending hold wait for the hold."""
    check_lgcode(municipality)
    release_expired_holds(conn, now_ms)
    # Start from the lots past their date (the expiry index), not from every account or open lot of
    # the municipality: the timer runs this every minute on the loop's thread, so it must cost what is
    # due, not what exists (the planner preferred the account-ordered index for the GROUP BY).
    due = conn.execute(
        "SELECT l.account_id, SUM(l.remaining) FROM points_lots l INDEXED BY points_lots_expiry"
        " CROSS JOIN points_accounts a ON a.account_id = l.account_id"
        " WHERE l.remaining > 0 AND l.expires_at_ms <= ? AND a.kind='resident' AND a.municipality_code=?"
        " GROUP BY l.account_id ORDER BY l.account_id", (now_ms, municipality),
    ).fetchall()
    expired_account = account_id(conn, "expired", "", municipality)
    total = accounts = 0
    for account, amount in due:
        balance, pending = conn.execute("SELECT balance, pending FROM points_accounts WHERE account_id=?",
                                        (account,)).fetchone()
        take = min(amount, balance - pending)
        if take > 0:
            debit_resident(conn, account, expired_account, take, "expire", "", now_ms)
            total += take
            accounts += 1
    return pb.ExpirePointsResponse(expired_points=total, accounts=accounts)


def sweep(conn: sqlite3.Connection, now_ms: int) -> pb.SweepHoldingsResponse:
    """Place conversions held 14 days in the residence municipality; release expired holds."""
    due = conn.execute(
        "SELECT c.*, r.municipality_code AS residence FROM points_conversions c"
        " JOIN mykeys k USING (mykey_id) LEFT JOIN residents r ON r.resident_id = k.resident_id"
        " WHERE c.placed_at_ms IS NULL AND c.held_until_ms <= ? ORDER BY c.held_until_ms", (now_ms,),
    ).fetchall()
    placed = 0
    for conversion in due:
        if conversion["residence"]:
            _place(conn, now_ms, conversion, conversion["residence"])
            placed += 1
    released = release_expired_holds(conn, now_ms)
    return pb.SweepHoldingsResponse(conversions_placed=placed, holds_released=released)


def new_mykey_id() -> str:
    """8 random characters of capital letters and digits (no 0/O, 1/I): about 40 bits."""
    return "".join(secrets.choice(MYKEY_ALPHABET) for _ in range(8))


MYKEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
