"""Two server processes on one database file: concurrent redemptions against one balance through both
never overdraw, and a retry sent to the other process gets the first outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timezone

import grpc
import pytest
from grpc import aio
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from server.crypto.machine import MachineIdentity
from server.procs import spawn_server
from server.testing import PIN, client_credentials, make_pki, run_platform

from .kit import LG, Kit, reason_of, rid
from .kit import audit


@pytest.mark.slow
async def test_two_processes_share_one_ledger_without_overdraw(tmp_path, pki_template):
    async with run_platform(tmp_path, pki_template=pki_template) as platform:
        kit = Kit(platform)
        hanako = await kit.resident()
        await kit.grant(hanako, 1000)
    data_dir = tmp_path / "data"
    pki = make_pki(data_dir / "pki")
    pki.refresh_crl(now=datetime.now(timezone.utc))  # these servers run on the system clock
    credentials = client_credentials(pki, MachineIdentity("shop", "shop-1", {"lg": LG, "kind": "shop"}))
    servers = list(await asyncio.gather(spawn_server(data_dir), spawn_server(data_dir)))
    try:
        channels = [aio.secure_channel(server.target(machine=True), credentials) for server in servers]
        shops = [points_pb2_grpc.PointsServiceStub(c) for c in channels]
        auth = auth_pb2_grpc.AuthServiceStub(channels[0])
        requests = []
        for _ in range(50):  # the card signs 50 fresh challenges (issued by either process: one table)
            challenge = await auth.CreateChallenge(auth_pb2.CreateChallengeRequest())
            card = pb.CardPresentation(challenge_id=challenge.challenge_id, certificate=hanako.card.auth_certificate_der,
                                       signature=hanako.card.sign_with_auth_key(challenge.nonce, PIN))
            requests.append(pb.AuthorizeRedemptionRequest(request_id=rid(), card=card, municipality_code=LG,
                                                          amount=30))

        async def authorize(n, request):
            try:
                return await shops[n % 2].AuthorizeRedemption(request, timeout=60)
            except grpc.aio.AioRpcError as error:
                return error

        results = await asyncio.wait_for(asyncio.gather(*(authorize(n, r) for n, r in enumerate(requests))),
                                         timeout=120)
        holds = [r for r in results if isinstance(r, pb.AuthorizeRedemptionResponse)]
        assert len(holds) == 33
        assert sorted(reason_of(r)[0] for r in results if not isinstance(r, pb.AuthorizeRedemptionResponse)) == [
            "INSUFFICIENT_FUNDS"] * 17
        # Captures through one process, the same requests retried through the other: one outcome each.
        captures = [pb.CaptureRedemptionRequest(request_id=rid(), hold_id=h.hold_id) for h in holds]
        first = await asyncio.gather(*(shops[0].CaptureRedemption(c, timeout=60) for c in captures))
        again = await asyncio.gather(*(shops[1].CaptureRedemption(c, timeout=60) for c in captures))
        assert first == again
        for channel in channels:
            await channel.close()
    finally:
        for server in servers:
            server.terminate()
    final = audit(data_dir / "onestop.db")
    assert final["total"] == 0 and final["negative"] == 0 and final["rebuilt_ok"] and final["lots_ok"]
    conn = sqlite3.connect(data_dir / "onestop.db")
    try:
        assert conn.execute("SELECT balance, pending FROM points_accounts WHERE kind='resident'").fetchall() == [(10, 0)]
        assert conn.execute("SELECT COUNT(*) FROM points_transfers WHERE code='capture'").fetchone()[0] == 33
    finally:
        conn.close()
