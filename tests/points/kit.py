"""Helpers for the points tests: principals, card presentations, a resident with a MyKey ID."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from server.crypto.machine import MachineIdentity
from server.ids import new_id
from server.testing import PIN, bearer, holder
from tests.helpers import error_details, expect_error

LG = "131016"      # 千代田区
OTHER_LG = "131024"  # 中央区


def rid() -> str:
    return new_id("rq")


# One way to assert a refusal across the suite (tests/helpers.py).
reason_of = error_details
refused = expect_error


@dataclass
class Holder:
    resident_id: str
    card: object
    token: str
    mykey_id: str = ""

    @property
    def md(self):
        return bearer(self.token)


class Kit:
    """Stubs for every kind of caller of PointsService on one running test platform."""

    def __init__(self, platform) -> None:
        self.p = platform
        self.anon = points_pb2_grpc.PointsServiceStub(platform.channel())
        self.auth = auth_pb2_grpc.AuthServiceStub(platform.channel())
        self.staff = self.stub(MachineIdentity("municipality", LG, {}))
        self.other_staff = self.stub(MachineIdentity("municipality", OTHER_LG, {}))
        self.shop = self.stub(MachineIdentity("shop", "shop-lib-1", {"lg": LG, "kind": "library"}))
        self.shop2 = self.stub(MachineIdentity("shop", "shop-street-2", {"lg": LG, "kind": "shopping_street"}))
        self.far_shop = self.stub(MachineIdentity("shop", "shop-far-3", {"lg": OTHER_LG, "kind": "museum"}))
        self.partner = self.stub(MachineIdentity("partner", "card-co", {}))
        self.operator = self.stub(MachineIdentity("operator", "ops", {}))

    def stub(self, identity: MachineIdentity) -> points_pb2_grpc.PointsServiceStub:
        return points_pb2_grpc.PointsServiceStub(self.p.channel(identity))

    async def present(self, card, pin: str = PIN) -> pb.CardPresentation:
        challenge = await self.auth.CreateChallenge(auth_pb2.CreateChallengeRequest())
        return pb.CardPresentation(challenge_id=challenge.challenge_id, certificate=card.auth_certificate_der,
                                   signature=card.sign_with_auth_key(challenge.nonce, pin))

    async def resident(self, name: str = "山田 花子", lgcode: str = LG, *, mykey: bool = True) -> Holder:
        await self.p.add_municipality(OTHER_LG, "中央区")
        resident_id, card = await self.p.add_resident(holder(name), lgcode)
        person = Holder(resident_id, card, await self.p.sign_in(card))
        if mykey:
            reply = await self.anon.CreateMyKeyId(
                pb.CreateMyKeyIdRequest(request_id=rid(), card=await self.present(card)), metadata=person.md)
            person.mykey_id = reply.mykey_id
        return person

    async def advance(self, **delta: float) -> None:
        """Move the clock, and give the server a card CRL current at the new time (cards keep working)."""
        self.p.clock.advance(**delta)
        der = self.p.pki.refresh_crl(now=self.p.clock.now())
        await auth_pb2_grpc.AuthServiceStub(self.p.operator()).SubmitRevocationList(
            auth_pb2.SubmitRevocationListRequest(request_id=rid(), crl=der))

    async def relogin(self, person: Holder) -> None:
        """A new session after the clock moved past the old one's life."""
        person.token = await self.p.sign_in(person.card)

    async def grant(self, person: Holder, amount: int, event_id: str = "", lgcode: str = LG):
        staff = self.staff if lgcode == LG else self.other_staff
        return await staff.GrantPoints(pb.GrantPointsRequest(
            request_id=rid(), municipality_code=lgcode, mykey_id=person.mykey_id, amount=amount, event_id=event_id))

    async def balances(self, person: Holder) -> dict:
        reply = await self.anon.GetBalances(pb.GetBalancesRequest(), metadata=person.md)
        return {(b.kind, b.municipality_code, b.event_id): (b.balance, b.held, b.available) for b in reply.balances}

    async def authorize(self, person: Holder, amount: int, *, shop=None, event_id: str = "", lgcode: str = LG,
                        request_id: str | None = None):
        return await (shop or self.shop).AuthorizeRedemption(pb.AuthorizeRedemptionRequest(
            request_id=request_id or rid(), card=await self.present(person.card), municipality_code=lgcode,
            event_id=event_id, amount=amount))


async def ledger_sums(platform) -> tuple[int, int]:
    """(sum of all balances, count of resident/holding accounts below zero or over-held)."""
    async with platform.db.read() as tx:
        total = await tx.scalar("SELECT COALESCE(SUM(balance), 0) FROM points_accounts")
        bad = await tx.scalar("SELECT COUNT(*) FROM points_accounts WHERE kind IN ('resident','holding')"
                              " AND (balance < 0 OR balance - pending < 0)")
    return total, bad


def fresh_ledger(path):
    """A real SQLite file with the core, registry and points schema, opened as the batch writer does."""
    import sqlite3

    from server.db import discover_migrations, split_statements
    from server.points.writer import connect

    conn = connect(path)
    for migration in discover_migrations(("core", "registry", "points")):
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    assert isinstance(conn, sqlite3.Connection)
    return conn


def audit(db_path: Path) -> dict:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total = conn.execute("SELECT COALESCE(SUM(balance), 0) FROM points_accounts").fetchone()[0]
        negative = conn.execute("SELECT COUNT(*) FROM points_accounts WHERE kind IN ('resident','holding')"
                                " AND balance - pending < 0").fetchone()[0]
        rebuilt_ok = conn.execute(
            "SELECT COUNT(*) FROM points_accounts a WHERE a.balance <>"
            " COALESCE((SELECT SUM(amount) FROM points_transfers WHERE credit_account_id = a.account_id), 0)"
            " - COALESCE((SELECT SUM(amount) FROM points_transfers WHERE debit_account_id = a.account_id), 0)"
        ).fetchone()[0] == 0
        lots_ok = conn.execute(
            "SELECT COUNT(*) FROM points_accounts a WHERE a.kind = 'resident' AND a.balance <>"
            " COALESCE((SELECT SUM(remaining) FROM points_lots l WHERE l.account_id = a.account_id), 0)"
        ).fetchone()[0] == 0
        transfers = dict(conn.execute("SELECT transfer_id, amount FROM points_transfers WHERE code='grant'"))
        requests = conn.execute("SELECT COUNT(*) FROM points_requests WHERE method LIKE '%GrantPoints'").fetchone()[0]
    finally:
        conn.close()
    return {"total": total, "negative": negative, "rebuilt_ok": rebuilt_ok, "lots_ok": lots_ok,
            "transfers": transfers, "requests": requests}


async def retry_grants(server, credentials, sent: list, acked: dict) -> None:
    """Send every grant again to `server` (a restarted one): the acknowledged ones must answer as
    they did the first time (each request id is applied once; audit() then counts the transfers)."""
    async with aio.secure_channel(server.target(machine=True), credentials) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        replies = await asyncio.wait_for(asyncio.gather(*(stub.GrantPoints(r, timeout=30) for r in sent)),
                                         timeout=120)
    for request, reply in zip(sent, replies):
        if request.request_id in acked:
            assert reply == acked[request.request_id]
