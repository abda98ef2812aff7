"""Every refusal the kiosk shows, by its reason; and nothing issued or charged when refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.issuance.v1 import issuance_pb2 as pb

from clients.pki.card import CardLocked, WrongPin
from server.clock import JST
from server.testing import holder
from tests.issuance.kit import (add_resident, CHIYODA, Steps, abolish_seal, add_register, add_seal, add_tax, kiosk, money, order,
                                jump, reason, set_resident, staff)

T = pb


async def refused_with(platform, card, the_order, **kiosk_kw) -> str:
    result = await kiosk(platform, "k-r", **kiosk_kw).transact(card, "1234", the_order)
    assert result.receipt is None
    return result.refusal.reason if result.refusal else "OK"


async def nothing_issued(platform) -> None:
    stored = await money(platform)
    assert stored["documents"].get("printed", 0) == 0 and stored["fee_lines"] == (0, 0)
    assert "posted" not in stored["charges"] and "pending" not in stored["charges"]


async def test_outside_hours_early_morning(platform):
    _, card = await add_resident(platform, holder())
    platform.clock.set(datetime(2026, 12, 3, 22, 59, tzinfo=JST))
    assert (await kiosk(platform, "k-1").transact(card, "1234", order())).ok
    platform.clock.set(datetime(2026, 12, 3, 23, 0, tzinfo=JST))
    assert await refused_with(platform, card, order()) == "OUTSIDE_HOURS"
    platform.clock.set(datetime(2026, 12, 4, 6, 29, tzinfo=JST))
    assert await refused_with(platform, card, order()) == "OUTSIDE_HOURS"
    platform.clock.set(datetime(2026, 12, 4, 6, 30, tzinfo=JST))
    assert (await kiosk(platform, "k-2").transact(card, "1234", order())).ok


@pytest.mark.parametrize("day", [(2026, 12, 29), (2026, 12, 31), (2027, 1, 3)])
async def test_outside_hours_year_end(platform, day):
    _, card = await add_resident(platform, holder())
    await jump(platform, datetime(*day, 12, 0, tzinfo=JST))
    assert await refused_with(platform, card, order()) == "OUTSIDE_HOURS"
    await nothing_issued(platform)


async def test_family_register_weekdays_only(platform):
    resident_id, card = await add_resident(platform, holder())
    await add_register(platform, CHIYODA, [(resident_id, "山田 花子", "妻")])
    settings = (await staff(platform).GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code=CHIYODA))).settings
    settings.family_register_weekdays_only = True
    settings.family_register_open_minute, settings.family_register_close_minute = 540, 1020
    await staff(platform).UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="s1", settings=settings))
    await jump(platform, datetime(2026, 12, 5, 12, 0, tzinfo=JST))  # a Saturday
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL)) == "OUTSIDE_HOURS"
    platform.clock.set(datetime(2026, 12, 4, 18, 0, tzinfo=JST))  # Friday evening
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL)) == "OUTSIDE_HOURS"
    # 住民票 keeps the general hours
    assert (await kiosk(platform, "k-3").transact(card, "1234", order())).ok
    platform.clock.set(datetime(2026, 12, 4, 10, 0, tzinfo=JST))
    result = await kiosk(platform, "k-4").transact(card, "1234", order(T.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL))
    assert result.ok and result.quote.total_yen == 450


async def test_type_not_offered(platform):
    resident_id, card = await add_resident(platform, holder())
    await add_tax(platform, resident_id)
    settings = (await staff(platform).GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code=CHIYODA))).settings
    del settings.offered_types[:]
    settings.offered_types.extend([T.CERTIFICATE_TYPE_RESIDENT_RECORD])
    await staff(platform).UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="s1", settings=settings))
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_TAX)) == "TYPE_NOT_OFFERED"
    await nothing_issued(platform)


async def test_not_participating(platform):
    _, card = await add_resident(platform, holder())
    settings = (await staff(platform).GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code=CHIYODA))).settings
    settings.participating = False
    await staff(platform).UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="s1", settings=settings))
    assert await refused_with(platform, card, order()) == "NOT_PARTICIPATING"


@pytest.mark.parametrize("status,expected", [("moved_out", "MOVED_OUT"), ("moving_out", "MOVING_OUT"),
                                             ("deceased", "DECEASED")])
async def test_holder_status_refused(platform, status, expected):
    resident_id, card = await add_resident(platform, holder())
    await set_resident(platform, resident_id, status=status)
    assert await refused_with(platform, card, order()) == expected
    await nothing_issued(platform)


@pytest.mark.parametrize("status,expected", [("moved_out", "MOVED_OUT"), ("moving_out", "MOVING_OUT"),
                                             ("deceased", "DECEASED")])
async def test_household_member_status_refused(platform, status, expected):
    _, card = await add_resident(platform, holder(), household_id="hh-1")
    member_id, _ = await add_resident(platform, holder("山田 一郎", sex="1"), household_id="hh-1", relationship="子")
    await set_resident(platform, member_id, status=status)
    assert await refused_with(platform, card, order(subject_resident_id=member_id)) == expected


async def test_dv_protected(platform):
    resident_id, card = await add_resident(platform, holder())
    await set_resident(platform, resident_id, dv_protection=1)
    assert await refused_with(platform, card, order()) == "DV_PROTECTED"


async def test_household_member_allowed_other_household_refused(platform):
    holder_id, card = await add_resident(platform, holder(), household_id="hh-1")
    member_id, _ = await add_resident(platform, holder("山田 一郎", sex="1"), household_id="hh-1", relationship="子")
    stranger_id, _ = await add_resident(platform, holder("佐藤 次郎", sex="1"), household_id="hh-2")
    assert await refused_with(platform, card, order(subject_resident_id=stranger_id)) == "NOT_SAME_HOUSEHOLD"
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION,
                                                    subject_resident_id=member_id)) == "HOLDER_ONLY"
    result = await kiosk(platform, "k-m").transact(card, "1234", order(subject_resident_id=member_id))
    assert result.ok and result.documents[0].subject_resident_id == member_id


async def test_register_not_reflected(platform):
    resident_id, card = await add_resident(platform, holder())
    await add_register(platform, CHIYODA, [(resident_id, "山田 花子", "妻")], pending=True)
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL)) == "REGISTER_NOT_REFLECTED"


async def test_no_active_seal(platform):
    resident_id, card = await add_resident(platform, holder())
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION)) == "NO_ACTIVE_SEAL"
    registration = await add_seal(platform, resident_id)
    await abolish_seal(platform, registration)
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION)) == "NO_ACTIVE_SEAL"


async def test_seal_abolished_a_moment_before_payment_yields_nothing(platform):
    resident_id, card = await add_resident(platform, holder())
    registration = await add_seal(platform, resident_id)
    steps = Steps(kiosk(platform, "k-s"))
    assert reason(await steps.sign_in(card)) == "OK"
    quote = await steps.send(order=order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION))
    assert quote.quote.total_yen == 300
    await abolish_seal(platform, registration)  # the registry changes between order and payment
    paid = await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=300))
    assert reason(paid) == "NO_ACTIVE_SEAL"
    assert await money(platform) == {"documents": {}, "charges": {}, "fee_lines": (0, 0)}


async def test_honseki_usage_required_then_approved(platform):
    resident_id, card = await add_resident(platform, holder())
    await add_register(platform, "271004", [(resident_id, "山田 花子", "妻")])  # 本籍 in Osaka
    the_order = order(T.CERTIFICATE_TYPE_FAMILY_REGISTER_INDIVIDUAL)
    assert await refused_with(platform, card, the_order) == "HONSEKI_USAGE_NOT_REGISTERED"
    # apply in the kiosk flow
    steps = Steps(kiosk(platform, "k-h"), "t-h")
    await steps.sign_in(card)
    applied = await steps.send(honseki_usage=pb.HonsekiUsageStep())
    assert applied.honseki_usage.status == pb.HONSEKI_USAGE_STATUS_PENDING
    assert applied.honseki_usage.honseki_code == "271004"
    await steps.send(cancel=pb.Cancel())
    assert await refused_with(platform, card, the_order) == "HONSEKI_USAGE_NOT_REGISTERED"
    # Chiyoda cannot approve for Osaka; Osaka can
    from tests.helpers import expect_error
    import grpc
    await expect_error(staff(platform, CHIYODA).ApproveHonsekiUsage(pb.ApproveHonsekiUsageRequest(
        request_id="a1", honseki_code="271004", usage_id=applied.honseki_usage.usage_id, approve=True)),
        grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    listed = await staff(platform, "271004").ListHonsekiUsages(pb.ListHonsekiUsagesRequest(honseki_code="271004"))
    assert [u.usage_id for u in listed.usages] == [applied.honseki_usage.usage_id]
    approved = await staff(platform, "271004").ApproveHonsekiUsage(pb.ApproveHonsekiUsageRequest(
        request_id="a1", honseki_code="271004", usage_id=applied.honseki_usage.usage_id, approve=True))
    assert approved.usage.status == pb.HONSEKI_USAGE_STATUS_APPROVED
    result = await kiosk(platform, "k-h2").transact(card, "1234", the_order)
    assert result.ok, result.refusal
    assert result.documents[0].municipality_code == "271004"
    assert result.quote.fee_per_copy_yen == 450


async def test_card_locked(platform):
    _, card = await add_resident(platform, holder())
    with pytest.raises(WrongPin):
        card.sign_with_auth_key(b"x", "0000")
    while True:
        try:
            card.sign_with_auth_key(b"x", "0000")
        except CardLocked:
            break
        except WrongPin:
            continue
    assert await refused_with(platform, card, order()) == "CARD_LOCKED"
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT state FROM kiosk_transactions") == "locked"


async def test_cert_revoked(platform):
    _, card = await add_resident(platform, holder())
    platform.pki.revoke_card(card, now=platform.clock.now())
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id="crl-1", crl=platform.pki.crl_path.read_bytes()))
    assert await refused_with(platform, card, order()) == "CERT_REVOKED"


async def test_cert_expired(platform):
    _, card = await add_resident(platform, holder())
    expiry = card.auth_certificate.not_valid_after_utc.astimezone(JST)
    # the next day at noon (within kiosk hours, after the certificate's end)
    platform.clock.set(expiry.replace(hour=12, minute=0, second=0) + timedelta(days=1))
    assert await refused_with(platform, card, order()) == "CERT_EXPIRED"


async def test_city_hall_kiosk_serves_own_residents_unless_it_serves_all(platform):
    _, card = await add_resident(platform, holder())  # a Chiyoda resident
    await platform.add_municipality("082244", "守谷市", "茨城県")
    await platform.add_municipality("131024", "中央区")
    assert await refused_with(platform, card, order(), kind="city_hall", lg="131024") == "NOT_SERVED_AT_THIS_KIOSK"
    # Moriya's city-hall kiosks serve every participating municipality (seed §3(2)③)
    result = await kiosk(platform, "k-moriya", kind="city_hall", lg="082244").transact(card, "1234", order())
    assert result.ok, result.refusal


async def test_tax_certificate_current_fiscal_year(platform):
    resident_id, card = await add_resident(platform, holder())
    await add_tax(platform, resident_id, fiscal_year=2025)
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_TAX)) == "NO_TAX_RECORD"
    await add_tax(platform, resident_id, fiscal_year=2026)
    result = await kiosk(platform, "k-t").transact(card, "1234", order(T.CERTIFICATE_TYPE_TAX))
    assert result.ok
    from tests.issuance.kit import pdf_text
    text = pdf_text(result.documents[0].pdf)
    assert "2026年度" in text and "2025年分" in text


async def test_seal_abolished_through_the_registry_service_is_refused_at_once(platform):
    from onestop.registry.v1 import registry_pb2, registry_pb2_grpc

    resident_id, card = await add_resident(platform, holder())
    registry = registry_pb2_grpc.RegistryServiceStub(platform.municipality(CHIYODA))
    await registry.RegisterSeal(registry_pb2.RegisterSealRequest(
        request_id="r1", resident_id=resident_id, registration_number="S-77", registered_on="2021-04-01"))
    first = await kiosk(platform, "k-1").transact(card, "1234", order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION))
    assert first.ok, first.refusal
    steps = Steps(kiosk(platform, "k-2"))
    await steps.sign_in(card)
    assert reason(await steps.send(order=order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION))) == "OK"
    await registry.AbolishSeal(registry_pb2.AbolishSealRequest(request_id="a1", resident_id=resident_id))
    assert reason(await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=300))) == "NO_ACTIVE_SEAL"
    assert await refused_with(platform, card, order(T.CERTIFICATE_TYPE_SEAL_REGISTRATION)) == "NO_ACTIVE_SEAL"
    stored = await money(platform)
    assert stored["documents"] == {"printed": 1} and stored["charges"] == {"posted": (1, 300)}
