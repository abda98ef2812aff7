"""Memberships at facilities, and a MyKey ID relinked to a renewed card."""

from __future__ import annotations

import grpc
from onestop.points.v1 import points_pb2 as pb

from server.crypto.jpki import serial_text
from server.testing import holder, issue_card

from .kit import Kit, refused, rid


async def test_register_and_look_up_membership(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    taro = await kit.resident("鈴木 太郎")
    await refused(kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(hanako.card))),
                  grpc.StatusCode.NOT_FOUND, "NOT_A_MEMBER")
    given = await kit.shop.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(hanako.card), member_number="LIB-0001"))
    assert (given.membership.facility_id, given.membership.facility_kind, given.membership.member_number) == (
        "shop-lib-1", "library", "LIB-0001")
    await refused(kit.shop.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(taro.card), member_number="LIB-0001")),
        grpc.StatusCode.ALREADY_EXISTS, "MEMBER_NUMBER_TAKEN")
    await refused(kit.shop.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(hanako.card))), grpc.StatusCode.ALREADY_EXISTS, "MEMBERSHIP_EXISTS")
    generated = await kit.shop2.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(hanako.card)))
    assert generated.membership.facility_kind == "shopping_street"
    assert len(generated.membership.member_number) == 10

    # Each terminal gets back ITS OWN member number for the same card.
    mine = await kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(hanako.card)))
    theirs = await kit.shop2.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(hanako.card)))
    assert mine.membership.member_number == "LIB-0001"
    assert theirs.membership.member_number == generated.membership.member_number
    await refused(kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(taro.card))),
                  grpc.StatusCode.NOT_FOUND, "NOT_A_MEMBER")
    await refused(kit.shop.LookupMembership(pb.LookupMembershipRequest()), grpc.StatusCode.INVALID_ARGUMENT,
                  field="card.challenge_id")
    await refused(kit.staff.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(hanako.card))),
                  grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await refused(kit.anon.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(hanako.card)), metadata=hanako.md),
        grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_relink_to_renewed_card_keeps_id_points_and_memberships(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.grant(hanako, 100)
    await kit.shop.RegisterMembership(pb.RegisterMembershipRequest(
        request_id=rid(), card=await kit.present(hanako.card), member_number="LIB-7"))
    # The municipality links a renewed card (the old link ends).
    renewed = issue_card(platform.pki, holder(), now=platform.clock.now())
    async with platform.db.write() as tx:
        await tx.execute("UPDATE card_links SET unlinked_at_ms = 1 WHERE resident_id = ?", (hanako.resident_id,))
        auth, sign = renewed.auth_certificate, renewed.sign_certificate
        await tx.execute(
            "INSERT INTO card_links (link_id, resident_id, auth_issuer, auth_serial, sign_issuer, sign_serial,"
            " linked_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid(), hanako.resident_id, auth.issuer.rfc4514_string(), serial_text(auth.serial_number),
             sign.issuer.rfc4514_string(), serial_text(sign.serial_number), 2))
    await refused(kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(hanako.card))),
                  grpc.StatusCode.FAILED_PRECONDITION, "CARD_NOT_LINKED")
    # The renewed card works at a terminal only once the MyKey ID is relinked to it.
    await refused(kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(renewed))),
                  grpc.StatusCode.FAILED_PRECONDITION, "MYKEY_NOT_LINKED_TO_CARD")
    relinked = await kit.anon.RelinkMyKeyId(pb.RelinkMyKeyIdRequest(
        request_id=rid(), card=await kit.present(renewed)), metadata=hanako.md)
    assert relinked.mykey_id == hanako.mykey_id
    found = await kit.shop.LookupMembership(pb.LookupMembershipRequest(card=await kit.present(renewed)))
    assert found.membership.member_number == "LIB-7"
    hanako.card = renewed
    hold = await kit.authorize(hanako, 100)
    assert hold.available == 0
    taro = await kit.resident("鈴木 太郎", mykey=False)
    await refused(kit.anon.RelinkMyKeyId(pb.RelinkMyKeyIdRequest(
        request_id=rid(), card=await kit.present(taro.card)), metadata=taro.md),
        grpc.StatusCode.NOT_FOUND, "MYKEY_ID_NOT_FOUND")
