"""Points ledger throughput: transfers per second with 50 concurrent clients over real gRPC.

Measured in the same run, on the same machine, in interleaved rounds (best of each kept):
  (a) a naive loop, one aiosqlite transaction per transfer (the same rows written), 50 tasks;
  (a') the same naive loop through the platform's own `db.write()` (plain sqlite3 on the loop's
       thread since the lead's db change), beside (a), never instead of it;
  (b) a bare grpc.aio unary echo on uvloop (bench.harness.EchoServer), 50 clients;
and the ledger's own group-committing writer in-process (no network), to show what the write path
can take apart from the RPC stack, and a machine WhoAmI on the same server (interceptors, mTLS, no
storage) as the floor any RPC of this server stands on. Server CPU per call (all rounds) is
reported for GrantPoints, WhoAmI and the echo: unlike calls per second it hardly moves with other
load on a shared machine. `python -m bench.points` prints the rows.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiosqlite
import grpc
import uvloop
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from bench.common import Row
from bench.harness import EchoServer, cpu_seconds, drive, unary_echo
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


class _AiosqliteTx:
    """The two `Tx` calls the naive loop uses, as `server.db.Tx` made them over aiosqlite before the
    database moved to plain sqlite3 on the loop's thread (one trip to aiosqlite's thread a SELECT,
    two a change)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params=()) -> int:
        cursor = await self.conn.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def one(self, sql: str, params=()):
        rows = await self.conn.execute_fetchall(sql, params)
        return rows[0] if rows else None


class Naive:
    """Baseline (a): the same rows written, one BEGIN IMMEDIATE ... COMMIT per transfer over aiosqlite,
    as issue #7 defines the naive SQLite loop (kept on aiosqlite although server.db left it)."""

    def __init__(self, data: Path, file: str = "naive.db") -> None:
        self.path = data / file
        self.counter = iter(range(10**9))

    async def open(self) -> "Naive":
        db = await Database(self.path).open()  # the schema
        async with db.write() as tx:
            await tx.execute("INSERT INTO points_accounts (account_id, kind, owner, municipality_code) VALUES"
                             " (1, 'issuance', '', ?)", (LG,))
            for i, mykey in enumerate(MYKEYS):
                await tx.execute("INSERT INTO mykeys VALUES (?, ?, 'CN=bench', ?, 0, NULL)", (mykey, f"res_{i}", str(i)))
                await tx.execute("INSERT INTO points_accounts (account_id, kind, owner, municipality_code) VALUES"
                                 " (?, 'resident', ?, ?)", (i + 2, mykey, LG))
        await db.close()
        await self._open_writer()
        return self

    async def _open_writer(self) -> None:
        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL",
                       "PRAGMA busy_timeout=30000"):
            await self.conn.execute(pragma)
        self.lock = asyncio.Lock()  # the process's one writer connection, as server.db had it

    async def close(self) -> None:
        await self.conn.close()

    async def transfer(self, i: int) -> None:
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                await self.rows(_AiosqliteTx(self.conn), i)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    async def rows(self, tx, i: int) -> None:
        n = next(self.counter)
        now = to_epoch_ms(datetime.now(timezone.utc))
        if await tx.one("SELECT 1 FROM points_requests WHERE caller='b' AND method='g' AND request_id=?", (str(n),)):
            return
        await tx.execute("UPDATE points_accounts SET balance = balance - 1 WHERE account_id = 1")
        await tx.execute("UPDATE points_accounts SET balance = balance + 1 WHERE account_id = ?", (i + 2,))
        await tx.execute("INSERT INTO points_transfers (transfer_id, debit_account_id, credit_account_id, amount,"
                         " code, created_at_ms) VALUES (?, 1, ?, 1, 'grant', ?)", (f"t{n}", i + 2, now))
        await tx.execute("INSERT INTO points_lots (account_id, amount, remaining, granted_at_ms, expires_at_ms)"
                         " VALUES (?, 1, 1, ?, ?)", (i + 2, now, now + 1))
        await tx.execute("INSERT INTO points_requests VALUES ('b', 'g', ?, x'00', 0, x'00', ?)", (str(n), now))


class NaiveOnDbWrite(Naive):
    """Baseline (a'): the same naive loop through the platform's own `db.write()` and `Tx`."""

    def __init__(self, data: Path) -> None:
        super().__init__(data, "naive_dbwrite.db")

    async def _open_writer(self) -> None:
        self.db = await Database(self.path).open()

    async def close(self) -> None:
        await self.db.close()

    async def transfer(self, i: int) -> None:
        async with self.db.write() as tx:
            await self.rows(tx, i)


