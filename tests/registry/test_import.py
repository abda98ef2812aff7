"""Bulk import: good rows written, bad rows reported by row number, nothing half-written; resumable CLI."""

from __future__ import annotations

import json

import grpc
from click.testing import CliRunner
from onestop.registry.v1 import registry_pb2 as pb

from clients.registry.__main__ import cli
from clients.registry.importer import import_file, municipality_channel, state_path
from tests.helpers import expect_error
from tests.registry.support import CHIYODA, CHUO, create, rid, stub, with_municipalities

IA = grpc.StatusCode.INVALID_ARGUMENT


def row(n, name="住民", **kw):
    values = dict(birth_date="1980-01-01", sex=1, address="東京都千代田区1-1")
    values.update(kw)
    return pb.ImportRow(row_number=n, name=name, **values)


def stream(rows, request_id=None, lgcode=CHIYODA):
    request_id = rid() if request_id is None else request_id

    def messages():
        for i, r in enumerate(rows):
            yield pb.ImportResidentsRequest(request_id=request_id if i == 0 else "",
                                            municipality_code=lgcode if i == 0 else "", row=r)
    return messages


async def count(platform, sql="SELECT count(*) FROM residents", params=()):
    async with platform.db.read() as tx:
        return await tx.scalar(sql, params)


