"""Notices: one notice into 100,000 inboxes, and live delivery latency to 1,000 stream subscribers.

1. A municipality of 100,000 residents (inserted straight into SQLite first). Time from SendNotice
   (audience: all residents) to its reply, which comes after the commit of every delivery (one
   INSERT ... SELECT with per-recipient text), beside a bare executemany of the same 100,000 rows into
   a table of the same shape, in the same database, in the same run.
2. 1,000 residents (sessions inserted directly) each hold a StreamNotices stream (10 channels,
   loopback TLS, the server in its own process). Five notices are sent to all of them; the latency of
   each delivery from just before SendNotice, p50/p99, beside the SendNotice reply time itself.
3. 200 of them subscribe on a second server process on the same database while the notices go
   through the first: delivery by the second process's poller, beside the same-process figure.

`python -m bench.notification` prints the rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from onestop.notification.v1 import notification_pb2 as pb
from onestop.notification.v1 import notification_pb2_grpc as pb_grpc

from bench.common import Row
from clients.pki import DevPki
from server.crypto.machine import MachineIdentity
from server.db import Database
from server.procs import spawn_server

BIG_LG, BIG_N = "131016", 100_000
LIVE_LG, LIVE_N = "131024", 1_000
CHANNELS = 10
ROUNDS = 5
CROSS_N = 200  # subscribers on a second server process (same database) for the cross-process figure
ROUND_TIMEOUT = 30.0


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def prepare(data: Path) -> list[str]:
    """Registry rows for both municipalities and 1,000 resident sessions; returns their tokens."""
    now_ms = int(time.time() * 1000)
    db = await Database(data / "onestop.db").open()
    tokens = []
    async with db.write() as tx:
        for lg in (BIG_LG, LIVE_LG):
            await tx.execute("INSERT OR IGNORE INTO municipalities (code, prefecture, name, name_kana)"
                             " VALUES (?, '東京都', ?, '')", (lg, lg))
        await tx.executemany(
            "INSERT INTO residents (resident_id, municipality_code, name, birth_date, sex, address, updated_at_ms)"
            " VALUES (?, ?, ?, '1980-01-01', '1', '東京都', ?)",
            [(f"res_big_{i:06d}", BIG_LG, f"住民 {i}", now_ms) for i in range(BIG_N)])
        await tx.executemany(
            "INSERT INTO residents (resident_id, municipality_code, name, birth_date, sex, address, updated_at_ms)"
            " VALUES (?, ?, ?, '1980-01-01', '1', '東京都', ?)",
            [(f"res_live_{i:04d}", LIVE_LG, f"購読者 {i}", now_ms) for i in range(LIVE_N)])
        for i in range(LIVE_N):
            token = "osa_" + secrets.token_urlsafe(32)
            tokens.append(token)
            await tx.execute(
                "INSERT INTO sessions (session_id, resident_id, access_hash, refresh_hash, created_at_ms, last_seen_ms,"
                " access_expires_ms, absolute_expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"ses_live_{i}", f"res_live_{i:04d}", hashlib.sha256(token.encode()).digest(),
                 hashlib.sha256(f"r{token}".encode()).digest(), now_ms, now_ms, now_ms + 3_600_000,
                 now_ms + 3_600_000))
    await db.close()
    return tokens


def bare_bulk_insert(db_path: Path) -> float:
    """The same 100,000 delivery rows, already rendered in Python, by executemany into a same-shaped table."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE bench_bare_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, notice_id TEXT NOT NULL,"
        " resident_id TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, delivered_at_ms INTEGER NOT NULL,"
        " read_at_ms INTEGER, UNIQUE (notice_id, resident_id))")
    conn.execute("CREATE INDEX bench_bare_inbox ON bench_bare_deliveries(resident_id, seq)")
    now_ms = int(time.time() * 1000)
    rows = [("ntc_bare", f"res_big_{i:06d}", "お知らせ", f"住民 {i} 様\n年末年始の窓口のご案内です。", now_ms)
            for i in range(BIG_N)]
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO bench_bare_deliveries (notice_id, resident_id, title, body, delivered_at_ms)"
                     " VALUES (?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        pki = DevPki.ensure(data / "pki", now=datetime.now(timezone.utc))
        tokens = await prepare(data)
        bare_s = bare_bulk_insert(data / "onestop.db")
        server = await spawn_server(data, env={"ONESTOP_NOTIFICATION_SCHEDULER": "off"})
        try:
            ca = (data / "pki" / "ca.pem").read_bytes()
            cert, key = pki.machine(MachineIdentity("municipality", BIG_LG, {}))
            cert2, key2 = pki.machine(MachineIdentity("municipality", LIVE_LG, {}))
            staff_big = grpc.aio.secure_channel(server.target(machine=True), grpc.ssl_channel_credentials(
                ca, key.read_bytes(), cert.read_bytes()))
            staff_live = grpc.aio.secure_channel(server.target(machine=True), grpc.ssl_channel_credentials(
                ca, key2.read_bytes(), cert2.read_bytes()))
            residents = [grpc.aio.secure_channel(server.target(), grpc.ssl_channel_credentials(ca))
                         for _ in range(CHANNELS)]
            try:
                big = pb_grpc.NotificationServiceStub(staff_big)
                started = time.perf_counter()
                sent = await big.SendNotice(pb.SendNoticeRequest(
                    request_id="bench-big", municipality_code=BIG_LG, category="general", title="お知らせ",
                    body="{name} 様\n年末年始の窓口のご案内です。", audience=pb.Audience(all_residents=pb.Audience.AllResidents())),
                    timeout=300)
                fan_out_s = time.perf_counter() - started
                assert sent.notice.delivered_count == BIG_N, sent.notice.delivered_count
                live = await live_latency(pb_grpc.NotificationServiceStub(staff_live), residents, tokens)
                # Subscribers on a second process, notices sent through the first: delivery by polling.
                other = await spawn_server(data, env={"ONESTOP_NOTIFICATION_SCHEDULER": "off"})
                remote = [grpc.aio.secure_channel(other.target(), grpc.ssl_channel_credentials(ca))
                          for _ in range(2)]
                try:
                    cross = await live_latency(pb_grpc.NotificationServiceStub(staff_live), remote,
                                               tokens[:CROSS_N], prefix="cross")
                finally:
                    for channel in remote:
                        await channel.close()
                    other.terminate()
            finally:
                for channel in (staff_big, staff_live, *residents):
                    await channel.close()
        finally:
            server.terminate()
    latencies, replies = live
    cross_latencies, _ = cross
    reply_p50 = statistics.median(replies)
    return [
        Row(f"notice into {BIG_N:,} inboxes (SendNotice, all residents)", fan_out_s * 1000, "ms",
            "bare executemany of the same rows", bare_s * 1000, higher_is_better=False,
            note="reply after the last chunk commits (INSERT ... SELECT, 10,000 per transaction, per-recipient {name})"),
        Row(f"live delivery to {LIVE_N:,} streams, p50", _pct(latencies, 50), "ms",
            "SendNotice reply p50", reply_p50, higher_is_better=False,
            note=f"{len(latencies)} deliveries over {ROUNDS} notices; poll 200 ms, local poke"),
        Row(f"live delivery to {LIVE_N:,} streams, p99", _pct(latencies, 99), "ms",
            "SendNotice reply p50", reply_p50, higher_is_better=False, note="from just before SendNotice"),
        Row(f"cross-process delivery to {CROSS_N} streams on process B, p50", _pct(cross_latencies, 50), "ms",
            "same-process delivery p50", _pct(latencies, 50), higher_is_better=False,
            note=f"sent through process A; B polls every 200 ms; p99 {_pct(cross_latencies, 99):.0f} ms"),
    ]


