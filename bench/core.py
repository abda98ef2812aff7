"""Framework figures: the cheapest authenticated read and card sign-in, beside a bare unary echo.

`python -m bench.core` prints the rows; `make bench` puts them in the one table.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from bench.common import Row
from bench.harness import EchoServer, interleaved, unary_echo
from bench.issuance import ChipCard
from clients.pki import DevPki, SoftwareCard
from server.bootstrap import enrol_resident
from server.db import Database
from server.procs import spawn_server
from server.testing import PASSWORD, PIN, holder

CONCURRENCY = 50
SECONDS = 1.0
ROUNDS = 4


async def prepare(data: Path) -> SoftwareCard:
    now = datetime.now(timezone.utc)
    pki = DevPki.ensure(data / "pki", now=now)
    card = SoftwareCard.load(pki.issue_card(holder(), PIN, PASSWORD, "bench", now=now))
    db = await Database(data / "onestop.db").open()
    await enrol_resident(db, holder(), card, "131016", now=now)
    await db.close()
    return card


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        card = await prepare(data)
        server = await spawn_server(data, env={"ONESTOP_LOG_LEVEL": "WARNING"})
        try:
            with EchoServer(data / "pki") as echo:
                credentials = grpc.ssl_channel_credentials((data / "pki" / "ca.pem").read_bytes())
                async with echo.channel() as echo_channel, \
                        grpc.aio.secure_channel(server.target(), credentials) as channel:
                    echo_call = unary_echo(echo_channel)
                    stub = auth_pb2_grpc.AuthServiceStub(channel)
                    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
                    session = (await stub.SignIn(auth_pb2.SignInRequest(
                        request_id="bench", challenge_id=challenge.challenge_id,
                        certificate=card.auth_certificate_der,
                        signature=card.sign_with_auth_key(challenge.nonce, PIN)))).session
                    metadata = (("authorization", f"Bearer {session.access_token}"),)

                    # A real card checks its PIN on the chip: sign with the key directly, so the
                    # harness's core is not spent on the software card's scrypt PIN hash.
                    chip = ChipCard(card)

                    async def sign_in(i: int) -> None:
                        c = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
                        # The card signs on the client, as a phone's card reader would.
                        await stub.SignIn(auth_pb2.SignInRequest(
                            request_id=c.challenge_id, challenge_id=c.challenge_id,
                            certificate=chip.auth_certificate_der, signature=chip.sign_with_auth_key(c.nonce, PIN)))

                    results = await interleaved({
                        "echo": lambda i: echo_call(b"x" * 32),
                        "read": lambda i: stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=metadata),
                        "anonymous": lambda i: stub.WhoAmI(auth_pb2.WhoAmIRequest()),
                        "sign_in": sign_in,
                    }, pids={"echo": echo.pid, "read": server.process.pid, "anonymous": server.process.pid,
                             "sign_in": server.process.pid},
                        rounds=ROUNDS, seconds=SECONDS, concurrency=CONCURRENCY)
        finally:
            server.terminate()
    baseline, read, anonymous, sign = results["echo"], results["read"], results["anonymous"], results["sign_in"]
    echo_rate, echo_cpu = baseline.per_second, baseline.server_cpu_us_per_call
    return [
        Row("bare grpc.aio unary echo (TLS, uvloop)", echo_rate, "calls/s", "itself", echo_rate,
            note=f"p50 {baseline.median_ms:.1f} ms; server CPU {echo_cpu:.0f} µs/call"),
        Row("authenticated read (WhoAmI, bearer)", read.per_second, "calls/s", "unary echo", echo_rate, goal=0.7,
            note=f"p50 {read.median_ms:.1f} ms p99 {read.percentile(99):.1f} ms"),
        Row("authenticated read, server CPU per call", read.server_cpu_us_per_call, "µs", "unary echo",
            echo_cpu, goal=0.7, higher_is_better=False, note="capacity ratio, robust to machine load"),
        Row("anonymous read, server CPU per call", anonymous.server_cpu_us_per_call, "µs", "unary echo", echo_cpu,
            higher_is_better=False, note="WhoAmI without a token: the pipeline and a protobuf servicer, no"
                                         " token lookup (what the bearer row adds is the session read)"),
        Row("sign-in (challenge + SignIn)", sign.per_second, "sign-ins/s", "unary echo", echo_rate, goal=0.35,
            note=f"p50 {sign.median_ms:.1f} ms; the client signs each nonce with RSA-2048 in the same"
                 " harness (PIN checked on the 'chip', no scrypt): client-bound, see server CPU"),
        Row("sign-in, server CPU per sign-in", sign.server_cpu_us_per_call, "µs", "unary echo", echo_cpu,
            goal=0.35, higher_is_better=False,
            note="2 RPCs, 1 commit (the challenge is made without a write), certificate + signature checks;"
                 " one card, whose chain check the server remembers after its first sign-in (a card new to"
                 " the process: ~0.3 ms more)"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
