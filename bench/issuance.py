"""Kiosk issuance throughput: completed transactions per second with 50 concurrent simulated kiosks
(7 steps each, one PDF rendered per transaction), beside a bare bidirectional echo stream on
grpc.aio + uvloop measured in the same run; and the share of server CPU spent rendering PDFs.

`python -m bench.issuance` prints the rows; `make bench` puts them in the one table.
"""

from __future__ import annotations

import asyncio
from collections import Counter
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from bench.common import Row
from bench.harness import EchoServer, drive, stream_echo
from clients.kiosk import Kiosk, pb
from clients.pki import DevPki, SoftwareCard
from server.bootstrap import enrol_resident
from server.crypto.machine import MachineIdentity
from server.db import Database
from server.issuance.rules import KioskSettings
from server.procs import spawn_server
from server.testing import PASSWORD, PIN, holder

CONCURRENCY = 50
SECONDS = 5.0
CARDS = 10


class ChipCard:
    """A card whose PIN check happens "on the chip": the bench signs with the key directly, so the
    client core measures the server, not the software card's scrypt PIN hash."""

    def __init__(self, card: SoftwareCard) -> None:
        self._card = card
        self.auth_certificate_der = card.auth_certificate_der

    def sign_with_auth_key(self, data: bytes, pin: str) -> bytes:
        return self._card._keys["auth"].sign(data, padding.PKCS1v15(), hashes.SHA256())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _render_stats(path: Path) -> tuple[float, int]:
    if not path.exists():
        return 0.0, 0
    seconds, count = path.read_text().split()
    return float(seconds), int(count)


async def prepare(data: Path) -> list[ChipCard]:
    now = datetime.now(timezone.utc)
    pki = DevPki.ensure(data / "pki", now=now)
    db = await Database(data / "onestop.db").open()
    cards = []
    for i in range(CARDS):
        person = holder(f"山田 花子{i}")
        card = SoftwareCard.load(pki.issue_card(person, PIN, PASSWORD, f"bench-{i}", now=now))
        await enrol_resident(db, person, card, "131016", now=now)
        cards.append(ChipCard(card))
    # open around the clock, so the bench runs at any hour (the year-end closure still applies)
    async with db.write() as tx:
        await tx.execute("INSERT INTO kiosk_settings (municipality_code, settings_json, updated_at_ms)"
                         " VALUES ('131016', ?, 0)", (KioskSettings(open_minute=0, close_minute=1440).to_json(),))
    await db.close()
    return cards


async def echo_baseline(data: Path) -> float:
    with EchoServer(data / "pki") as echo:
        async with echo.channel() as channel:
            open_stream = stream_echo(channel)
            streams = [open_stream() for _ in range(CONCURRENCY)]
            payload = b"x" * 64

            async def round_trip(i: int) -> None:
                await streams[i].write(payload)
                await streams[i].read()

            result = await drive(round_trip, concurrency=CONCURRENCY, seconds=SECONDS)
            for s in streams:
                s.cancel()
    return result.per_second


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cards = await prepare(data)
        echo_rate = await echo_baseline(data)
        stats_file = data / "pdf-stats"
        server = await spawn_server(data, env={"ONESTOP_PDF_STATS_FILE": str(stats_file)})
        pki = DevPki.ensure(data / "pki", now=datetime.now(timezone.utc))
        channels, kiosks = [], []
        try:
            for i in range(CONCURRENCY):
                identity = MachineIdentity("kiosk", f"bench-{i:02d}", {"operator": "seven", "kind": "convenience_store"})
                cert, key = pki.machine(identity)
                credentials = grpc.ssl_channel_credentials(pki.ca_path.read_bytes(), key.read_bytes(),
                                                           cert.read_bytes())
                channels.append(grpc.aio.secure_channel(server.target(machine=True), credentials))
                kiosks.append(Kiosk(f"bench-{i:02d}", [channels[-1]]))
            order = pb.Order(certificate_type=pb.CERTIFICATE_TYPE_RESIDENT_RECORD, copies=1)
            refused: Counter[str] = Counter()

            async def transaction(i: int) -> None:
                result = await kiosks[i].transact(cards[i % CARDS], PIN, order)
                if not result.ok:
                    refused[result.refusal.reason if result.refusal else "NO_RECEIPT"] += 1

            # warm up, then measure the window's server CPU and PDF time
            await asyncio.gather(*(transaction(i) for i in range(CONCURRENCY)))
            cpu_before, (pdf_before, count_before) = _cpu_seconds(server.process.pid), _render_stats(stats_file)
            result = await drive(transaction, concurrency=CONCURRENCY, seconds=SECONDS, warmup=0)
            cpu_after, (pdf_after, count_after) = _cpu_seconds(server.process.pid), _render_stats(stats_file)
            for k in kiosks:
                await k.close()
        finally:
            for channel in channels:
                await channel.close()
            server.terminate()
    server_cpu = cpu_after - cpu_before
    pdf_seconds = pdf_after - pdf_before
    share = 100 * pdf_seconds / server_cpu if server_cpu and pdf_seconds else float("nan")
    steps = 7
    return [
        Row("bare grpc.aio bidi echo stream (TLS, uvloop)", echo_rate, "round trips/s", "itself", echo_rate,
            note=f"{CONCURRENCY} streams"),
        Row("kiosk transactions, 50 kiosks (PDF included)", result.per_second, "transactions/s",
            "bidi echo round trips", echo_rate,
            note=f"{steps} steps each = {result.per_second * steps:,.0f} steps/s; p50 {result.median_ms:.0f} ms,"
                 f" p99 {result.percentile(99):.0f} ms; refused {dict(refused) or 0}"),
        Row("kiosk steps (stream round trips with work)", result.per_second * steps, "steps/s",
            "bidi echo round trips", echo_rate, note="each step: one SQLite write transaction (+ RSA verify, PDF)"),
        Row("PDF rendering share of server CPU", share, "%", "server CPU", 100.0, higher_is_better=False,
            note=f"{count_after - count_before} PDFs, {1000 * pdf_seconds / max(1, count_after - count_before):.1f}"
                 f" ms each; server CPU {server_cpu:.1f} s in {result.seconds:.1f} s"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