async def test_good_rows_written_bad_rows_reported(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    chuo_resident = await create(stub(platform, CHUO), lgcode=CHUO)
    rows = [
        row(2, "良い 一", household_id="hh_a", household_head=True, relationship="世帯主"),
        row(3, "", birth_date="1980-02-30"),                                  # name missing, impossible date
        row(4, "良い 二", household_id="hh_a", relationship="妻", sex=2),
        row(5, "悪い 三", sex=7),                                              # sex
        row(6, "悪い 四", honseki_code="999999"),                              # bad check digit
        row(7, "悪い 五", resident_id=chuo_resident.resident_id),              # another municipality's resident
        row(8, "悪い 六", household_head=True),                                # head without a household
        row(9, "良い 三", honseki_code="011002"),
    ]
    messages = stream(rows)
    reply = await registry.ImportResidents(messages())
    assert (reply.received, reply.created, reply.updated, reply.rejected_count) == (8, 3, 0, 5)
    assert reply.last_row_number == 9
    rejected = {r.row_number: {v.field for v in r.violations} for r in reply.rejected}
    assert rejected == {3: {"name", "birth_date"}, 5: {"sex"}, 6: {"honseki_code"}, 7: {"resident_id"},
                        8: {"household_id"}}
    assert [i.row_number for i in reply.imported] == [2, 4, 9]
    names = {r[0] for r in await _rows(platform, "SELECT name FROM residents WHERE municipality_code = ?", (CHIYODA,))}
    assert names == {"良い 一", "良い 二", "良い 三"}
    assert await count(platform, "SELECT head_resident_id FROM households WHERE household_id='hh_a'") == \
        reply.imported[0].resident_id
    # the other municipality's resident is untouched
    assert await count(platform, "SELECT name FROM residents WHERE resident_id = ?",
                       (chuo_resident.resident_id,)) == chuo_resident.name
    # a retried stream (same request_id) gets the first outcome and writes nothing more
    again = await registry.ImportResidents(messages())
    assert again == reply
    assert await count(platform) == 4


async def _rows(platform, sql, params=()):
    async with platform.db.read() as tx:
        return await tx.all(sql, params)


async def test_import_updates_by_resident_id_and_is_scoped(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    reply = await registry.ImportResidents(stream([row(2, "旧 名", resident_id="city-0001")])())
    assert reply.created == 1 and reply.imported[0].resident_id == "city-0001"
    reply = await registry.ImportResidents(stream([row(2, "新 名", resident_id="city-0001")])())
    assert reply.updated == 1
    assert await count(platform, "SELECT name || ':' || version FROM residents WHERE resident_id='city-0001'") == "新 名:2"
    await expect_error(stub(platform, CHUO).ImportResidents(stream([row(2)])()), grpc.StatusCode.PERMISSION_DENIED,
                       "OTHER_MUNICIPALITY")
    await expect_error(registry.ImportResidents(stream([row(3), row(3)])()), IA, field="rows[1].row_number")
    await expect_error(registry.ImportResidents(stream([])()), IA, field="rows")
    await expect_error(registry.ImportResidents(stream([row(2)], request_id="")()), IA, field="request_id")
    assert await count(platform) == 1


def write_csv(path, n_good, bad_rows=()):
    lines = ["name,birth_date,sex,address,household_id,household_head,relationship"]
    for i in range(n_good + len(bad_rows)):
        number = i + 2
        if number in bad_rows:
            lines.append(f"壊れた {number},1999-99-99,1,東京都千代田区,,,")
        else:
            lines.append(f"住民 {number},1980-01-01,{1 + i % 2},東京都千代田区{number},,,")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_cli_importer_resumes_without_duplicates(platform, tmp_path):
    await with_municipalities(platform)
    path = tmp_path / "residents.csv"
    write_csv(path, 10, bad_rows=(5, 11))  # 12 data rows, rows 2..13
    channel = municipality_channel(platform.server.target(machine=True), platform.pki.root, CHIYODA)
    try:
        first = await import_file(path, CHIYODA, channel, batch_size=4, max_batches=2)  # interrupted
        assert not first.complete and first.acknowledged_through == 9 and first.sent == 8
        assert json.loads(state_path(path).read_text())["acknowledged_through"] == 9
        assert await count(platform) == 7
        seen = []
        second = await import_file(path, CHIYODA, channel, batch_size=4, resume=True,
                                   progress=lambda report, batch: seen.append([r.row_number for r in batch]))
        assert second.complete and second.skipped == 8
        assert seen == [[10, 11, 12, 13]]
        assert (second.created, second.sent, second.acknowledged_through) == (10, 12, 13)
        assert [n for n, _ in second.rejected] == [5, 11]
        assert await count(platform) == 10
        # running the whole file again without --resume replays the batches: still no duplicates
        third = await import_file(path, CHIYODA, channel, batch_size=4)
        assert third.created == 10 and await count(platform) == 10
    finally:
        await channel.close()


def test_check_municipalities_command(tmp_path):
    from server.config import Settings
    runner = CliRunner()
    ok = runner.invoke(cli, ["check-municipalities", str(Settings().municipalities_csv)])
    assert ok.exit_code == 0 and "1916 valid rows, 0 rejected" in ok.output
    bad = tmp_path / "m.csv"
    bad.write_text("pid,pref,cid,city,citykana,lat,lng,url,phrase,lgcode\n"
                   "1,北海道,1100,札幌市,さっぽろし,,,,p,011002\n1,北海道,1100,x,x,,,,p,011009\n"
                   "1,,1100,x,x,,,,p,011002\n", encoding="utf-8")
    result = runner.invoke(cli, ["check-municipalities", str(bad)])
    assert result.exit_code == 1
    assert "1 valid rows, 2 rejected" in result.output
    assert "row 3: lgcode: check digit" in result.output and "row 4: pref: required" in result.output


async def test_cli_command_end_to_end(platform, tmp_path):
    """The real command in a subprocess: progress, the report of rejected rows, --resume skipping all."""
    import asyncio
    import os
    import sys

    await with_municipalities(platform)
    path = tmp_path / "r.csv"
    write_csv(path, 5, bad_rows=(4,))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    async def run(*extra):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients.registry", "import-residents", str(path), "--lgcode", CHIYODA,
            "--target", platform.server.target(machine=True), "--pki", str(platform.pki.root), "--batch-size", "2",
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run()
    assert code == 0, err
    assert "6 rows: 0 skipped (already acknowledged), 5 created, 0 updated, 1 rejected" in out
    assert "row 4: birth_date: not a date YYYY-MM-DD" in out
    assert "rows 2-3 acknowledged: 2/6" in err and "rows 6-7 acknowledged: 6/6" in err
    code, out, err = await run("--resume")
    assert code == 0, err
    assert "6 rows: 6 skipped" in out and "5 created" in out
    assert await count(platform) == 5


async def test_a_row_failing_mid_write_leaves_nothing_of_itself(platform, monkeypatch):
    """The household of a row is created before its resident; if the resident insert fails, both go."""
    import sqlite3

    from server.registry import store

    await with_municipalities(platform)
    real_insert = store.insert_resident

    async def failing(tx, values):
        if values["name"] == "失敗 する":
            await real_insert(tx, values)  # written, then the row fails after it
            raise sqlite3.IntegrityError("simulated constraint failure")
        if values["name"] == "単独 失敗":
            raise sqlite3.IntegrityError("simulated: a single INSERT fails and writes nothing")
        await real_insert(tx, values)

    monkeypatch.setattr(store, "insert_resident", failing)
    reply = await stub(platform).ImportResidents(stream([
        row(2, "成功 一", household_id="hh_ok"),
        row(3, "失敗 する", household_id="hh_lost", household_head=True),
        row(4, "成功 二", household_id="hh_ok"),
        row(5, "単独 失敗", household_id="hh_ok"),
        row(6, "成功 三", household_id="hh_lost"),  # the rolled-back household is created afresh
    ])())
    assert (reply.created, reply.rejected_count) == (3, 2)
    assert [r.row_number for r in reply.rejected] == [3, 5]
    assert all(r.violations[0].field == "row" for r in reply.rejected)
    assert await count(platform, "SELECT count(*) FROM residents WHERE name IN ('失敗 する', '単独 失敗')") == 0
    assert await count(platform, "SELECT head_resident_id IS NULL FROM households WHERE household_id = 'hh_lost'") == 1
    assert await count(platform) == 3


async def test_stream_row_limit(platform, monkeypatch):
    from server.registry import rules

    await with_municipalities(platform)
    monkeypatch.setattr(rules, "MAX_IMPORT_ROWS", 3)
    await expect_error(stub(platform).ImportResidents(stream([row(n) for n in range(2, 6)])()), IA,
                       "TOO_MANY_ROWS", "rows")
    assert await count(platform) == 0


async def test_concurrent_links_of_one_card_one_wins(platform):
    import asyncio

    from server.testing import holder, issue_card
    from tests.registry.test_cards import HANAKO, link

    await with_municipalities(platform)
    registry = stub(platform)
    card = issue_card(platform.pki, holder(), now=platform.clock.now())
    residents = [await create(registry, **HANAKO) for _ in range(4)]

    async def attempt(r):
        try:
            await registry.LinkCard(link(r.resident_id, card))
            return "linked"
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
            return "refused"

    outcomes = await asyncio.gather(*(attempt(r) for r in residents))
    assert sorted(outcomes) == ["linked"] + ["refused"] * 3
    assert await count(platform, "SELECT count(*) FROM card_links WHERE unlinked_at_ms IS NULL") == 1


async def test_a_full_stream_of_bad_rows_gets_its_whole_report(platform):
    """The worst reply: the maximum number of rows, each wrong in every field, still fits one message."""
    from server.registry import rules

    await with_municipalities(platform)
    bad = dict(resident_id="!" * 70, household_id="?" * 70, household_head=True, name="x" * 101,
               name_kana="y" * 101, birth_date="31/12/1999", sex=9, address="z" * 201, relationship="r" * 51,
               honseki_code="12345x", moved_in_on="never")
    rows = [pb.ImportRow(row_number=n + 2, **bad) for n in range(rules.MAX_IMPORT_ROWS)]
    reply = await stub(platform).ImportResidents(stream(rows)())
    assert reply.rejected_count == len(reply.rejected) == rules.MAX_IMPORT_ROWS
    assert len(reply.rejected[0].violations) == 10
    assert reply.ByteSize() < 4 * 1024 * 1024
    assert await count(platform) == 0


async def test_an_interrupted_stream_is_completed_by_its_retry_in_chunks(platform, monkeypatch):
    """Chunks commit one by one; a retry replays those done and writes the rest, never a row twice."""
    from server.errors import Unavailable
    from server.registry import rules, service

    await with_municipalities(platform)
    monkeypatch.setattr(service, "IMPORT_CHUNK_ROWS", 2)
    real = rules.import_rows
    calls = {"n": 0}

    async def flaky(tx, lgcode, rows, now):
        calls["n"] += 1
        if calls["n"] == 3:  # the third chunk's first attempt: the database is briefly unavailable
            raise Unavailable("DATABASE_BUSY", "try again")
        return await real(tx, lgcode, rows, now)

    monkeypatch.setattr(rules, "import_rows", flaky)
    rows = [row(n, f"住民 {n}") for n in range(2, 9)] + [row(9, "", sex=0)]  # 8 rows, 4 chunks, row 9 bad
    messages = stream(rows)
    await expect_error(stub(platform).ImportResidents(messages()), grpc.StatusCode.UNAVAILABLE)
    assert await count(platform) == 4  # the first two chunks are in
    reply = await stub(platform).ImportResidents(messages())
    assert (reply.received, reply.created, reply.rejected_count, reply.last_row_number) == (8, 7, 1, 9)
    assert [r.row_number for r in reply.rejected] == [9]
    assert [i.row_number for i in reply.imported] == list(range(2, 9))
    assert await count(platform) == 7
    assert await stub(platform).ImportResidents(messages()) == reply
    # the same request_id with a stream that differs only after the first chunk is refused, writing nothing
    other = list(messages())
    other[-1].row.name, other[-1].row.sex = "後から 変えた", 1
    await expect_error(stub(platform).ImportResidents(iter(other)), IA, "REQUEST_ID_REUSED")
    assert await count(platform) == 7
