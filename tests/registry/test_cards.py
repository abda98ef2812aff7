"""Linking a My Number Card to a resident: all four facts must match; one card, one resident."""

from __future__ import annotations

from datetime import date

import grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.registry.v1 import registry_pb2 as pb

from server.testing import bearer, holder, issue_card
from tests.helpers import error_details, expect_error
from tests.registry.support import CHIYODA, CHUO, create, rid, stub, with_municipalities

FP = grpc.StatusCode.FAILED_PRECONDITION
HANAKO = dict(name="山田 花子", birth_date="1990-04-10", sex=2, address="東京都千代田区千代田1-1")


def link(resident_id, card, request_id=None):
    return pb.LinkCardRequest(request_id=request_id or rid(), resident_id=resident_id,
                              auth_certificate=card.auth_certificate_der, sign_certificate=card.sign_certificate_der)


async def who(platform, card):
    token = await platform.sign_in(card)
    me = await auth_pb2_grpc.AuthServiceStub(platform.channel()).WhoAmI(auth_pb2.WhoAmIRequest(),
                                                                       metadata=bearer(token))
    return me.resident_id


async def active_links(platform, resident_id):
    async with platform.db.read() as tx:
        return await tx.all("SELECT * FROM card_links WHERE resident_id = ? AND unlinked_at_ms IS NULL",
                            (resident_id,))


