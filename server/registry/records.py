"""Field rules of the registry's records, testable without a network or a database.

Each `check_*` returns a list of FieldViolation (empty when the value is fine), so one request or one
import row reports every fault at once with the field named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from server.crypto.jpki import CardHolder
from server.errors import FieldViolation
from server.registry.municipalities import code_problem

SEX_CODES = ("1", "2", "3")  # JPKI: 1 male, 2 female, 3 other
STATUSES = ("active", "moving_out", "moved_out", "deceased")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REG_NO = re.compile(r"^[A-Za-z0-9-]{1,32}$")
_SPACES = re.compile(r"\s+")  # \s covers the full-width space U+3000 too

MAX_NAME = 100
MAX_ADDRESS = 200
MAX_SHORT = 50


def normalise(text: str) -> str:
    """Whitespace runs (ASCII or full-width) become one ASCII space; ends trimmed."""
    return _SPACES.sub(" ", text).strip()


def parse_date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def check_date(name: str, text: str, *, required: bool, today: date | None = None,
               not_future: bool = False) -> list[FieldViolation]:
    if not text:
        return [FieldViolation(name, "required (YYYY-MM-DD)")] if required else []
    value = parse_date(text)
    if value is None:
        return [FieldViolation(name, "not a date YYYY-MM-DD")]
    if value.year < 1868:
        return [FieldViolation(name, "before 1868")]
    if not_future and today is not None and value > today:
        return [FieldViolation(name, "in the future")]
    return []


def check_text(name: str, text: str, *, required: bool, limit: int) -> list[FieldViolation]:
    if not text.strip():
        return [FieldViolation(name, "required")] if required else []
    if len(text) > limit:
        return [FieldViolation(name, f"at most {limit} characters")]
    if not text.replace("\u3000", " ").isprintable():
        return [FieldViolation(name, "contains control characters")]
    return []


def check_id(name: str, text: str, *, required: bool) -> list[FieldViolation]:
    if not text:
        return [FieldViolation(name, "required")] if required else []
    if not _ID.match(text):
        return [FieldViolation(name, "1-64 characters of A-Z a-z 0-9 _ . : -")]
    return []


def check_code(name: str, text: str, *, required: bool) -> list[FieldViolation]:
    if not text:
        return [FieldViolation(name, "required")] if required else []
    problem = code_problem(text)
    return [FieldViolation(name, problem)] if problem else []


def check_sex(name: str, sex: str) -> list[FieldViolation]:
    return [] if sex in SEX_CODES else [FieldViolation(name, "required: 1 (male), 2 (female) or 3 (other)")]


def check_registration_number(name: str, text: str) -> list[FieldViolation]:
    if not text:
        return [FieldViolation(name, "required")]
    return [] if _REG_NO.match(text) else [FieldViolation(name, "1-32 characters of A-Z a-z 0-9 -")]


@dataclass(frozen=True)
class ResidentFields:
    """What a municipal system writes about a resident (UpsertResident, an import row)."""

    resident_id: str
    municipality_code: str
    household_id: str
    household_head: bool
    name: str
    name_kana: str
    birth_date: str
    sex: str
    address: str
    relationship: str
    honseki_code: str
    moved_in_on: str


def check_resident(fields: ResidentFields, *, prefix: str, today: date) -> list[FieldViolation]:
    p = prefix
    return [
        *check_id(f"{p}resident_id", fields.resident_id, required=False),
        *check_id(f"{p}household_id", fields.household_id, required=fields.household_head),
        *check_text(f"{p}name", fields.name, required=True, limit=MAX_NAME),
        *check_text(f"{p}name_kana", fields.name_kana, required=False, limit=MAX_NAME),
        *check_date(f"{p}birth_date", fields.birth_date, required=True, today=today, not_future=True),
        *check_sex(f"{p}sex", fields.sex),
        *check_text(f"{p}address", fields.address, required=True, limit=MAX_ADDRESS),
        *check_text(f"{p}relationship", fields.relationship, required=False, limit=MAX_SHORT),
        *check_code(f"{p}honseki_code", fields.honseki_code, required=False),
        *check_date(f"{p}moved_in_on", fields.moved_in_on, required=False),
    ]


HOLDER_FIELDS = ("name", "birth_date", "sex", "address")


def holder_mismatches(record: CardHolder, certificate: CardHolder) -> list[str]:
    """The basic four facts (基本4情報) that differ between the record and the card, by field name."""
    differ = []
    if normalise(record.name) != normalise(certificate.name):
        differ.append("name")
    if record.birth_date != certificate.birth_date:
        differ.append("birth_date")
    if record.sex != certificate.sex:
        differ.append("sex")
    if normalise(record.address) != normalise(certificate.address):
        differ.append("address")
    return differ
