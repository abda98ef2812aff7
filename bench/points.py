"""Points ledger throughput: transfers per second with 50 concurrent clients over real gRPC.

Measured in the same run, on the same machine, in interleaved rounds (best of each kept):
  (a) a naive loop, one aiosqlite transaction per transfer (the same rows written), 50 tasks;
  (b) a bare grpc.aio unary echo on uvloop (bench.harness.EchoServer), 50 clients;
and the ledger's own group-committing writer in-process (no network), to show what the write path
can take apart from the RPC stack, and a machine WhoAmI on the same server (interceptors, mTLS, no
storage) as the floor any RPC of this server stands on. `python -m bench.points` prints the rows.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from bench.common import Row
from bench.harness import EchoServer, drive, unary_echo
from clients.pki import DevPki
from server.clock import SystemClock, to_epoch_ms
from server.crypto.machine import MachineIdentity
from server.db import Database
from server.points import ledger
from server.points.writer import BatchWriter
from server.procs import spawn_server
from server.testing import client_credentials

CONCURRENCY = 50
SECONDS = 2.0
ROUNDS = 3
LG = "131016"
MYKEYS = [f"BENCH{i:03d}" for i in range(CONCURRENCY)]


async def prepare(data: Path) -> DevPki:
    pki = DevPki.ensure(data / "pki", now=datetime.now(timezone.utc))
    db = await Database(data / "onestop.db").open()
    async with db.write() as tx:
        await tx.execute("INSERT OR IGNORE INTO municipalities (code, prefecture, name, name_kana) VALUES (?, '', '', '')",
                         (LG,))
        for i, mykey in enumerate(MYKEYS):
            await tx.execute("INSERT INTO residents (resident_id, municipality_code, name, birth_date, sex, address,"
                             " updated_at_ms) VALUES (?, ?, 'bench', '1990-01-01', '1', 'bench', 0)", (f"res_{i}", LG))
            await tx.execute("INSERT INTO mykeys (mykey_id, resident_id, auth_issuer, auth_serial, created_at_ms)"
                             " VALUES (?, ?, 'CN=bench', ?, 0)", (mykey, f"res_{i}", f"{i:04x}"))
    await db.close()
    return pki


class Naive:
    """Baseline (a): the same rows written, one BEGIN IMMEDIATE ... COMMIT per transfer (aiosqlite)."""

    def __init__(self, data: Path) -> None:
        self.path = data / "naive.db"
        self.counter = iter(range(10**9))

    async def open(self) -> "Naive":
        self.db = await Database(self.path).open()
        async with self.db.write() as tx:
            await tx.execute("INSERT INTO points_accounts (account_id, kind, owner, municipality_code) VALUES"
                             " (1, 'issuance', '', ?)", (LG,))
            for i, mykey in enumerate(MYKEYS):
                await tx.execute("INSERT INTO mykeys VALUES (?, ?, 'CN=bench', ?, 0, NULL)", (mykey, f"res_{i}", str(i)))
                await tx.execute("INSERT INTO points_accounts (account_id, kind, owner, municipality_code) VALUES"
                                 " (?, 'resident', ?, ?)", (i + 2, mykey, LG))
        return self

    async def transfer(self, i: int) -> None:
        n = next(self.counter)
        now = to_epoch_ms(datetime.now(timezone.utc))
        async with self.db.write() as tx:
            if await tx.one("SELECT 1 FROM points_requests WHERE caller='b' AND method='g' AND request_id=?",
                            (str(n),)):
                return
            await tx.execute("UPDATE points_accounts SET balance = balance - 1 WHERE account_id = 1")
            await tx.execute("UPDATE points_accounts SET balance = balance + 1 WHERE account_id = ?", (i + 2,))
            await tx.execute("INSERT INTO points_transfers (transfer_id, debit_account_id, credit_account_id, amount,"
                             " code, created_at_ms) VALUES (?, 1, ?, 1, 'grant', ?)", (f"t{n}", i + 2, now))
            await tx.execute("INSERT INTO points_lots (account_id, amount, remaining, granted_at_ms, expires_at_ms)"
                             " VALUES (?, 1, 1, ?, ?)", (i + 2, now, now + 1))
            await tx.execute("INSERT INTO points_requests VALUES ('b', 'g', ?, x'00', 0, x'00', ?)", (str(n), now))


class InProcess:
    """The batch writer alone (no RPC): what the group-committing write path takes."""

    def __init__(self, data: Path) -> None:
        self.path = data / "writer.db"
        self.counter = iter(range(10**9))

    async def open(self) -> "InProcess":
        db = await Database(self.path).open()
        async with db.write() as tx:
            for i, mykey in enumerate(MYKEYS):
                await tx.execute("INSERT INTO mykeys VALUES (?, ?, 'CN=bench', ?, 0, NULL)", (mykey, f"res_{i}", str(i)))
        await db.close()
        self.writer = BatchWriter(self.path, SystemClock())
        return self

    async def transfer(self, i: int) -> None:
        request = pb.GrantPointsRequest(request_id=f"w{next(self.counter)}", municipality_code=LG, mykey_id=MYKEYS[i],
                                        amount=1)
        await self.writer.submit(("bench", "Grant", request.request_id), request, pb.GrantPointsResponse,
                                 lambda conn, now: ledger.grant(conn, now, LG, MYKEYS[i], 1))


async def measure() -> list[Row]:
    """ROUNDS rounds, each measuring every figure in turn; the best of each is kept, so that load from
    other processes on a shared machine penalises no figure more than another."""
    best: dict[str, object] = {}

    def keep(name: str, result) -> None:
        if name not in best or result.per_second > best[name].per_second:
            best[name] = result

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        pki = await prepare(data)
        naive = await Naive(data).open()
        in_process = await InProcess(data).open()
        server = await spawn_server(data, env={"ONESTOP_LOG_LEVEL": "WARNING"})
        try:
            with EchoServer(data / "pki") as echo:
                credentials = client_credentials(pki, MachineIdentity("municipality", LG, {}))
                async with echo.channel() as echo_channel, \
                        grpc.aio.secure_channel(server.target(machine=True), credentials) as channel:
                    call = unary_echo(echo_channel)
                    stub = points_pb2_grpc.PointsServiceStub(channel)
                    auth = auth_pb2_grpc.AuthServiceStub(channel)
                    counter = iter(range(10**9))

                    async def grant(i: int) -> None:
                        await stub.GrantPoints(pb.GrantPointsRequest(
                            request_id=f"g{next(counter)}", municipality_code=LG, mykey_id=MYKEYS[i], amount=1))

                    started = time.perf_counter()
                    for _ in range(ROUNDS):
                        keep("echo", await drive(lambda i: call(b"x" * 32), concurrency=CONCURRENCY, seconds=SECONDS))
                        keep("grpc", await drive(grant, concurrency=CONCURRENCY, seconds=SECONDS))
                        keep("floor", await drive(lambda i: auth.WhoAmI(auth_pb2.WhoAmIRequest()),
                                                  concurrency=CONCURRENCY, seconds=SECONDS))
                        keep("naive", await drive(naive.transfer, concurrency=CONCURRENCY, seconds=SECONDS))
                        keep("writer", await drive(in_process.transfer, concurrency=CONCURRENCY, seconds=SECONDS))
                        assert time.perf_counter() - started < 120
        finally:
            server.terminate()
            await naive.db.close()
            in_process.writer.close()
    echo_rate, rate, naive_rate = best["echo"].per_second, best["grpc"].per_second, best["naive"].per_second
    grpc_result = best["grpc"]
    note = f"p50 {grpc_result.median_ms:.1f} ms p99 {grpc_result.percentile(99):.1f} ms; best of {ROUNDS} rounds"
    writer = in_process.writer
    return [
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s", "unary echo", echo_rate,
            goal=0.6, note=note),
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s",
            "naive 1 tx/transfer (aiosqlite)", naive_rate, note="same run"),
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s",
            "machine WhoAmI, same server (no storage)", best["floor"].per_second,
            note="what the ledger costs over the RPC stack's own floor"),
        Row("points batch writer in-process (group commit)", best["writer"].per_second, "transfers/s",
            "naive 1 tx/transfer (aiosqlite)", naive_rate,
            note=f"mean batch {writer.jobs / max(writer.batches, 1):.1f} transfers"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
