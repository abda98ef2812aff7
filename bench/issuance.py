"""Kiosk issuance throughput: completed transactions per second with 50 concurrent simulated kiosks
(7 steps each, one PDF rendered per transaction), beside a bare bidirectional echo stream on
grpc.aio + uvloop measured in the same run (the two alternate in short rounds); the server's and
the client's CPU per transaction (the 50 kiosks run in this process, on the machine's other core),
beside seven echo round trips' CPU; and the share of server CPU spent rendering PDFs.

`python -m bench.issuance` prints the rows; `make bench` puts them in the one table.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from bench.common import Row
from bench.harness import EchoServer, Throughput, cpu_seconds, drive, stream_echo
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


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the server's PDF worker and multiprocessing's helper)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU of `pid` and its children, CPU of the children alone): the server's CPU includes what
    its PDF worker process spends."""
    helpers = 0.0
    for child in children(pid):
        try:
            helpers += cpu_seconds(child)
        except OSError:
            pass
    return cpu_seconds(pid) + helpers, helpers


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


ROUNDS = 3
ROUND_SECONDS = SECONDS / 2  # per subject: ROUNDS x ROUND_SECONDS, echo and kiosks alternating


@dataclass
class Tally:
    """One subject's totals over its rounds."""

    calls: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    helper_cpu: float = 0.0  # the server's child processes (PDF worker), included in server_cpu
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, run: Throughput, server_cpu: float, client_cpu: float, helper_cpu: float = 0.0) -> None:
        self.calls += run.calls
        self.seconds += run.seconds
        self.server_cpu += server_cpu
        self.client_cpu += client_cpu
        self.helper_cpu += helper_cpu
        self.latencies_ms += run.latencies_ms

    @property
    def result(self) -> Throughput:
        return Throughput(self.calls, self.seconds, self.latencies_ms, self.server_cpu)