class InProcess:
    """The batch writer alone (no RPC): what the group-committing write path takes."""

    def __init__(self, data: Path) -> None:
        self.path = data / "writer.db"
        self.counter = iter(range(10**9))

    async def open(self) -> "InProcess":
        self.db = await Database(self.path).open()
        async with self.db.write() as tx:
            for i, mykey in enumerate(MYKEYS):
                await tx.execute("INSERT INTO mykeys VALUES (?, ?, 'CN=bench', ?, 0, NULL)", (mykey, f"res_{i}", str(i)))
        self.writer = BatchWriter(self.db, SystemClock())
        return self

    async def close(self) -> None:
        await self.writer.aclose()
        await self.db.close()

    async def transfer(self, i: int) -> None:
        request = pb.GrantPointsRequest(request_id=f"w{next(self.counter)}", municipality_code=LG, mykey_id=MYKEYS[i],
                                        amount=1)
        await self.writer.submit(("bench", "Grant", request.request_id), request, pb.GrantPointsResponse,
                                 lambda conn, now: ledger.grant(conn, now, LG, MYKEYS[i], 1))


async def measure() -> list[Row]:
    """ROUNDS rounds, each measuring every figure in turn; the best of each is kept, so that load from
    other processes on a shared machine penalises no figure more than another. Server CPU per call
    is summed over all rounds."""
    best: dict[str, object] = {}
    cpu = {"echo": [0.0, 0], "grpc": [0.0, 0], "floor": [0.0, 0]}  # CPU seconds, calls

    async def keep(name: str, call, pid: int | None = None) -> None:
        before = cpu_seconds(pid) if pid else 0.0
        result = await drive(call, concurrency=CONCURRENCY, seconds=SECONDS)
        if pid:
            cpu[name][0] += cpu_seconds(pid) - before
            cpu[name][1] += result.calls
        if name not in best or result.per_second > best[name].per_second:
            best[name] = result

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        pki = await prepare(data)
        naive = await Naive(data).open()
        naive_db = await NaiveOnDbWrite(data).open()
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
                        await keep("echo", lambda i: call(b"x" * 32), echo.pid)
                        await keep("grpc", grant, server.process.pid)
                        await keep("floor", lambda i: auth.WhoAmI(auth_pb2.WhoAmIRequest()), server.process.pid)
                        await keep("naive", naive.transfer)
                        await keep("naive_db", naive_db.transfer)
                        await keep("writer", in_process.transfer)
                        assert time.perf_counter() - started < 150
        finally:
            server.terminate()
            await naive.close()
            await naive_db.close()
            await in_process.close()
    echo_rate, rate, naive_rate = best["echo"].per_second, best["grpc"].per_second, best["naive"].per_second
    us = {name: seconds / calls * 1e6 if calls else float("nan") for name, (seconds, calls) in cpu.items()}
    grpc_result = best["grpc"]
    note = f"p50 {grpc_result.median_ms:.1f} ms p99 {grpc_result.percentile(99):.1f} ms; best of {ROUNDS} rounds"
    writer = in_process.writer
    return [
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s", "unary echo", echo_rate,
            goal=0.6, note=note),
        Row("points transfer, server CPU per transfer", us["grpc"], "µs", "unary echo", us["echo"], goal=0.6,
            higher_is_better=False, note=f"capacity ratio, robust to machine load; all {ROUNDS} rounds"),
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s",
            "naive 1 tx/transfer (aiosqlite)", naive_rate, note="same run"),
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s",
            "naive 1 tx/transfer (db.write(), sqlite3 on the loop)", best["naive_db"].per_second,
            note="added beside the aiosqlite row: the same loop on today's server.db"),
        Row("points transfers over gRPC (GrantPoints, 50 clients)", rate, "transfers/s",
            "machine WhoAmI, same server (no storage)", best["floor"].per_second,
            note="what the ledger costs over the RPC stack's own floor"),
        Row("points transfer, server CPU per transfer", us["grpc"], "µs", "machine WhoAmI, same server",
            us["floor"], higher_is_better=False, note="the ledger's CPU over the RPC stack's own"),
        Row("points batch writer in-process (group commit)", best["writer"].per_second, "transfers/s",
            "naive 1 tx/transfer (aiosqlite)", naive_rate,
            note=f"mean batch {writer.jobs / max(writer.batches, 1):.1f} transfers"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
