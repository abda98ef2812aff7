"""Framework figures: the cheapest authenticated read and card sign-in, beside a bare unary echo.

`python -m bench.core` prints the rows; `make bench` puts them in the one table.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import grpc
import uvloop
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from bench.common import Row
from bench.harness import EchoServer, drive, unary_echo
from clients.pki import DevPki, SoftwareCard
from server.bootstrap import enrol_resident
from server.db import Database
from server.procs import spawn_server
from server.testing import PASSWORD, PIN, holder

CONCURRENCY = 50
SECONDS = 3.0


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
        with EchoServer(data / "pki") as echo:
            async with echo.channel() as channel:
                call = unary_echo(channel)
                payload = b"x" * 32
                baseline = await drive(lambda i: call(payload), concurrency=CONCURRENCY, seconds=SECONDS)
        server = await spawn_server(data, env={"ONESTOP_LOG_LEVEL": "WARNING"})
        try:
            credentials = grpc.ssl_channel_credentials((data / "pki" / "ca.pem").read_bytes())
            async with grpc.aio.secure_channel(server.target(), credentials) as channel:
                stub = auth_pb2_grpc.AuthServiceStub(channel)
                challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
                session = (await stub.SignIn(auth_pb2.SignInRequest(
                    request_id="bench", challenge_id=challenge.challenge_id, certificate=card.auth_certificate_der,
                    signature=card.sign_with_auth_key(challenge.nonce, PIN)))).session
                metadata = (("authorization", f"Bearer {session.access_token}"),)
                read = await drive(lambda i: stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=metadata),
                                   concurrency=CONCURRENCY, seconds=SECONDS)
                # The card's key is exercised once per sign-in on the client side, as a phone would.

                async def sign_in(i: int) -> None:
                    c = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
                    await stub.SignIn(auth_pb2.SignInRequest(
                        request_id=c.challenge_id, challenge_id=c.challenge_id,
                        certificate=card.auth_certificate_der, signature=card.sign_with_auth_key(c.nonce, PIN)))

                sign = await drive(sign_in, concurrency=CONCURRENCY, seconds=SECONDS)
        finally:
            server.terminate()
    echo_rate = baseline.per_second
    return [
        Row("bare grpc.aio unary echo (TLS, uvloop)", echo_rate, "calls/s", "itself", echo_rate,
            note=f"p50 {baseline.median_ms:.1f} ms"),
        Row("authenticated read (WhoAmI, bearer)", read.per_second, "calls/s", "unary echo", echo_rate, goal=0.7,
            note=f"p50 {read.median_ms:.1f} ms p99 {read.percentile(99):.1f} ms"),
        Row("sign-in (challenge + SignIn)", sign.per_second, "sign-ins/s", "unary echo", echo_rate, goal=0.35,
            note=f"p50 {sign.median_ms:.1f} ms; 2 RPCs + RSA verify each"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
