"""Soak: two municipalities import large files at once while residents are read. Bounded in count."""

from __future__ import annotations

import asyncio
import time

import pytest
from onestop.registry.v1 import registry_pb2 as pb

from clients.registry.importer import import_file, municipality_channel
from tests.registry.support import CHIYODA, CHUO, stub, with_municipalities

ROWS = 10_000


def write(path, lgcode, n):
    lines = ["resident_id,name,birth_date,sex,address,household_id,household_head,relationship"]
    for i in range(n):
        head = i % 3 == 0
        lines.append(f"{lgcode}-{i:06d},住民 {i},19{50 + i % 50}-0{1 + i % 9}-1{i % 10},{1 + i % 2},"
                     f"住所 {i // 3},hh-{lgcode}-{i // 3},{'1' if head else ''},{'世帯主' if head else '子'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
async def test_two_municipalities_import_concurrently_while_reading(platform, tmp_path):
    await with_municipalities(platform)
    files = {}
    for lgcode in (CHIYODA, CHUO):
        files[lgcode] = tmp_path / f"{lgcode}.csv"
        write(files[lgcode], lgcode, ROWS)
    channels = {c: municipality_channel(platform.server.target(machine=True), platform.pki.root, c) for c in files}
    stop = asyncio.Event()
    reads = 0

    async def reader():
        nonlocal reads
        registry = stub(platform)
        for _ in range(2_000):  # bounded
            if stop.is_set():
                return
            await registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA, page_size=50))
            reads += 1

    started = time.perf_counter()
    reading = asyncio.create_task(reader())
    reports = await asyncio.wait_for(asyncio.gather(
        *(import_file(path, c, channels[c], batch_size=2000) for c, path in files.items())), timeout=600)
    elapsed = time.perf_counter() - started
    stop.set()
    await reading
    for channel in channels.values():
        await channel.close()
    for report in reports:
        assert report.complete and report.created == ROWS and report.rejected == []
    async with platform.db.read() as tx:
        for lgcode in files:
            assert await tx.scalar("SELECT count(*) FROM residents WHERE municipality_code = ?", (lgcode,)) == ROWS
            assert await tx.scalar("SELECT count(*) FROM households WHERE municipality_code = ?",
                                   (lgcode,)) == (ROWS + 2) // 3
    print(f"\nimported {2 * ROWS} rows in {elapsed:.1f}s ({2 * ROWS / elapsed:.0f} rows/s) with {reads} reads alongside")