async def live_latency(staff, channels, tokens, prefix: str = "live") -> tuple[list[float], list[float]]:
    """Open a stream per token, send ROUNDS notices to all of them, collect each arrival's latency."""
    subscribers = len(tokens)
    arrivals: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    all_in: dict[str, asyncio.Event] = {}
    calls = []

    def expect(notice_key: str) -> asyncio.Event:
        all_in.setdefault(notice_key, asyncio.Event())
        return all_in[notice_key]

    async def subscriber(i: int) -> None:
        stub = pb_grpc.NotificationServiceStub(channels[i % len(channels)])
        call = stub.StreamNotices(pb.StreamNoticesRequest(after_cursor=0),
                                  metadata=(("authorization", f"Bearer {tokens[i]}"),))
        calls.append(call)
        async for message in call:
            now = time.perf_counter()
            key = message.notice.title
            arrivals.setdefault(key, []).append(now)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] == subscribers:
                expect(key).set()

    tasks = [asyncio.create_task(subscriber(i)) for i in range(subscribers)]
    try:
        # Warm-up: everyone receives one notice, which proves every stream is subscribed.
        await staff.SendNotice(pb.SendNoticeRequest(
            request_id=f"{prefix}-warm", municipality_code=LIVE_LG, title=f"{prefix} warm", body="{name}",
            audience=pb.Audience(all_residents=pb.Audience.AllResidents())))
        await asyncio.wait_for(expect(f"{prefix} warm").wait(), ROUND_TIMEOUT * 2)
        latencies, replies = [], []
        for r in range(ROUNDS):
            key = f"{prefix} round {r}"
            expect(key)
            started = time.perf_counter()
            await staff.SendNotice(pb.SendNoticeRequest(
                request_id=f"{prefix}-{r}", municipality_code=LIVE_LG, title=key, body="{name} 様",
                audience=pb.Audience(all_residents=pb.Audience.AllResidents())))
            replies.append((time.perf_counter() - started) * 1000)
            await asyncio.wait_for(all_in[key].wait(), ROUND_TIMEOUT)
            latencies += [(t - started) * 1000 for t in arrivals[key]]
        return latencies, replies
    finally:
        for call in calls:
            call.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
