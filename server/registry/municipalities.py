"""The real list of municipalities (市区町村): parse and validate the CSV, load it idempotently.

The file (`../shared/data/municipalities.csv`, UTF-8 with a BOM) has the columns
`pid,pref,cid,city,citykana,lat,lng,url,phrase,lgcode`. `lgcode` is the 6-digit local-government
code (全国地方公共団体コード): five digits and a check digit (JIS X 0401/0402).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from server.db import Database

COLUMNS = ("pid", "pref", "cid", "city", "citykana", "lat", "lng", "url", "phrase", "lgcode")
_WEIGHTS = (6, 5, 4, 3, 2)


def check_digit(first_five: str) -> int:
    """The check digit of a 5-digit code: weights 6..2, r = sum mod 11, digit = (11 - r) mod 10."""
    total = sum(int(d) * w for d, w in zip(first_five, _WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def code_problem(code: str) -> str | None:
    """Why `code` is not a valid 6-digit municipality code, or None if it is."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return "must be 6 digits"
    if check_digit(code[:5]) != int(code[5]):
        return "check digit does not match"
    return None


def is_valid_code(code: str) -> bool:
    return code_problem(code) is None


@dataclass(frozen=True)
class MunicipalityRow:
    code: str
    prefecture: str
    name: str
    name_kana: str
    url: str
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True)
class RowReject:
    """A row left out: its number in the file (header = row 1) and why."""

    row_number: int
    reason: str


@dataclass(frozen=True)
class LoadReport:
    loaded: int
    rejected: list[RowReject] = field(default_factory=list)
    changed: int = 0  # rows inserted or updated by this load (0 on a repeated load)


def _coordinate(text: str, low: float, high: float) -> float | None:
    if not text.strip():
        return None
    value = float(text)  # ValueError for junk
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError("out of range")
    return value


def parse_text(text: str) -> tuple[list[MunicipalityRow], list[RowReject]]:
    """Parse the CSV's text (a leading BOM is dropped). See parse_csv."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[MunicipalityRow] = []
    rejects: list[RowReject] = []
    header = next(reader, None)
    if header is None:
        return rows, [RowReject(1, "empty file: no header")]
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return rows, [RowReject(1, f"header lacks column(s): {', '.join(missing)}")]
    index = {name: header.index(name) for name in COLUMNS}
    seen: dict[str, int] = {}
    for number, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            rejects.append(RowReject(number, "empty row"))
            continue
        if len(record) != len(header):
            rejects.append(RowReject(number, f"expected {len(header)} columns, found {len(record)}"))
            continue
        value = {name: record[i].strip() for name, i in index.items()}
        problems = [f"{name}: required" for name in ("lgcode", "pref", "city") if not value[name]]
        if value["lgcode"]:
            problem = code_problem(value["lgcode"])
            if problem:
                problems.append(f"lgcode: {problem}")
        latitude = longitude = None
        try:
            latitude = _coordinate(value["lat"], -90, 90)
        except ValueError:
            problems.append("lat: not a latitude")
        try:
            longitude = _coordinate(value["lng"], -180, 180)
        except ValueError:
            problems.append("lng: not a longitude")
        if not problems and value["lgcode"] in seen:
            problems.append(f"lgcode: duplicate of row {seen[value['lgcode']]}")
        if problems:
            rejects.append(RowReject(number, "; ".join(problems)))
            continue
        seen[value["lgcode"]] = number
        rows.append(MunicipalityRow(
            code=value["lgcode"], prefecture=value["pref"], name=value["city"], name_kana=value["citykana"],
            url=value["url"], latitude=latitude, longitude=longitude,
        ))
    return rows, rejects


def parse_csv(path: str | Path) -> tuple[list[MunicipalityRow], list[RowReject]]:
    """The valid rows and the rejected ones (by row number, header = row 1) of a municipality CSV."""
    return parse_text(Path(path).read_text(encoding="utf-8-sig"))


_UPSERT = (
    "INSERT INTO municipalities (code, prefecture, name, name_kana, url, latitude, longitude)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (code) DO UPDATE SET prefecture = excluded.prefecture, name = excluded.name,"
    " name_kana = excluded.name_kana, url = excluded.url, latitude = excluded.latitude,"
    " longitude = excluded.longitude"
    " WHERE prefecture IS NOT excluded.prefecture OR name IS NOT excluded.name"
    " OR name_kana IS NOT excluded.name_kana OR url IS NOT excluded.url"
    " OR latitude IS NOT excluded.latitude OR longitude IS NOT excluded.longitude"
)


async def load_municipalities(db: Database, path: str | Path) -> LoadReport:
    """Upsert every valid row in one transaction; a second load of the same file changes nothing."""
    rows, rejects = parse_csv(path)
    changed = 0
    async with db.write() as tx:
        for row in rows:
            changed += await tx.execute(_UPSERT, (row.code, row.prefecture, row.name, row.name_kana, row.url,
                                                  row.latitude, row.longitude))
    return LoadReport(loaded=len(rows), rejected=rejects, changed=changed)
