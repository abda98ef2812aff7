"""The real municipality list: check digits, row-numbered rejections, an idempotent load."""

from __future__ import annotations

import csv
from pathlib import Path


from server.config import Settings
from server.db import Database
from server.registry.municipalities import check_digit, is_valid_code, load_municipalities, parse_csv, parse_text

REAL = Settings().municipalities_csv
HEADER = "pid,pref,cid,city,citykana,lat,lng,url,phrase,lgcode\n"


def data_rows(path: Path) -> int:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_check_digit_rule():
    assert is_valid_code("011002")          # 札幌市
    assert is_valid_code("131016")          # 千代田区
    assert check_digit("13101") == 6
    assert not is_valid_code("011003")
    assert not is_valid_code("13101")
    assert not is_valid_code("13101a")
    assert not is_valid_code("１３１０１６")  # full-width digits are not a code


def test_every_real_row_passes_and_count_matches_the_file():
    rows, rejects = parse_csv(REAL)
    assert rejects == []
    assert len(rows) == data_rows(REAL) == 1916
    assert len({r.code for r in rows}) == len(rows)
    chiyoda = next(r for r in rows if r.code == "131016")
    assert (chiyoda.prefecture, chiyoda.name) == ("東京都", "千代田区")
    assert rows[0].code == "011002" and rows[0].name == "札幌市"  # the BOM did not eat the first column


def test_bad_rows_are_reported_by_row_number():
    text = "\ufeff" + HEADER + "\n".join([
        "1,北海道,1100,札幌市,さっぽろし,43.06,141.35,https://x/,p,011002",   # row 2 fine
        "1,北海道,1100,偽市,にせし,43.06,141.35,https://x/,p,011003",         # row 3 bad check digit
        "13,,13101,千代田区,ちよだく,35.69,139.75,https://x/,p,131016",       # row 4 missing pref
        "13,東京都,13102,中央区,ちゅうおうく,35.67,139.77,https://x/,p,",      # row 5 missing lgcode
        "13,東京都,13102,中央区,ちゅうおうく,north,139.77,https://x/,p,131024",  # row 6 bad latitude
        "13,東京都,13102,中央区,ちゅうおうく,35.67,139.77",                     # row 7 short
        "1,北海道,1100,札幌市,さっぽろし,43.06,141.35,https://x/,p,011002",   # row 8 duplicate
        "13,東京都,13102,中央区,ちゅうおうく,35.67,139.77,https://x/,p,131024",  # row 9 fine
    ]) + "\n"
    rows, rejects = parse_text(text)
    assert [r.code for r in rows] == ["011002", "131024"]
    by_row = {r.row_number: r.reason for r in rejects}
    assert sorted(by_row) == [3, 4, 5, 6, 7, 8]
    assert "check digit" in by_row[3]
    assert "pref: required" in by_row[4]
    assert "lgcode: required" in by_row[5]
    assert "lat" in by_row[6]
    assert "columns" in by_row[7]
    assert "duplicate of row 2" in by_row[8]


def test_a_header_without_the_code_column_is_row_one():
    rows, rejects = parse_text("pid,pref,city\n1,北海道,札幌市\n")
    assert rows == [] and [r.row_number for r in rejects] == [1]


async def test_load_is_an_idempotent_upsert(tmp_path):
    db = await Database(tmp_path / "m.db").open()
    try:
        async with db.write() as tx:  # a placeholder row (as a test or a bootstrap enrolment makes) gets the real name
            await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES ('131016', '', '131016', '')")
        first = await load_municipalities(db, REAL)
        assert first.loaded == 1916 and first.rejected == [] and first.changed == 1916
        second = await load_municipalities(db, REAL)
        assert second.loaded == 1916 and second.changed == 0
        async with db.read() as tx:
            assert await tx.scalar("SELECT count(*) FROM municipalities") == 1916
            row = await tx.one("SELECT * FROM municipalities WHERE code = '131016'")
        assert (row["prefecture"], row["name"], row["name_kana"]) == ("東京都", "千代田区", "ちよだく")
    finally:
        await db.close()


async def test_bad_file_loads_its_good_rows_only(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "1,北海道,1100,札幌市,さっぽろし,,,,p,011002\n1,北海道,1100,x,x,,,,p,011009\n",
                    encoding="utf-8")
    db = await Database(tmp_path / "m.db").open()
    try:
        report = await load_municipalities(db, path)
        assert report.loaded == 1 and [r.row_number for r in report.rejected] == [3]
        async with db.read() as tx:
            assert [r[0] for r in await tx.all("SELECT code FROM municipalities")] == ["011002"]
    finally:
        await db.close()