async def test_partial_match_refused_full_match_accepted_then_sign_in(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    card = issue_card(platform.pki, holder(), now=platform.clock.now())  # 山田 花子, 1990-04-10, 2, 千代田1-1
    # name and birth date match, the address (and sex) do not: refused, the differing fields named, no values
    partial = await create(registry, **{**HANAKO, "address": "東京都千代田区神田2-2", "sex": 1})
    error = await expect_error(registry.LinkCard(link(partial.resident_id, card)), FP, "CARD_HOLDER_MISMATCH",
                               "sign_certificate.address")
    _, fields = error_details(error)
    assert sorted(fields) == ["sign_certificate.address", "sign_certificate.sex"]
    assert "神田" not in error.details() and "千代田" not in error.details()
    assert await active_links(platform, partial.resident_id) == []
    # all four match (the record's full-width space and doubled spaces are only whitespace)
    full = await create(registry, **{**HANAKO, "name": "山田\u3000花子", "address": " 東京都千代田区千代田1-1  "})
    reply = await registry.LinkCard(link(full.resident_id, card))
    assert reply.link.resident_id == full.resident_id and reply.ended_link_id == ""
    assert reply.link.auth_serial and reply.link.sign_serial
    assert len(await active_links(platform, full.resident_id)) == 1
    assert await who(platform, card) == full.resident_id
    shown = await registry.GetResident(pb.GetResidentRequest(resident_id=full.resident_id))
    assert shown.card_link.link_id == reply.link.link_id


async def test_card_linked_to_a_cannot_be_linked_to_b(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    card = issue_card(platform.pki, holder(), now=platform.clock.now())
    a = await create(registry, **HANAKO)
    b = await create(registry, **HANAKO)  # a duplicate record with the same four facts
    await registry.LinkCard(link(a.resident_id, card))
    await expect_error(registry.LinkCard(link(b.resident_id, card)), grpc.StatusCode.ALREADY_EXISTS,
                       "CARD_ALREADY_LINKED")
    assert await active_links(platform, b.resident_id) == []
    assert await who(platform, card) == a.resident_id
    # linking the same card again to A changes nothing
    again = await registry.LinkCard(link(a.resident_id, card))
    assert len(await active_links(platform, a.resident_id)) == 1 and again.ended_link_id == ""


async def test_renewed_card_ends_the_previous_link_and_unlink_stops_sign_in(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    old = issue_card(platform.pki, holder(), now=platform.clock.now())
    a = await create(registry, **HANAKO)
    first = await registry.LinkCard(link(a.resident_id, old))
    platform.clock.advance(hours=1)
    new = issue_card(platform.pki, holder(), now=platform.clock.now())
    request = link(a.resident_id, new)
    second = await registry.LinkCard(request)
    assert second.ended_link_id == first.link.link_id
    assert await registry.LinkCard(request) == second  # a retry: the first outcome
    assert [r["link_id"] for r in await active_links(platform, a.resident_id)] == [second.link.link_id]
    await expect_error(platform.sign_in(old), FP, "CARD_NOT_LINKED")
    assert await who(platform, new) == a.resident_id
    ended = await registry.UnlinkCard(pb.UnlinkCardRequest(request_id=rid(), resident_id=a.resident_id))
    assert ended.link.link_id == second.link.link_id and ended.link.HasField("unlink_time")
    await expect_error(platform.sign_in(new), FP, "CARD_NOT_LINKED")
    await expect_error(registry.UnlinkCard(pb.UnlinkCardRequest(request_id=rid(), resident_id=a.resident_id)),
                       grpc.StatusCode.NOT_FOUND, "LINK_NOT_FOUND")


async def test_link_refusals(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    card = issue_card(platform.pki, holder(), now=platform.clock.now())
    a = await create(registry, **HANAKO)
    swapped = pb.LinkCardRequest(request_id=rid(), resident_id=a.resident_id,
                                 auth_certificate=card.sign_certificate_der, sign_certificate=card.auth_certificate_der)
    await expect_error(registry.LinkCard(swapped), FP, "WRONG_CERTIFICATE_USAGE", "auth_certificate")
    junk = pb.LinkCardRequest(request_id=rid(), resident_id=a.resident_id, auth_certificate=b"junk",
                              sign_certificate=card.sign_certificate_der)
    await expect_error(registry.LinkCard(junk), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_CERTIFICATE",
                       "auth_certificate")
    await expect_error(registry.LinkCard(pb.LinkCardRequest(request_id=rid(), resident_id=a.resident_id)),
                       grpc.StatusCode.INVALID_ARGUMENT, field="sign_certificate")
    await expect_error(stub(platform, CHUO).LinkCard(link(a.resident_id, card)), grpc.StatusCode.PERMISSION_DENIED,
                       "OTHER_MUNICIPALITY")
    await registry.SetIssuanceBars(pb.SetIssuanceBarsRequest(request_id=rid(), resident_id=a.resident_id,
                                                             deceased_on="2026-11-30"))
    await expect_error(registry.LinkCard(link(a.resident_id, card)), FP, "RESIDENT_NOT_ACTIVE")
    assert await active_links(platform, a.resident_id) == []


def test_holder_matching_rules():
    from server.crypto.jpki import CardHolder
    from server.registry.records import holder_mismatches
    record = CardHolder("山田 花子", "2", date(1990, 4, 10), "東京都千代田区千代田1-1")
    assert holder_mismatches(record, CardHolder("山田\u3000\u3000花子 ", "2", date(1990, 4, 10),
                                                "東京都千代田区千代田1-1")) == []
    assert holder_mismatches(record, CardHolder("山田 花子", "2", date(1990, 4, 10), "東京都千代田区千代田1-2")) == ["address"]
    assert holder_mismatches(record, CardHolder("山田 花", "1", date(1990, 4, 11), "x")) == [
        "name", "birth_date", "sex", "address"]


async def test_card_follows_its_holder_after_a_move(platform):
    """転出 from 千代田区, 転入 to 中央区: the new record takes the card; the old one is kept, moved out."""
    await with_municipalities(platform)
    chiyoda, chuo = stub(platform, CHIYODA), stub(platform, CHUO)
    card = issue_card(platform.pki, holder(address="東京都中央区銀座1-1"), now=platform.clock.now())
    old = await create(chiyoda, **{**HANAKO, "address": "東京都中央区銀座1-1"})
    await chiyoda.LinkCard(link(old.resident_id, card))
    new = await create(chuo, **{**HANAKO, "address": "東京都中央区銀座1-1", "lgcode": CHUO})
    # while the old record is active the card stays where it is
    await expect_error(chuo.LinkCard(link(new.resident_id, card)), grpc.StatusCode.ALREADY_EXISTS,
                       "CARD_ALREADY_LINKED")
    await chiyoda.RecordMove(pb.RecordMoveRequest(request_id=rid(), resident_id=old.resident_id,
                                                  kind=pb.MOVE_KIND_MOVE_OUT, date="2026-12-01",
                                                  destination="東京都中央区銀座1-1"))
    await chuo.LinkCard(link(new.resident_id, card))
    assert await active_links(platform, old.resident_id) == []
    assert await who(platform, card) == new.resident_id
    kept = await chiyoda.GetResident(pb.GetResidentRequest(resident_id=old.resident_id))
    assert kept.resident.status == pb.RESIDENT_STATUS_MOVED_OUT and not kept.HasField("card_link")


async def test_logs_carry_ids_never_the_holder_facts(platform, caplog):
    import logging

    await with_municipalities(platform)
    registry = stub(platform)
    card = issue_card(platform.pki, holder(), now=platform.clock.now())
    with caplog.at_level(logging.INFO):
        a = await create(registry, **{**HANAKO, "address": "東京都千代田区神田9-9"})
        await expect_error(registry.LinkCard(link(a.resident_id, card)), FP, "CARD_HOLDER_MISMATCH")
        b = await create(registry, **HANAKO)
        await registry.LinkCard(link(b.resident_id, card))
        await registry.ImportResidents(iter([pb.ImportResidentsRequest(
            request_id=rid(), municipality_code=CHIYODA,
            row=pb.ImportRow(row_number=2, name="秘密 太郎", birth_date="1970-01-01", sex=1, address="秘密の住所"))]))
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "card holder mismatch" in text and a.resident_id in text
    for secret in ("山田", "花子", "神田9-9", "千代田1-1", "1990-04-10", "秘密"):
        assert secret not in text


async def test_revoked_or_foreign_cards_are_not_linked(platform, tmp_path):
    from clients.pki import CardAuthority

    from server.testing import TEST_START

    await with_municipalities(platform)
    registry = stub(platform)
    a = await create(registry, **HANAKO)
    revoked = issue_card(platform.pki, holder(), now=platform.clock.now())
    platform.pki.revoke_card(revoked, now=platform.clock.now())
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id=rid(), crl=platform.pki.crl_path.read_bytes()))
    await expect_error(registry.LinkCard(link(a.resident_id, revoked)), FP, "CERT_REVOKED", "auth_certificate")
    foreign_ca = CardAuthority.create(tmp_path / "foreign", now=TEST_START)
    foreign = foreign_ca.issue_card(holder(), now=TEST_START, pin="1234", password="ABC123")
    await expect_error(registry.LinkCard(link(a.resident_id, foreign)), FP, "UNKNOWN_ISSUER")
    assert await active_links(platform, a.resident_id) == []