async def measured(call, *, server_pid: int) -> tuple[Throughput, float, float, float]:
    """One round: (throughput, server CPU seconds with its child processes, this client process's
    CPU seconds, the server's child processes' CPU seconds)."""
    me = os.getpid()
    (server_before, helpers_before), client_before = tree_cpu_seconds(server_pid), cpu_seconds(me)
    run = await drive(call, concurrency=CONCURRENCY, seconds=ROUND_SECONDS, warmup=0)
    server_after, helpers_after = tree_cpu_seconds(server_pid)
    return run, server_after - server_before, cpu_seconds(me) - client_before, helpers_after - helpers_before


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cards = await prepare(data)
        stats_file = data / "pdf-stats"
        server = await spawn_server(data, env={"ONESTOP_PDF_STATS_FILE": str(stats_file)})
        pki = DevPki.ensure(data / "pki", now=datetime.now(timezone.utc))
        channels, kiosks = [], []
        echo_tally, kiosk_tally = Tally(), Tally()
        refused: Counter[str] = Counter()
        pdf_seconds, pdf_count = 0.0, 0
        try:
            with EchoServer(data / "pki") as echo:
                echo_channel = echo.channel()
                open_stream = stream_echo(echo_channel)
                streams = [open_stream() for _ in range(CONCURRENCY)]
                payload = b"x" * 64

                async def round_trip(i: int) -> None:
                    await streams[i].write(payload)
                    await streams[i].read()

                for i in range(CONCURRENCY):
                    identity = MachineIdentity("kiosk", f"bench-{i:02d}",
                                               {"operator": "seven", "kind": "convenience_store"})
                    cert, key = pki.machine(identity)
                    credentials = grpc.ssl_channel_credentials(pki.ca_path.read_bytes(), key.read_bytes(),
                                                               cert.read_bytes())
                    channels.append(grpc.aio.secure_channel(server.target(machine=True), credentials))
                    kiosks.append(Kiosk(f"bench-{i:02d}", [channels[-1]]))
                order = pb.Order(certificate_type=pb.CERTIFICATE_TYPE_RESIDENT_RECORD, copies=1)

                async def transaction(i: int) -> None:
                    result = await kiosks[i].transact(cards[i % CARDS], PIN, order)
                    if not result.ok:
                        refused[result.refusal.reason if result.refusal else "NO_RECEIPT"] += 1

                # warm up both, then alternate short rounds so that load from elsewhere on the
                # machine falls on both subjects alike
                await drive(round_trip, concurrency=CONCURRENCY, seconds=0.5)
                await asyncio.gather(*(transaction(i) for i in range(CONCURRENCY)))
                for _ in range(ROUNDS):
                    echo_tally.add(*await measured(round_trip, server_pid=echo.pid))
                    pdf_before, count_before = _render_stats(stats_file)
                    kiosk_tally.add(*await measured(transaction, server_pid=server.process.pid))
                    pdf_after, count_after = _render_stats(stats_file)
                    pdf_seconds += pdf_after - pdf_before
                    pdf_count += count_after - count_before
                for s in streams:
                    s.cancel()
                await echo_channel.close()
                for k in kiosks:
                    await k.close()
        finally:
            for channel in channels:
                await channel.close()
            server.terminate()
    steps = 7
    echo, result = echo_tally.result, kiosk_tally.result
    echo_rate = echo.per_second
    server_ms = 1000 * kiosk_tally.server_cpu / max(1, result.calls)
    client_ms = 1000 * kiosk_tally.client_cpu / max(1, result.calls)
    echo_server_ms = 1000 * echo_tally.server_cpu / max(1, echo.calls)
    share = 100 * pdf_seconds / kiosk_tally.server_cpu if kiosk_tally.server_cpu and pdf_seconds else float("nan")
    window = f"{ROUNDS} rounds of {ROUND_SECONDS:g} s, interleaved with the echo"
    return [
        Row("bare grpc.aio bidi echo stream (TLS, uvloop)", echo_rate, "round trips/s", "itself", echo_rate,
            note=f"{CONCURRENCY} streams; server CPU {1000 * echo_server_ms:.0f} µs/round trip;"
                 f" client CPU {1e6 * echo_tally.client_cpu / max(1, echo.calls):.0f} µs/round trip"),
        Row("kiosk transactions, 50 kiosks (PDF included)", result.per_second, "transactions/s",
            "bidi echo round trips", echo_rate,
            note=f"{steps} steps each = {result.per_second * steps:,.0f} steps/s; p50 {result.median_ms:.0f} ms,"
                 f" p99 {result.percentile(99):.0f} ms; refused {dict(refused) or 0}; {window}"),
        Row("kiosk transactions against the issue's goal", result.per_second, "transactions/s",
            "issue 7 goal (100/s)", 100.0, goal=1.0,
            note="the goal as a ratio, beside the echo ratio above (not a baseline measured in the run)"),
        Row("kiosk steps (stream round trips with work)", result.per_second * steps, "steps/s",
            "bidi echo round trips", echo_rate, note="steps arriving together share one SQLite write transaction (group commit; + RSA verify, PDF)"),
        Row("kiosk transaction, server CPU per transaction", server_ms, "ms", "7 bidi echo round trips, server CPU",
            steps * echo_server_ms, higher_is_better=False,
            note=f"server CPU {kiosk_tally.server_cpu:.1f} s in {result.seconds:.1f} s"
                 f" ({100 * kiosk_tally.server_cpu / max(result.seconds, 1e-9):.0f}% of one core), of which its PDF"
                 f" worker process {1000 * kiosk_tally.helper_cpu / max(1, result.calls):.1f} ms/transaction"),
        Row("kiosk transaction, client CPU per transaction", client_ms, "ms", "7 bidi echo round trips, client CPU",
            steps * 1000 * echo_tally.client_cpu / max(1, echo.calls), higher_is_better=False,
            note=f"the 50 simulated kiosks in this process (RSA signing, 7 steps, sha256 check of each PDF before printing);"
                 f" client CPU {kiosk_tally.client_cpu:.1f} s in {result.seconds:.1f} s"),
        Row("PDF rendering share of server CPU", share, "%", "server CPU", 100.0, higher_is_better=False,
            note=f"{pdf_count} PDFs, {1000 * pdf_seconds / max(1, pdf_count):.2f} ms each"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
