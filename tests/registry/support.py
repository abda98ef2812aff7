"""Helpers for the registry tests: stubs, resident messages, real municipality codes."""

from __future__ import annotations

from onestop.registry.v1 import registry_pb2 as pb
from onestop.registry.v1 import registry_pb2_grpc

from server.ids import new_id
from server.testing import TestPlatform

CHIYODA = "131016"   # 東京都千代田区
CHUO = "131024"      # 東京都中央区
SAPPORO = "011002"   # 北海道札幌市


def rid() -> str:
    return new_id("rq")


async def with_municipalities(platform: TestPlatform, *codes: str) -> None:
    for code in codes or (CHIYODA, CHUO, SAPPORO):
        await platform.add_municipality(code)


def stub(platform: TestPlatform, lgcode: str | None = CHIYODA) -> registry_pb2_grpc.RegistryServiceStub:
    """A stub as the municipal system of `lgcode` (None: an anonymous TLS caller)."""
    channel = platform.municipality(lgcode) if lgcode else platform.channel()
    return registry_pb2_grpc.RegistryServiceStub(channel)


def resident(name: str = "佐藤 健", *, lgcode: str = CHIYODA, birth_date: str = "1985-06-01", sex: int = 1,
             address: str = "東京都千代田区丸の内1-1", **more) -> pb.Resident:
    return pb.Resident(municipality_code=lgcode, name=name, birth_date=birth_date, sex=sex, address=address, **more)


async def create(registry, message: pb.Resident | None = None, **kw) -> pb.Resident:
    reply = await registry.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=message or resident(**kw)))
    assert reply.created
    return reply.resident
