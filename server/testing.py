"""A real server and real channels for a test in one line.

    async with run_platform(tmp_path, pki=dev_pki) as p:
        stub = AuthServiceStub(p.channel())

Everything is real: TLS on loopback, the platform CA's client certificates for machine principals,
software cards from the development card CA, a SQLite file in the test's own folder. Time comes
from a FixedClock, so time-based rules are exercised without sleeps.
"""

from __future__ import annotations

import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
from grpc import aio

from clients.pki import DevPki, SoftwareCard
from server import app
from server.clock import JST, FixedClock
from server.config import Settings
from server.crypto.jpki import CardHolder
from server.crypto.machine import MachineIdentity
from server.bootstrap import enrol_resident
from server.ids import new_id

# The instant every test starts at unless it says otherwise: a Thursday morning in Tokyo.
TEST_START = datetime(2026, 12, 3, 10, 0, tzinfo=JST)
PIN = "1234"
PASSWORD = "ABC123"


def make_pki(directory: Path, *, now: datetime = TEST_START) -> DevPki:
    return DevPki.ensure(directory, now=now)


def issue_card(pki: DevPki, holder: CardHolder, *, file_name: str | None = None,
               now: datetime = TEST_START) -> SoftwareCard:
    path = pki.issue_card(holder, PIN, PASSWORD, file_name or new_id("card"), now=now)
    return SoftwareCard.load(path)


def client_credentials(pki: DevPki, identity: MachineIdentity | None) -> grpc.ChannelCredentials:
    ca = pki.ca_path.read_bytes()
    if identity is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    cert, key = pki.machine(identity)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


@dataclass
class TestPlatform:
    pki: DevPki
    settings: Settings
    clock: FixedClock
    server: app.RunningServer
    _channels: list[aio.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        """The listener without client certificates (residents, anonymous callers)."""
        return self.server.target()

    @property
    def db(self):
        return self.server.platform.db

    def channel(self, identity: MachineIdentity | None = None) -> aio.Channel:
        """A TLS channel; with `identity`, presenting that machine principal's client certificate."""
        channel = aio.secure_channel(self.server.target(machine=identity is not None),
                                     client_credentials(self.pki, identity))
        self._channels.append(channel)
        return channel

    def municipality(self, lgcode: str) -> aio.Channel:
        return self.channel(MachineIdentity("municipality", lgcode, {}))

    def operator(self) -> aio.Channel:
        return self.channel(MachineIdentity("operator", "ops", {}))

    async def add_municipality(self, code: str, name: str = "テスト市", prefecture: str = "東京都") -> None:
        async with self.db.write() as tx:
            await tx.execute(
                "INSERT OR IGNORE INTO municipalities (code, prefecture, name, name_kana) VALUES (?, ?, ?, '')",
                (code, prefecture, name),
            )

    async def add_resident(self, holder: CardHolder, lgcode: str = "131016", *, card: SoftwareCard | None = None,
                           household_id: str | None = None, **columns: Any) -> tuple[str, SoftwareCard]:
        """Register a resident straight into the registry tables and link a freshly issued card."""
        await self.add_municipality(lgcode)
        card = card or issue_card(self.pki, holder, now=self.clock.now())
        resident_id = await enrol_resident(self.db, holder, card, lgcode, now=self.clock.now(),
                                           household_id=household_id, **columns)
        return resident_id, card

    async def sign_in(self, card: SoftwareCard, pin: str = PIN) -> str:
        """Challenge -> card signature -> SignIn over gRPC; returns the access token."""
        from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

        stub = auth_pb2_grpc.AuthServiceStub(self.channel())
        challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
        reply = await stub.SignIn(auth_pb2.SignInRequest(
            request_id=new_id("rq"), challenge_id=challenge.challenge_id,
            certificate=card.auth_certificate_der, signature=card.sign_with_auth_key(challenge.nonce, pin),
        ))
        return reply.session.access_token

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        await self.server.stop(grace=1)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    # Background sweeps off: a test drives them with `services["timers"].run_due()` and its FixedClock.
    return Settings(data_dir=data_dir, grpc_port=0, **{"timers": False, **overrides})


@asynccontextmanager
async def run_platform(tmp_path: Path, *, pki_template: Path | None = None, clock: FixedClock | None = None,
                       **overrides: Any) -> AsyncIterator[TestPlatform]:
    """Start the whole server on a free loopback port with its own data directory."""
    clock = clock or FixedClock(TEST_START)
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if pki_template is not None and not (data_dir / "pki").exists():
        shutil.copytree(pki_template, data_dir / "pki")
    pki = make_pki(data_dir / "pki", now=clock.now())
    settings = settings_for(data_dir, **overrides)
    server = await app.start(settings, clock=clock, port=0)
    platform = TestPlatform(pki=pki, settings=settings, clock=clock, server=server)
    try:
        yield platform
    finally:
        await platform.close()


def holder(name: str = "山田 花子", *, sex: str = "2", birth_date: date = date(1990, 4, 10),
           address: str = "東京都千代田区千代田1-1") -> CardHolder:
    return CardHolder(name=name, sex=sex, birth_date=birth_date, address=address)


def at(days: float = 0, **delta: float) -> datetime:
    return TEST_START + timedelta(days=days, **delta)


UTC = timezone.utc


def open_channel(running: app.RunningServer, pki: DevPki, identity: MachineIdentity | None = None) -> aio.Channel:
    """A channel to any running server (e.g. a second process on the same database): machine
    identities go to the mTLS listener, everyone else to the plain TLS one."""
    return aio.secure_channel(running.target(machine=identity is not None), client_credentials(pki, identity))
