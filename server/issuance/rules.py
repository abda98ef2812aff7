"""Kiosk issuance rules in plain Python: settings and their defaults, hours, fiscal years, who may
take which certificate, and the J-LIS contribution table. No network, no SQL.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from server.clock import JST
from server.errors import FailedPrecondition, FieldViolation, InvalidArgument

# CertificateType numbers (the proto enum).
RESIDENT_RECORD = 1
RESIDENT_RECORD_ITEMS = 2
SEAL_REGISTRATION = 3
TAX = 4
FAMILY_REGISTER_FULL = 5
FAMILY_REGISTER_INDIVIDUAL = 6
FAMILY_REGISTER_ATTACHMENT = 7
ALL_TYPES = (1, 2, 3, 4, 5, 6, 7)

TYPE_NAMES = {
    RESIDENT_RECORD: "住民票の写し",
    RESIDENT_RECORD_ITEMS: "住民票記載事項証明書",
    SEAL_REGISTRATION: "印鑑登録証明書",
    TAX: "所得・課税証明書",
    FAMILY_REGISTER_FULL: "戸籍全部事項証明書",
    FAMILY_REGISTER_INDIVIDUAL: "戸籍個人事項証明書",
    FAMILY_REGISTER_ATTACHMENT: "戸籍の附票の写し",
}
# Types a holder may take for a member of their household; the others are the holder's own only.
HOUSEHOLD_TYPES = frozenset({RESIDENT_RECORD, RESIDENT_RECORD_ITEMS})
# Types issued by the 本籍地 (and needing 利用登録 when it differs from the address municipality).
HONSEKI_TYPES = frozenset({FAMILY_REGISTER_FULL, FAMILY_REGISTER_INDIVIDUAL, FAMILY_REGISTER_ATTACHMENT})
DEFAULT_FEES = {
    RESIDENT_RECORD: 300, RESIDENT_RECORD_ITEMS: 300, SEAL_REGISTRATION: 300, TAX: 300,
    FAMILY_REGISTER_FULL: 450, FAMILY_REGISTER_INDIVIDUAL: 450, FAMILY_REGISTER_ATTACHMENT: 300,
}
OPERATOR_FEE_YEN = 123  # per issued copy, owed by the municipality to the store operator (seed §3(2)②)
MAX_COPIES = 10
TRANSACTION_IDLE_SECONDS = 600
# City-hall kiosks of these municipalities serve every participating municipality (seed §3(2)③).
SERVE_ALL_CITY_HALLS = {"082244": "守谷市", "172031": "小松市", "292095": "生駒市"}


@dataclass
class KioskSettings:
    """What a municipality offers at kiosks. Minutes are JST minutes after midnight."""

    participating: bool = True
    offered_types: list[int] = field(default_factory=lambda: list(ALL_TYPES))
    fees: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_FEES))
    open_minute: int = 6 * 60 + 30
    close_minute: int = 23 * 60
    family_register_weekdays_only: bool = False
    family_register_open_minute: int = 9 * 60
    family_register_close_minute: int = 17 * 60
    individual_number_allowed: bool = False
    city_hall_serves_all: bool = False

    @classmethod
    def default_for(cls, lgcode: str) -> "KioskSettings":
        return cls(city_hall_serves_all=lgcode in SERVE_ALL_CITY_HALLS)

    def fee(self, certificate_type: int) -> int:
        return int(self.fees.get(certificate_type, DEFAULT_FEES[certificate_type]))

    def to_json(self) -> str:
        data = asdict(self)
        data["fees"] = {str(k): v for k, v in self.fees.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "KioskSettings":
        data = json.loads(text)
        data["fees"] = {int(k): int(v) for k, v in data.get("fees", {}).items()}
        return cls(**data)

    def validate(self) -> None:
        bad: list[FieldViolation] = []
        for t in self.offered_types:
            if t not in ALL_TYPES:
                bad.append(FieldViolation("settings.offered_types", f"unknown certificate type {t}"))
        for t, fee in self.fees.items():
            if t not in ALL_TYPES:
                bad.append(FieldViolation("settings.fees", f"unknown certificate type {t}"))
            elif not 0 <= fee <= 10_000:
                bad.append(FieldViolation("settings.fees", "fee must be 0 to 10000 yen"))
        for name in ("open_minute", "close_minute", "family_register_open_minute", "family_register_close_minute"):
            if not 0 <= getattr(self, name) <= 24 * 60:
                bad.append(FieldViolation(f"settings.{name}", "minutes after midnight, 0 to 1440"))
        if self.open_minute >= self.close_minute:
            bad.append(FieldViolation("settings.close_minute", "must be after open_minute"))
        if self.family_register_weekdays_only and self.family_register_open_minute >= self.family_register_close_minute:
            bad.append(FieldViolation("settings.family_register_close_minute", "must be after the opening"))
        if bad:
            raise InvalidArgument.fields(bad)


def is_year_end_closure(day: date) -> bool:
    """Kiosks are closed from 29 December to 3 January."""
    return (day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3)


def check_hours(settings: KioskSettings, certificate_type: int, now: datetime) -> None:
    """OUTSIDE_HOURS unless the municipality issues this type at `now` (JST)."""
    local = now.astimezone(JST)
    minute = local.hour * 60 + local.minute
    if is_year_end_closure(local.date()):
        raise FailedPrecondition("OUTSIDE_HOURS", "kiosk issuance is closed from 29 December to 3 January")
    if not settings.open_minute <= minute < settings.close_minute:
        raise FailedPrecondition("OUTSIDE_HOURS", "outside the municipality's kiosk hours")
    if certificate_type in HONSEKI_TYPES and settings.family_register_weekdays_only:
        if local.weekday() >= 5 or not (
            settings.family_register_open_minute <= minute < settings.family_register_close_minute
        ):
            raise FailedPrecondition("OUTSIDE_HOURS", "family-register certificates only on weekdays in office hours")


def current_fiscal_year(now: datetime) -> int:
    """The Japanese fiscal year (April to March) of `now` in JST."""
    local = now.astimezone(JST)
    return local.year if local.month >= 4 else local.year - 1


def income_year(fiscal_year: int) -> int:
    """A tax certificate of fiscal year N covers the income of calendar year N-1."""
    return fiscal_year - 1


def status_refusal(status: str, *, whose: str) -> None:
    """Residents whose record is closed or closing get no certificate from a kiosk."""
    if status == "moved_out":
        raise FailedPrecondition("MOVED_OUT", f"the {whose} has moved out of the municipality")
    if status == "moving_out":
        raise FailedPrecondition("MOVING_OUT", f"the {whose} has notified a move out")
    if status == "deceased":
        raise FailedPrecondition("DECEASED", f"the {whose} is deceased")


def to_wareki(day: date) -> str:
    """Japanese era date (令和 from 2019-05-01, 平成 before)."""
    if day >= date(2019, 5, 1):
        era, year = "令和", day.year - 2018
    elif day >= date(1989, 1, 8):
        era, year = "平成", day.year - 1988
    else:
        era, year = "昭和", day.year - 1925
    return f"{era}{'元' if year == 1 else year}年{day.month}月{day.day}日"


@dataclass(frozen=True)
class JlisContribution:
    """One row of the J-LIS operating contribution table (万円 per year), seed §3(3)②."""

    municipality_class: str
    population_bracket: str
    population_min: int
    population_max: int  # exclusive; 0 = no upper bound
    current_man_yen: int
    revised_man_yen: int
    reduction_percent: int
    new_bracket: bool = False


# Current amounts apply until FY2016; revised from FY2017. 市 under 50,000 is a bracket the
# revision creates: until then it paid the 300 of the 5万-15万 cities.
JLIS_CONTRIBUTIONS = (
    JlisContribution("政令市", "100万以上", 1_000_000, 0, 1000, 970, 3),
    JlisContribution("政令市", "100万未満", 0, 1_000_000, 800, 770, 4),
    JlisContribution("市(区)", "15万以上", 150_000, 0, 500, 470, 6),
    JlisContribution("市(区)", "5万以上15万未満", 50_000, 150_000, 300, 270, 10),
    JlisContribution("市", "5万未満(新設)", 0, 50_000, 300, 220, 27, new_bracket=True),
    JlisContribution("町村", "—", 0, 0, 100, 70, 30),
)


# MunicipalityKind (proto enum) -> the table's classes that apply to it.
_CLASSES = {1: ("政令市",), 2: ("市(区)", "市"), 3: ("町村",)}


def jlis_rows(kind: int = 0, population: int = 0) -> list[JlisContribution]:
    """The rows for a kind of municipality and the bracket its population falls in (0 = any)."""
    rows = [r for r in JLIS_CONTRIBUTIONS if not kind or r.municipality_class in _CLASSES.get(kind, ())]
    if population:
        rows = [r for r in rows if r.population_min <= population and (not r.population_max or population < r.population_max)]
    return rows
