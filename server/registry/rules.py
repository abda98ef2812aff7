"""The registry's rules: who may write what, and what a change does. Plain Python over a `Tx`.

Every function here runs inside the caller's transaction (the adapter wraps writes in
`run_once`), so a refusal raised half-way leaves nothing written.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime

from server import authz
from server.authz import Machine, Principal, Resident
from server.clock import JST, to_epoch_ms
from server.crypto.jpki import CardHolder, CertificateRejected, CardTrust
from server.db import Tx
from server.errors import (AlreadyExists, Conflict, FailedPrecondition, FieldViolation, InvalidArgument, NotFound,
                           PermissionDenied)
from server.ids import new_id
from server.registry import store
from server.registry.records import (ResidentFields, check_code, check_date, check_id, check_registration_number,
                                     check_resident, check_sex, check_text, holder_mismatches)

log = logging.getLogger("onestop.registry")

INACTIVE = ("moved_out", "deceased")


def today(now: datetime) -> date:
    return now.astimezone(JST).date()


def invalid(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument.fields(violations)


# --- reading and scope -------------------------------------------------------------------------


async def resident_or_404(tx: Tx, resident_id: str) -> sqlite3.Row:
    invalid(check_id("resident_id", resident_id, required=True))
    row = await store.resident(tx, resident_id)
    if row is None:
        raise NotFound("RESIDENT_NOT_FOUND", "no such resident")
    return row


async def own_resident(tx: Tx, principal: Principal, resident_id: str) -> sqlite3.Row:
    """A resident the calling municipal system may write (its own municipality's)."""
    if not isinstance(principal, Machine) or principal.role != "municipality":
        raise PermissionDenied("MUNICIPALITY_ONLY", "only a municipal system may do this")
    row = await resident_or_404(tx, resident_id)
    authz.require_municipality(principal, row["municipality_code"])
    return row


async def readable_resident(tx: Tx, principal: Principal, resident_id: str) -> sqlite3.Row:
    """A resident record the caller may read: the resident themself, or their municipality."""
    if isinstance(principal, Resident):
        resident_id = resident_id or principal.resident_id
        if resident_id != principal.resident_id:
            raise PermissionDenied("NOT_OWN_RECORD", "a resident may read only their own record")
        return await resident_or_404(tx, resident_id)
    return await own_resident(tx, principal, resident_id)


async def require_municipality_exists(tx: Tx, code: str, field: str) -> None:
    if await store.municipality(tx, code) is None:
        raise NotFound("MUNICIPALITY_NOT_FOUND", f"{field}: no municipality with this code",
                       [FieldViolation(field, "unknown municipality")])


# --- residents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    resident_id: str
    created: bool


class Households:
    """What is known of households during one unit of work: id -> (municipality, head), or None."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[str, str | None] | None] = {}

    async def get(self, tx: Tx, household_id: str) -> tuple[str, str | None] | None:
        if household_id not in self.known:
            row = await store.household(tx, household_id)
            self.known[household_id] = None if row is None else (row["municipality_code"], row["head_resident_id"])
        return self.known[household_id]

    async def prefetch(self, tx: Tx, household_ids: list[str]) -> None:
        wanted = sorted({h for h in household_ids if h and h not in self.known})
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            found = {r["household_id"]: (r["municipality_code"], r["head_resident_id"])
                     for r in await store.households(tx, chunk)}
            for household_id in chunk:
                self.known[household_id] = found.get(household_id)


async def _household_problems(tx: Tx, fields: ResidentFields, prefix: str,
                              households: Households) -> list[FieldViolation]:
    if not fields.household_id:
        return []
    known = await households.get(tx, fields.household_id)
    if known is not None and known[0] != fields.municipality_code:
        return [FieldViolation(f"{prefix}household_id", "a household of another municipality")]
    return []


async def write_resident(tx: Tx, fields: ResidentFields, now: datetime, *, expected_version: int | None,
                         existing: sqlite3.Row | dict | None, households: Households | None = None) -> Written:
    """Create or update one resident (fields already checked); the household follows."""
    households = households or Households()
    now_ms = to_epoch_ms(now)
    household = fields.household_id
    if household and await households.get(tx, household) is None:
        await store.insert_household(tx, household, fields.municipality_code)
        households.known[household] = (fields.municipality_code, None)
    values = {
        "household_id": household or None,
        "name": fields.name.strip(),
        "name_kana": fields.name_kana.strip(),
        "birth_date": fields.birth_date,
        "sex": fields.sex,
        "address": fields.address.strip(),
        "relationship": fields.relationship.strip(),
        "honseki_code": fields.honseki_code or None,
        "moved_in_on": fields.moved_in_on or None,
        "updated_at_ms": now_ms,
    }
    if existing is not None:  # an update leaves what it does not mention (本籍地 from the 戸籍, 転入 date)
        for column in ("honseki_code", "moved_in_on"):
            if values[column] is None:
                del values[column]
    if existing is None:
        resident_id = fields.resident_id or new_id("res")
        await store.insert_resident(tx, {"resident_id": resident_id, "municipality_code": fields.municipality_code,
                                         **values})
        created = True
    else:
        resident_id = existing["resident_id"]
        if not await store.update_resident(tx, resident_id, values, expected_version=expected_version):
            raise Conflict("VERSION_CONFLICT", "the resident changed since it was read; re-read and retry",
                           metadata={"version": str(existing["version"])})
        created = False
        # the resident stops heading any other household (a new resident heads nothing yet)
        await store.clear_head_elsewhere(tx, resident_id, household or None)
        for other, state in households.known.items():
            if state is not None and other != household and state[1] == resident_id:
                households.known[other] = (state[0], None)
    if household:
        lgcode, head = households.known[household]  # type: ignore[misc]
        if fields.household_head and head != resident_id:
            await store.set_household_head(tx, household, resident_id)
            households.known[household] = (lgcode, resident_id)
        elif not fields.household_head and head == resident_id:
            await store.set_household_head(tx, household, None)
            households.known[household] = (lgcode, None)
    return Written(resident_id, created)


async def upsert_resident(tx: Tx, principal: Principal, fields: ResidentFields, expected_version: int,
                          now: datetime) -> Written:
    violations = check_resident(fields, prefix="resident.", today=today(now))
    if expected_version < 0:
        violations.append(FieldViolation("expected_version", "must not be negative"))
    if expected_version > 0 and not fields.resident_id:
        violations.append(FieldViolation("resident.resident_id", "required to update (expected_version > 0)"))
    invalid(violations)
    authz.require_municipality(principal, fields.municipality_code)
    existing = await store.resident(tx, fields.resident_id) if fields.resident_id else None
    if existing is not None:
        authz.require_municipality(principal, existing["municipality_code"])
        if expected_version == 0:
            raise AlreadyExists("RESIDENT_EXISTS", "a resident with this id exists; update with its version")
    elif expected_version > 0:
        raise NotFound("RESIDENT_NOT_FOUND", "no such resident")
    await require_municipality_exists(tx, fields.municipality_code, "resident.municipality_code")
    if fields.honseki_code:
        await require_municipality_exists(tx, fields.honseki_code, "resident.honseki_code")
    if problems := await _household_problems(tx, fields, "resident.", Households()):
        raise FailedPrecondition("HOUSEHOLD_OF_OTHER_MUNICIPALITY", "the household belongs to another municipality",
                                 problems)
    written = await write_resident(tx, fields, now, expected_version=expected_version or None, existing=existing)
    log.info("resident written", extra={"resident_id": written.resident_id, "new_record": written.created})
    return written


# --- moves and bars ------------------------------------------------------------------------------

MOVE_IN, PLANNED_MOVE_OUT, MOVE_OUT, CANCEL_PLANNED_MOVE_OUT = "move_in", "planned_move_out", "move_out", "cancel"


async def record_move(tx: Tx, principal: Principal, resident_id: str, kind: str, on: str, destination: str,
                      expected_version: int, now: datetime) -> None:
    violations = []
    if kind not in (MOVE_IN, PLANNED_MOVE_OUT, MOVE_OUT, CANCEL_PLANNED_MOVE_OUT):
        violations.append(FieldViolation("kind", "required: MOVE_IN, PLANNED_MOVE_OUT, MOVE_OUT or CANCEL_..."))
    if kind != CANCEL_PLANNED_MOVE_OUT:
        violations += check_date("date", on, required=True)
    violations += check_text("destination", destination, required=kind in (PLANNED_MOVE_OUT, MOVE_OUT), limit=200)
    invalid(violations)
    row = await own_resident(tx, principal, resident_id)
    if row["status"] == "deceased":
        raise FailedPrecondition("RESIDENT_DECEASED", "the resident is recorded as deceased")
    if row["status"] == "moved_out":
        raise FailedPrecondition("RESIDENT_MOVED_OUT", "the resident has moved out; a return is a new move-in record")
    values: dict[str, object]
    if kind == MOVE_IN:
        values = {"status": "active", "moved_in_on": on, "moving_out_on": None, "moved_out_to": None}
        if destination:
            values["address"] = destination.strip()
    elif kind == PLANNED_MOVE_OUT:
        values = {"status": "moving_out", "moving_out_on": on, "moved_out_to": destination.strip()}
    elif kind == MOVE_OUT:
        values = {"status": "moved_out", "moved_out_on": on, "moved_out_to": destination.strip()}
    else:
        if row["status"] != "moving_out":
            raise FailedPrecondition("NO_PLANNED_MOVE_OUT", "no planned move-out to cancel")
        values = {"status": "active", "moving_out_on": None, "moved_out_to": None}
    values["updated_at_ms"] = to_epoch_ms(now)
    if not await store.update_resident(tx, resident_id, values, expected_version=expected_version or None):
        raise Conflict("VERSION_CONFLICT", "the resident changed since it was read; re-read and retry",
                       metadata={"version": str(row["version"])})
    if kind == MOVE_OUT:
        await _abolish_live_seal(tx, resident_id, now)  # 転出 ends the seal registration by law
    log.info("move recorded", extra={"resident_id": resident_id, "move": kind})


async def _abolish_live_seal(tx: Tx, resident_id: str, now: datetime) -> None:
    live = await store.live_seal(tx, resident_id)
    if live is not None:
        await store.abolish_seal(tx, live["registration_id"], to_epoch_ms(now))
        log.info("seal abolished", extra={"resident_id": resident_id, "registration_id": live["registration_id"]})


async def set_issuance_bars(tx: Tx, principal: Principal, resident_id: str, dv_protection: bool | None,
                            deceased_on: str, now: datetime) -> None:
    violations = check_date("deceased_on", deceased_on, required=False, today=today(now), not_future=True)
    if dv_protection is None and not deceased_on:
        violations.append(FieldViolation("dv_protection", "nothing to change: give dv_protection or deceased_on"))
    invalid(violations)
    row = await own_resident(tx, principal, resident_id)
    values: dict[str, object] = {"updated_at_ms": to_epoch_ms(now)}
    if dv_protection is not None:
        values["dv_protection"] = int(dv_protection)
    if deceased_on:
        if row["status"] == "deceased" and row["deceased_on"] != deceased_on:
            raise FailedPrecondition("RESIDENT_DECEASED", "already recorded as deceased on another date")
        values.update(status="deceased", deceased_on=deceased_on)
    await store.update_resident(tx, resident_id, values)
    if deceased_on:
        await _abolish_live_seal(tx, resident_id, now)  # death ends the seal registration
    log.info("issuance bars set", extra={"resident_id": resident_id, "dv": dv_protection,
                                         "deceased": bool(deceased_on)})


# --- card links ----------------------------------------------------------------------------------

_CERT_FIELD = {"auth": "auth_certificate", "sign": "sign_certificate"}


def _verify(trust: CardTrust, der: bytes, usage: str, now: datetime):
    try:
        return trust.verify(der, usage=usage, now=now)  # type: ignore[arg-type]
    except CertificateRejected as rejected:
        field = _CERT_FIELD[usage]
        if rejected.reason == "MALFORMED_CERTIFICATE":
            raise InvalidArgument.field(field, "not a well-formed card certificate",
                                        reason="MALFORMED_CERTIFICATE") from None
        raise FailedPrecondition(rejected.reason, f"{field} refused: {rejected.reason}",
                                 [FieldViolation(field, rejected.reason)]) from None


def _serial_forms(serial: int) -> list[str]:
    """Both spellings found in card_links (even-length hex, and unpadded hex)."""
    padded = format(serial, "x")
    even = padded if len(padded) % 2 == 0 else "0" + padded
    return sorted({even, padded})


@dataclass(frozen=True)
class Linked:
    link_id: str
    ended_link_id: str


async def link_card(tx: Tx, principal: Principal, trust: CardTrust, resident_id: str, auth_der: bytes,
                    sign_der: bytes, now: datetime) -> Linked:
    violations = [*check_id("resident_id", resident_id, required=True)]
    violations += [FieldViolation(f, "required (DER)") for f, v in
                   (("auth_certificate", auth_der), ("sign_certificate", sign_der)) if not v]
    invalid(violations)
    row = await own_resident(tx, principal, resident_id)
    if row["status"] in INACTIVE:
        raise FailedPrecondition("RESIDENT_NOT_ACTIVE", f"the resident is {row['status']}")
    auth = _verify(trust, auth_der, "auth", now)
    sign = _verify(trust, sign_der, "sign", now)
    if sign.holder is None:
        raise FailedPrecondition("NO_HOLDER_DATA", "the signature certificate carries no holder data",
                                 [FieldViolation("sign_certificate", "no holder data")])
    record = CardHolder(name=row["name"], sex=row["sex"], birth_date=date.fromisoformat(row["birth_date"]),
                        address=row["address"])
    differ = holder_mismatches(record, sign.holder)
    if differ:
        log.info("card holder mismatch", extra={"resident_id": resident_id, "fields": ",".join(differ)})
        raise FailedPrecondition(
            "CARD_HOLDER_MISMATCH",
            f"the card's holder differs from the record on: {', '.join(differ)}",
            [FieldViolation(f"sign_certificate.{f}", "does not match the resident record") for f in differ],
            {"fields": ",".join(differ)},
        )
    auth_serial, sign_serial = auth.serial_hex, sign.serial_hex
    holders = await store.active_links_of_card(tx, auth.issuer, _serial_forms(auth.serial), sign.issuer,
                                               _serial_forms(sign.serial))
    now_ms = to_epoch_ms(now)
    others = [h for h in holders if h["resident_id"] != resident_id]
    for other in others:
        # A card follows its holder after a move: the link of a moved-out record (kept by the old
        # municipality) ends when the new municipality links the card. Anyone else's link stands.
        previous = await store.resident(tx, other["resident_id"])
        if previous is None or previous["status"] != "moved_out":
            raise AlreadyExists("CARD_ALREADY_LINKED", "this card is linked to another resident")
    for other in others:
        await store.end_link(tx, other["link_id"], now_ms)
    same = [h for h in holders if h["resident_id"] == resident_id and h["auth_serial"] in _serial_forms(auth.serial)
            and h["sign_serial"] in _serial_forms(sign.serial)]
    if same:  # already linked to this resident: nothing to do
        return Linked(same[0]["link_id"], "")
    ended = await store.end_links(tx, resident_id, now_ms)
    link_id = new_id("lnk")
    await store.insert_link(tx, {
        "link_id": link_id, "resident_id": resident_id, "auth_issuer": auth.issuer, "auth_serial": auth_serial,
        "sign_issuer": sign.issuer, "sign_serial": sign_serial, "linked_at_ms": now_ms,
    })
    log.info("card linked", extra={"resident_id": resident_id, "link_id": link_id, "ended": len(ended)})
    return Linked(link_id, ended[0] if ended else "")


async def unlink_card(tx: Tx, principal: Principal, resident_id: str, link_id: str, now: datetime) -> str:
    invalid(check_id("link_id", link_id, required=False))
    await own_resident(tx, principal, resident_id)
    row = await store.link(tx, link_id) if link_id else await store.active_link(tx, resident_id)
    if row is None or row["resident_id"] != resident_id or row["unlinked_at_ms"] is not None:
        raise NotFound("LINK_NOT_FOUND", "no active card link of this resident")
    await store.end_link(tx, row["link_id"], to_epoch_ms(now))
    log.info("card unlinked", extra={"resident_id": resident_id, "link_id": row["link_id"]})
    return row["link_id"]


# --- seal registrations ----------------------------------------------------------------------------


async def register_seal(tx: Tx, principal: Principal, resident_id: str, number: str, registered_on: str,
                        now: datetime) -> str:
    invalid([*check_id("resident_id", resident_id, required=True),
             *check_registration_number("registration_number", number),
             *check_date("registered_on", registered_on, required=True, today=today(now), not_future=True)])
    row = await own_resident(tx, principal, resident_id)
    if row["status"] in INACTIVE:
        raise FailedPrecondition("RESIDENT_NOT_ACTIVE", f"the resident is {row['status']}")
    if await store.live_seal(tx, resident_id) is not None:
        raise AlreadyExists("SEAL_ALREADY_REGISTERED", "the resident has a seal registration in force")
    registration_id = new_id("seal")
    await store.insert_seal(tx, {"registration_id": registration_id, "resident_id": resident_id,
                                 "registration_number": number, "registered_on": registered_on,
                                 "updated_at_ms": to_epoch_ms(now)})
    log.info("seal registered", extra={"resident_id": resident_id, "registration_id": registration_id})
    return registration_id


async def abolish_seal(tx: Tx, principal: Principal, resident_id: str, now: datetime) -> str:
    await own_resident(tx, principal, resident_id)
    live = await store.live_seal(tx, resident_id)
    if live is None:
        raise NotFound("SEAL_NOT_REGISTERED", "the resident has no seal registration in force")
    await store.abolish_seal(tx, live["registration_id"], to_epoch_ms(now))
    log.info("seal abolished", extra={"resident_id": resident_id, "registration_id": live["registration_id"]})
    return live["registration_id"]


# --- tax records -----------------------------------------------------------------------------------

MAX_YEN = 10**13


@dataclass(frozen=True)
class TaxFields:
    resident_id: str
    fiscal_year: int
    total_income: int
    taxable_income: int
    municipal_tax: int
    prefectural_tax: int
    dependents: int


async def put_tax_record(tx: Tx, principal: Principal, record: TaxFields, now: datetime) -> None:
    p = "record."
    violations = [*check_id(f"{p}resident_id", record.resident_id, required=True)]
    if not 1989 <= record.fiscal_year <= today(now).year + 1:
        violations.append(FieldViolation(f"{p}fiscal_year", f"between 1989 and {today(now).year + 1}"))
    for name in ("total_income", "taxable_income", "municipal_tax", "prefectural_tax"):
        if not 0 <= getattr(record, name) <= MAX_YEN:
            violations.append(FieldViolation(f"{p}{name}", "yen, not negative"))
    if record.taxable_income > record.total_income:
        violations.append(FieldViolation(f"{p}taxable_income", "cannot exceed total_income"))
    if not 0 <= record.dependents <= 99:
        violations.append(FieldViolation(f"{p}dependents", "between 0 and 99"))
    invalid(violations)
    await own_resident(tx, principal, record.resident_id)
    await store.put_tax_record(tx, {**record.__dict__, "updated_at_ms": to_epoch_ms(now)})
    log.info("tax record put", extra={"resident_id": record.resident_id, "fiscal_year": record.fiscal_year})


# --- family registers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFields:
    member_no: int
    resident_id: str
    name: str
    birth_date: str
    sex: str
    relationship: str
    removed: bool


@dataclass(frozen=True)
class RegisterFields:
    register_id: str
    honseki_code: str
    honseki_address: str
    head_name: str
    pending_notification: bool
    members: list[MemberFields]


async def put_family_register(tx: Tx, principal: Principal, reg: RegisterFields, now: datetime) -> str:
    p = "register."
    violations = [
        *check_id(f"{p}register_id", reg.register_id, required=False),
        *check_code(f"{p}honseki_code", reg.honseki_code, required=True),
        *check_text(f"{p}honseki_address", reg.honseki_address, required=True, limit=200),
        *check_text(f"{p}head_name", reg.head_name, required=True, limit=100),
    ]
    seen: set[int] = set()
    for i, m in enumerate(reg.members):
        q = f"{p}members[{i}]."
        if m.member_no < 1 or m.member_no in seen:
            violations.append(FieldViolation(f"{q}member_no", "1 or more, unique in the register"))
        seen.add(m.member_no)
        violations += check_id(f"{q}resident_id", m.resident_id, required=False)
        violations += check_text(f"{q}name", m.name, required=True, limit=100)
        violations += check_date(f"{q}birth_date", m.birth_date, required=True, today=today(now), not_future=True)
        violations += check_sex(f"{q}sex", m.sex)
        violations += check_text(f"{q}relationship", m.relationship, required=False, limit=50)
    invalid(violations)
    authz.require_municipality(principal, reg.honseki_code)
    await require_municipality_exists(tx, reg.honseki_code, f"{p}honseki_code")
    register_id = reg.register_id
    if register_id:
        existing = await store.family_register(tx, register_id)
        if existing is not None:  # an unknown id creates the register under the caller's chosen id
            authz.require_municipality(principal, existing["honseki_code"])
    else:
        register_id = new_id("fr")
    for i, m in enumerate(reg.members):
        if m.resident_id and await store.resident(tx, m.resident_id) is None:
            raise NotFound("RESIDENT_NOT_FOUND", "a member's resident_id is unknown",
                           [FieldViolation(f"{p}members[{i}].resident_id", "unknown resident")])
    now_ms = to_epoch_ms(now)
    await store.put_family_register(
        tx,
        {"register_id": register_id, "honseki_code": reg.honseki_code, "honseki_address": reg.honseki_address.strip(),
         "head_name": reg.head_name.strip(), "pending_notification": int(reg.pending_notification),
         "updated_at_ms": now_ms},
        [{"member_no": m.member_no, "resident_id": m.resident_id or None, "name": m.name.strip(),
          "birth_date": m.birth_date, "sex": m.sex, "relationship": m.relationship.strip(),
          "removed": int(m.removed)} for m in reg.members],
    )
    current = {m.resident_id for m in reg.members if m.resident_id and not m.removed}
    for resident_id in await store.residents_of_register(tx, register_id):
        if resident_id not in current:
            await store.update_resident(tx, resident_id, {"family_register_id": None, "updated_at_ms": now_ms})
    for resident_id in sorted(current):
        await store.update_resident(tx, resident_id, {"family_register_id": register_id,
                                                      "honseki_code": reg.honseki_code, "updated_at_ms": now_ms})
    log.info("family register put", extra={"register_id": register_id, "members": len(reg.members)})
    return register_id


async def readable_register(tx: Tx, principal: Principal, register_id: str) -> sqlite3.Row:
    invalid(check_id("register_id", register_id, required=True))
    row = await store.family_register(tx, register_id)
    if row is None:
        raise NotFound("REGISTER_NOT_FOUND", "no family register with this id")
    authz.require_municipality(principal, row["honseki_code"])
    return row


# --- bulk import -----------------------------------------------------------------------------------

MAX_IMPORT_ROWS = 5_000  # keeps the reply (rejections of every row at worst) well under 4 MiB


@dataclass
class ImportOutcome:
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, list[FieldViolation]]] | None = None
    written: list[tuple[int, str]] | None = None


async def import_rows(tx: Tx, lgcode: str, rows: list[tuple[int, ResidentFields]], now: datetime) -> ImportOutcome:
    """Write every valid row, each under its own savepoint; report the others. Scope checked by the caller.

    Households and existing residents are read in bulk first, so a row costs a few statements.
    """
    await require_municipality_exists(tx, lgcode, "municipality_code")
    outcome = ImportOutcome(rejected=[], written=[])
    households = Households()
    await households.prefetch(tx, [f.household_id for _, f in rows])
    residents: dict[str, dict] = {}
    ids = sorted({f.resident_id for _, f in rows if f.resident_id})
    for start in range(0, len(ids), 500):
        for r in await store.residents_by_id(tx, ids[start:start + 500]):
            residents[r["resident_id"]] = dict(r)
    codes = sorted({f.honseki_code for _, f in rows if f.honseki_code})
    known_codes = set(await store.existing_codes(tx, codes)) if codes else set()
    today_ = today(now)
    for row_number, fields in rows:
        violations = check_resident(fields, prefix="", today=today_)
        if fields.honseki_code and not violations and fields.honseki_code not in known_codes:
            violations.append(FieldViolation("honseki_code", "unknown municipality"))
        existing = None
        if not violations:
            violations += await _household_problems(tx, fields, "", households)
            existing = residents.get(fields.resident_id) if fields.resident_id else None
            if existing is not None and existing["municipality_code"] != lgcode:
                violations.append(FieldViolation("resident_id", "a resident of another municipality"))
        if violations:
            outcome.rejected.append((row_number, violations))
            continue
        # A new resident joining no household or an existing one without heading it is one INSERT,
        # atomic by itself; anything more runs under a savepoint so a failure takes all of the row.
        single = existing is None and not fields.household_head and (
            not fields.household_id or households.known.get(fields.household_id) is not None)
        before = dict(households.known)
        if not single:
            await store.savepoint(tx, "import_row")
        try:
            written = await write_resident(tx, fields, now, expected_version=None, existing=existing,
                                           households=households)
        except sqlite3.IntegrityError:
            if not single:
                await store.rollback_to(tx, "import_row")
            households.known = before
            outcome.rejected.append((row_number, [FieldViolation("row", "conflicts with stored records")]))
            continue
        if not single:
            await store.release(tx, "import_row")
        residents[written.resident_id] = {"resident_id": written.resident_id, "municipality_code": lgcode,
                                          "version": (existing or {"version": 0})["version"] + 1}
        outcome.written.append((row_number, written.resident_id))
        if written.created:
            outcome.created += 1
        else:
            outcome.updated += 1
    log.info("residents imported", extra={"municipality": lgcode, "rows_created": outcome.created,
                                          "rows_updated": outcome.updated, "rows_rejected": len(outcome.rejected)})
    return outcome
