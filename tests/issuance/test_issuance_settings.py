"""Settings per municipality (own staff only), verification, settlements, the J-LIS table."""

from __future__ import annotations

import grpc
import pytest
from onestop.issuance.v1 import issuance_pb2 as pb

from server.issuance import rules
from tests.helpers import expect_error
from tests.issuance.kit import CHIYODA, add_resident, kiosk, order, staff, stub
from server.testing import holder

INVALID, DENIED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED


async def test_defaults_then_own_fees(platform):
    await platform.add_municipality(CHIYODA)
    got = (await staff(platform).GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code=CHIYODA))).settings
    fees = {f.certificate_type: f.fee_yen for f in got.fees}
    assert fees[pb.CERTIFICATE_TYPE_RESIDENT_RECORD] == 300 and fees[pb.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL] == 450
    assert (got.open_minute, got.close_minute, got.participating) == (390, 1380, True)
    assert not got.individual_number_allowed and not got.city_hall_serves_all
    del got.fees[:]
    got.fees.append(pb.Fee(certificate_type=pb.CERTIFICATE_TYPE_RESIDENT_RECORD, fee_yen=200))
    updated = await staff(platform).UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="u1", settings=got))
    assert {f.certificate_type: f.fee_yen for f in updated.settings.fees}[pb.CERTIFICATE_TYPE_RESIDENT_RECORD] == 200
    # the same request_id again: the first outcome
    again = await staff(platform).UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="u1", settings=got))
    assert again == updated
    _, card = await add_resident(platform, holder())
    result = await kiosk(platform).transact(card, "1234", order(copies=3))
    assert result.quote.fee_per_copy_yen == 200 and result.receipt.total_yen == 600


async def test_moriya_city_hall_serves_all_by_default(platform):
    await platform.add_municipality("082244", "守谷市", "茨城県")
    got = (await staff(platform, "082244").GetKioskSettings(
        pb.GetKioskSettingsRequest(municipality_code="082244"))).settings
    assert got.city_hall_serves_all


async def test_staff_of_other_municipality_refused(platform):
    await platform.add_municipality(CHIYODA)
    await expect_error(staff(platform, "131024").GetKioskSettings(
        pb.GetKioskSettingsRequest(municipality_code=CHIYODA)), DENIED, "OTHER_MUNICIPALITY")
    await expect_error(staff(platform, "131024").UpdateKioskSettings(pb.UpdateKioskSettingsRequest(
        request_id="x", settings=pb.KioskSettings(municipality_code=CHIYODA, open_minute=0, close_minute=60))),
        DENIED, "OTHER_MUNICIPALITY")
    await expect_error(staff(platform, "131024").GetSettlement(pb.GetSettlementRequest(
        municipality_code=CHIYODA, month="2026-12")), DENIED, "OTHER_MUNICIPALITY")
    await expect_error(stub(platform).GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code=CHIYODA)),
                       grpc.StatusCode.UNAUTHENTICATED)


async def test_settings_bad_input_names_the_field(platform):
    await platform.add_municipality(CHIYODA)
    s = staff(platform)
    await expect_error(s.GetKioskSettings(pb.GetKioskSettingsRequest(municipality_code="13")), INVALID,
                       field="municipality_code")
    await expect_error(s.UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="b1", settings=pb.KioskSettings(
        municipality_code=CHIYODA, open_minute=600, close_minute=500))), INVALID, field="settings.close_minute")
    await expect_error(s.UpdateKioskSettings(pb.UpdateKioskSettingsRequest(request_id="b2", settings=pb.KioskSettings(
        municipality_code=CHIYODA, open_minute=0, close_minute=60,
        fees=[pb.Fee(certificate_type=pb.CERTIFICATE_TYPE_TAX, fee_yen=-5)]))), INVALID, field="settings.fees")
    await expect_error(s.UpdateKioskSettings(pb.UpdateKioskSettingsRequest(settings=pb.KioskSettings(
        municipality_code=CHIYODA, open_minute=0, close_minute=60))), INVALID, field="request_id")
    await expect_error(s.GetSettlement(pb.GetSettlementRequest(municipality_code=CHIYODA, month="2026-13")),
                       INVALID, field="month")


async def test_verify_unknown_and_bad_code(platform):
    public = stub(platform)
    unknown = await public.VerifyCertificate(pb.VerifyCertificateRequest(verification_code="AAAA-BBBB-CCCC-DDDD"))
    assert unknown.status == pb.VERIFICATION_STATUS_UNKNOWN and unknown.serial == ""
    await expect_error(public.VerifyCertificate(pb.VerifyCertificateRequest()), INVALID, field="verification_code")


async def test_jlis_contributions_current_and_revised(platform):
    public = stub(platform)
    first = await public.ListJlisContributions(pb.ListJlisContributionsRequest(page_size=4))
    rest = await public.ListJlisContributions(pb.ListJlisContributionsRequest(page_token=first.next_page_token))
    assert rest.next_page_token == ""
    rows = [(c.municipality_class, c.population_bracket, c.current_man_yen, c.revised_man_yen, c.reduction_percent)
            for c in [*first.contributions, *rest.contributions]]
    assert rows == [
        ("政令市", "100万以上", 1000, 970, 3),
        ("政令市", "100万未満", 800, 770, 4),
        ("市(区)", "15万以上", 500, 470, 6),
        ("市(区)", "5万以上15万未満", 300, 270, 10),
        ("市", "5万未満(新設)", 300, 220, 27),
        ("町村", "—", 100, 70, 30),
    ]
    assert [c.new_bracket for c in rest.contributions] == [True, False]
    await expect_error(public.ListJlisContributions(pb.ListJlisContributionsRequest(page_token="!!")), INVALID,
                       field="page_token")


def test_reductions_match_the_amounts():
    for row in rules.JLIS_CONTRIBUTIONS:
        assert round(100 * (row.current_man_yen - row.revised_man_yen) / row.current_man_yen) == row.reduction_percent


@pytest.mark.parametrize("kind,population,expected", [
    (pb.MUNICIPALITY_KIND_DESIGNATED_CITY, 3_700_000, [("政令市", 1000, 970)]),
    (pb.MUNICIPALITY_KIND_DESIGNATED_CITY, 720_000, [("政令市", 800, 770)]),
    (pb.MUNICIPALITY_KIND_CITY, 150_000, [("市(区)", 500, 470)]),
    (pb.MUNICIPALITY_KIND_CITY, 149_999, [("市(区)", 300, 270)]),
    (pb.MUNICIPALITY_KIND_CITY, 40_000, [("市", 300, 220)]),
    (pb.MUNICIPALITY_KIND_TOWN_OR_VILLAGE, 12_000, [("町村", 100, 70)]),
])
async def test_jlis_contribution_of_one_municipality(platform, kind, population, expected):
    reply = await stub(platform).ListJlisContributions(pb.ListJlisContributionsRequest(
        municipality_kind=kind, population=population))
    assert [(c.municipality_class, c.current_man_yen, c.revised_man_yen) for c in reply.contributions] == expected


async def test_jlis_bad_population(platform):
    await expect_error(stub(platform).ListJlisContributions(pb.ListJlisContributionsRequest(population=-1)),
                       INVALID, field="population")
