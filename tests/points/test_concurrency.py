"""Concurrent redemptions against one balance over real gRPC: never overdrawn, each hold once."""

from __future__ import annotations

import asyncio

import grpc
from onestop.points.v1 import points_pb2 as pb

from .kit import LG, Kit, ledger_sums, reason_of, rid

REGULAR = (pb.ACCOUNT_KIND_REGULAR, LG, "")


async def test_fifty_concurrent_redemptions_never_overdraw(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.grant(hanako, 1000)
    # The card holder signs 50 fresh challenges (one per terminal request), then all go at once.
    cards = [await kit.present(hanako.card) for _ in range(50)]
    requests = [pb.AuthorizeRedemptionRequest(request_id=rid(), card=card, municipality_code=LG, amount=30)
                for card in cards]

    async def authorize(request):
        try:
            return await kit.shop.AuthorizeRedemption(request)
        except grpc.aio.AioRpcError as error:
            return error

    results = await asyncio.wait_for(asyncio.gather(*(authorize(r) for r in requests)), timeout=60)
    holds = [r for r in results if isinstance(r, pb.AuthorizeRedemptionResponse)]
    refusals = [reason_of(r)[0] for r in results if not isinstance(r, pb.AuthorizeRedemptionResponse)]
    assert len(holds) == 33 and refusals == ["INSUFFICIENT_FUNDS"] * 17
    assert sorted(h.available for h in holds) == list(range(10, 1000, 30))[:33]
    assert (await kit.balances(hanako))[REGULAR] == (1000, 990, 10)

    # Capture all of them concurrently, and each one twice: every hold is captured once.
    captures = [pb.CaptureRedemptionRequest(request_id=rid(), hold_id=h.hold_id) for h in holds]
    replies = await asyncio.wait_for(asyncio.gather(*(kit.shop.CaptureRedemption(c) for c in captures + captures)),
                                     timeout=60)
    assert replies[:33] == replies[33:]
    assert (await kit.balances(hanako))[REGULAR] == (10, 0, 10)
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM points_transfers WHERE code='capture'") == 33
        assert await tx.scalar("SELECT COUNT(DISTINCT ref) FROM points_transfers WHERE code='capture'") == 33
    assert await ledger_sums(platform) == (0, 0)
    writer = platform.server.platform.services["points_writer"]
    assert writer.jobs > writer.batches  # requests did share transactions


async def test_concurrent_grants_and_retries_apply_once(platform):
    kit = Kit(platform)
    people = [await kit.resident(f"住民 {i}") for i in range(3)]
    requests = [pb.GrantPointsRequest(request_id=rid(), municipality_code=LG, mykey_id=people[i % 3].mykey_id,
                                      amount=i + 1) for i in range(60)]
    # Every request sent twice, concurrently: applied once each.
    replies = await asyncio.wait_for(asyncio.gather(*(kit.staff.GrantPoints(r) for r in requests + requests)),
                                     timeout=60)
    assert [r.transfer_id for r in replies[:60]] == [r.transfer_id for r in replies[60:]]
    for i, person in enumerate(people):
        expected = sum(n + 1 for n in range(60) if n % 3 == i)
        assert (await kit.balances(person))[REGULAR][0] == expected
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM points_transfers WHERE code='grant'") == 60
    assert await ledger_sums(platform) == (0, 0)
