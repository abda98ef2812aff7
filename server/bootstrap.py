"""First start of a development platform: PKI, real municipality list, a few invented residents.

Used by `make run` (server/__main__.py) and by tests (server/testing.py), so a resident is enrolled
one way everywhere. A second start reuses everything.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from clients.pki import DevPki, SoftwareCard
from server.clock import to_epoch_ms
from server.crypto.jpki import CardHolder, serial_text
from server.db import Database
from server.ids import new_id

log = logging.getLogger("onestop.bootstrap")

DEMO_MUNICIPALITY = "131016"  # 東京都千代田区
DEMO_PIN = "1234"
DEMO_PASSWORD = "ABC123"


@dataclass(frozen=True)
class DemoResident:
    file_name: str
    holder: CardHolder
    relationship: str


# Invented people: one household (a parent, the spouse, a baby) and a neighbour.
DEMO_HOUSEHOLD = "hh_demo_yamada"
DEMO_RESIDENTS = (
    DemoResident("yamada-hanako", CardHolder("山田 花子", "2", date(1990, 4, 10), "東京都千代田区千代田1-1"), "世帯主"),
    DemoResident("yamada-taro", CardHolder("山田 太郎", "1", date(1988, 9, 2), "東京都千代田区千代田1-1"), "夫"),
    DemoResident("yamada-hina", CardHolder("山田 ひな", "2", date(2026, 7, 15), "東京都千代田区千代田1-1"), "子"),
    DemoResident("suzuki-ichiro", CardHolder("鈴木 一郎", "1", date(1975, 1, 20), "東京都千代田区神田1-2-3"), "世帯主"),
)


async def enrol_resident(db: Database, holder: CardHolder, card: SoftwareCard, lgcode: str, *, now: datetime,
                         household_id: str | None = None, resident_id: str | None = None,
                         **columns: object) -> str:
    """Register a resident in the registry tables and link the card (both certificates)."""
    resident_id = resident_id or new_id("res")
    now_ms = to_epoch_ms(now)
    async with db.write() as tx:
        await tx.execute(
            "INSERT OR IGNORE INTO municipalities (code, prefecture, name, name_kana) VALUES (?, '', ?, '')",
            (lgcode, lgcode),
        )
        if household_id:
            await tx.execute("INSERT OR IGNORE INTO households (household_id, municipality_code) VALUES (?, ?)",
                             (household_id, lgcode))
        values = {
            "resident_id": resident_id, "municipality_code": lgcode, "household_id": household_id,
            "name": holder.name, "birth_date": holder.birth_date.isoformat(), "sex": holder.sex,
            "address": holder.address, "updated_at_ms": now_ms, **columns,
        }
        await tx.execute(
            f"INSERT INTO residents ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
            tuple(values.values()),
        )
        auth, sign = card.auth_certificate, card.sign_certificate
        await tx.execute(
            "INSERT INTO card_links (link_id, resident_id, auth_issuer, auth_serial, sign_issuer, sign_serial,"
            " linked_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new_id("lnk"), resident_id, auth.issuer.rfc4514_string(), serial_text(auth.serial_number),
             sign.issuer.rfc4514_string(), serial_text(sign.serial_number), now_ms),
        )
    return resident_id


async def load_municipalities(db: Database, csv_path: Path) -> str:
    """The real list through the registry area's loader (when that area is present)."""
    if not importlib.util.find_spec("server.registry.municipalities"):
        return "registry loader not available"
    from server.registry.municipalities import load_municipalities as load

    report = await load(db, csv_path)
    return f"{getattr(report, 'loaded', '?')} municipalities loaded, {len(getattr(report, 'rejected', []) or [])} rejected"


async def seed_demo_residents(db: Database, pki: DevPki, *, now: datetime) -> list[Path]:
    """Invented residents with software cards under pki/cards/ (skipped when already there)."""
    created = []
    for demo in DEMO_RESIDENTS:
        path = pki.cards_dir / f"{demo.file_name}.json"
        if path.exists():
            continue
        card = SoftwareCard.load(pki.issue_card(demo.holder, DEMO_PIN, DEMO_PASSWORD, demo.file_name, now=now))
        household = DEMO_HOUSEHOLD if demo.file_name.startswith("yamada") else f"hh_demo_{demo.file_name}"
        resident_id = await enrol_resident(db, demo.holder, card, DEMO_MUNICIPALITY, now=now,
                                           household_id=household, relationship=demo.relationship)
        if demo.relationship == "世帯主":
            async with db.write() as tx:
                await tx.execute("UPDATE households SET head_resident_id = ? WHERE household_id = ?",
                                 (resident_id, household))
        created.append(path)
    return created
