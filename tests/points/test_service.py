"""PointsService over real gRPC: MyKey ID, bindings, memberships, the ledger's operations and refusals."""

from __future__ import annotations

import grpc
from onestop.points.v1 import points_pb2 as pb

from .kit import LG, OTHER_LG, Kit, ledger_sums, refused, rid

REGULAR = (pb.ACCOUNT_KIND_REGULAR, LG, "")


async def test_mykey_id_grant_redeem_capture(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    assert len(hanako.mykey_id) == 8 and hanako.mykey_id.isalnum() and hanako.mykey_id.isupper()
    got = await kit.anon.GetMyKeyId(pb.GetMyKeyIdRequest(), metadata=hanako.md)
    assert got.mykey_id == hanako.mykey_id

    granted = await kit.grant(hanako, 1000)
    assert granted.balance == 1000
    hold = await kit.authorize(hanako, 300)
    assert hold.available == 700
    assert (await kit.balances(hanako))[REGULAR] == (1000, 300, 700)
    captured = await kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id))
    assert captured.amount == 300
    assert (await kit.balances(hanako))[REGULAR] == (700, 0, 700)

    settlement = await kit.staff.GetMerchantSettlement(pb.GetMerchantSettlementRequest(municipality_code=LG))
    assert [(m.merchant_id, m.owed, m.captures) for m in settlement.merchants] == [("shop-lib-1", 300, 1)]
    history = await kit.anon.ListTransfers(pb.ListTransfersRequest(page_size=1), metadata=hanako.md)
    assert [(t.code, t.amount) for t in history.transfers] == [("grant", 1000)]
    page2 = await kit.anon.ListTransfers(pb.ListTransfersRequest(page_size=1, page_token=history.next_page_token),
                                         metadata=hanako.md)
    assert [(t.code, t.amount) for t in page2.transfers] == [("capture", -300)]
    assert page2.next_page_token == ""
    assert await ledger_sums(platform) == (0, 0)


async def test_mykey_id_exists_and_card_of_someone_else(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    taro = await kit.resident("鈴木 太郎", mykey=False)
    await refused(kit.anon.CreateMyKeyId(pb.CreateMyKeyIdRequest(request_id=rid(), card=await kit.present(hanako.card)),
                                         metadata=hanako.md), grpc.StatusCode.ALREADY_EXISTS, "MYKEY_ID_EXISTS")
    # Taro's session on a shared terminal, Hanako's card: refused.
    await refused(kit.anon.CreateMyKeyId(pb.CreateMyKeyIdRequest(request_id=rid(), card=await kit.present(hanako.card)),
                                         metadata=taro.md), grpc.StatusCode.PERMISSION_DENIED, "CARD_NOT_CALLERS")
    await refused(kit.anon.CreateMyKeyId(pb.CreateMyKeyIdRequest(request_id=rid()), metadata=taro.md),
                  grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", field="card.challenge_id")
    await refused(kit.anon.GetMyKeyId(pb.GetMyKeyIdRequest(), metadata=taro.md),
                  grpc.StatusCode.NOT_FOUND, "MYKEY_ID_NOT_FOUND")
    await refused(kit.anon.GetMyKeyId(pb.GetMyKeyIdRequest()), grpc.StatusCode.UNAUTHENTICATED,
                  "AUTHENTICATION_REQUIRED")


async def test_bind_needs_fresh_card_signature_and_one_owner(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    taro = await kit.resident("鈴木 太郎")
    # A session alone (shared terminal left signed in) is not enough.
    await refused(kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1"), metadata=hanako.md),
        grpc.StatusCode.PERMISSION_DENIED, "FRESH_CARD_SIGNATURE_REQUIRED")
    # Hanako signed in, Taro's card: refused.
    await refused(kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1", card=await kit.present(taro.card)),
        metadata=hanako.md), grpc.StatusCode.PERMISSION_DENIED, "CARD_NOT_CALLERS")
    # A reused challenge is no fresh signature.
    card = await kit.present(hanako.card)
    bound = await kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1", card=card), metadata=hanako.md)
    assert bound.mykey_id == hanako.mykey_id
    await refused(kit.anon.BindPaymentAccount(pb.BindPaymentAccountRequest(
        request_id=rid(), provider="bank", account_ref="B-1", card=card), metadata=hanako.md),
        grpc.StatusCode.UNAUTHENTICATED, "NONCE_REPLAYED")
    # The account is Hanako's: Taro cannot bind it, even with his own fresh signature.
    await refused(kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1", card=await kit.present(taro.card)),
        metadata=taro.md), grpc.StatusCode.ALREADY_EXISTS, "ACCOUNT_BOUND_ELSEWHERE")
    await refused(kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="", member_account="M-1", card=await kit.present(taro.card)),
        metadata=taro.md), grpc.StatusCode.INVALID_ARGUMENT, field="partner_id")
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT kind, provider, account_ref, mykey_id FROM points_bound_accounts")
    assert [tuple(r) for r in rows] == [("partner", "card-co", "M-1", hanako.mykey_id)]


async def test_conversion_holding_choose_and_sweep(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await refused(kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=100)),
        grpc.StatusCode.FAILED_PRECONDITION, "PARTNER_NOT_CONFIGURED")
    await kit.operator.SetPartnerRate(pb.SetPartnerRateRequest(request_id=rid(), partner_id="card-co", rate_milli=500))
    await refused(kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=100)), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_BOUND")
    await kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-1", card=await kit.present(hanako.card)),
        metadata=hanako.md)
    await refused(kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=1)),
        grpc.StatusCode.INVALID_ARGUMENT, "CONVERTS_TO_ZERO", field="partner_points")
    first = await kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=101))
    assert first.municipal_points == 50  # 101 * 0.5 rounded down
    second = await kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-1", partner_points=40))
    assert (await kit.balances(hanako))[(pb.ACCOUNT_KIND_HOLDING, "", "")] == (70, 0, 70)
    held = await kit.anon.ListHeldConversions(pb.ListHeldConversionsRequest(), metadata=hanako.md)
    assert {c.conversion_id for c in held.conversions} == {first.conversion_id, second.conversion_id}

    chosen = await kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id=first.conversion_id, municipality_code=OTHER_LG), metadata=hanako.md)
    assert chosen.balance == 50
    await refused(kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id=first.conversion_id, municipality_code=LG), metadata=hanako.md),
        grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_PLACED")
    await kit.advance(days=14)
    await kit.relogin(hanako)
    await refused(kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id=second.conversion_id, municipality_code=OTHER_LG), metadata=hanako.md),
        grpc.StatusCode.FAILED_PRECONDITION, "HOLDING_PERIOD_OVER")
    swept = await kit.operator.SweepHoldings(pb.SweepHoldingsRequest(request_id=rid()))
    assert swept.conversions_placed == 1
    balances = await kit.balances(hanako)
    assert balances[(pb.ACCOUNT_KIND_REGULAR, OTHER_LG, "")][0] == 50
    assert balances[REGULAR][0] == 20  # the residence, by default
    assert balances[(pb.ACCOUNT_KIND_HOLDING, "", "")][0] == 0
    assert await ledger_sums(platform) == (0, 0)


async def test_redemption_refusals_by_reason(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.grant(hanako, 100)
    await refused(kit.authorize(hanako, 101), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await refused(kit.authorize(hanako, 10, shop=kit.far_shop), grpc.StatusCode.FAILED_PRECONDITION,
                  "MERCHANT_NOT_IN_MUNICIPALITY")
    await refused(kit.authorize(hanako, 0), grpc.StatusCode.INVALID_ARGUMENT, field="amount")
    hold = await kit.authorize(hanako, 60)
    await refused(kit.authorize(hanako, 41), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    # Another shop cannot see or capture it.
    await refused(kit.shop2.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id)),
                  grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    await kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id))
    await refused(kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_CAPTURED")
    await refused(kit.shop.VoidRedemption(pb.VoidRedemptionRequest(request_id=rid(), hold_id=hold.hold_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_CAPTURED")
    voided = await kit.authorize(hanako, 40)
    await kit.shop.VoidRedemption(pb.VoidRedemptionRequest(request_id=rid(), hold_id=voided.hold_id))
    await refused(kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=voided.hold_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_VOIDED")
    # An authorisation expires after 10 minutes and releases its points.
    stale = await kit.authorize(hanako, 40)
    assert (await kit.balances(hanako))[REGULAR] == (40, 40, 0)
    platform.clock.advance(minutes=10)
    assert (await kit.balances(hanako))[REGULAR] == (40, 0, 40)
    await refused(kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=stale.hold_id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    again = await kit.authorize(hanako, 40)
    assert again.available == 0
    async with platform.db.read() as tx:
        states = dict(await tx.all("SELECT hold_id, state FROM points_holds"))
    assert states[stale.hold_id] == "expired" and states[hold.hold_id] == "captured"
    assert states[voided.hold_id] == "voided" and states[again.hold_id] == "pending"
    assert await ledger_sums(platform) == (0, 0)


async def test_event_points_only_at_event_merchants_and_donation(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    event = await kit.staff.DefineSupportEvent(pb.DefineSupportEventRequest(
        request_id=rid(), municipality_code=LG, title="復興支援", merchant_ids=["shop-street-2"]))
    await kit.grant(hanako, 50, event_id=event.event_id)
    await kit.grant(hanako, 30)
    await refused(kit.authorize(hanako, 10, event_id=event.event_id), grpc.StatusCode.FAILED_PRECONDITION,
                  "EVENT_ONLY_MERCHANT")
    hold = await kit.authorize(hanako, 50, shop=kit.shop2, event_id=event.event_id)
    assert hold.available == 0
    await refused(kit.authorize(hanako, 10, event_id="evt_nope"), grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND")
    donated = await kit.anon.DonateToEvent(pb.DonateToEventRequest(
        request_id=rid(), municipality_code=LG, event_id=event.event_id, amount=20), metadata=hanako.md)
    assert donated.balance == 10
    await refused(kit.anon.DonateToEvent(pb.DonateToEventRequest(
        request_id=rid(), municipality_code=LG, event_id=event.event_id, amount=11), metadata=hanako.md),
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    balances = await kit.balances(hanako)
    assert balances[(pb.ACCOUNT_KIND_EVENT, LG, event.event_id)] == (50, 50, 0)
    assert balances[REGULAR] == (10, 0, 10)
    assert await ledger_sums(platform) == (0, 0)


async def test_expiry_oldest_first_by_municipality_rule(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.staff.SetPointRules(pb.SetPointRulesRequest(request_id=rid(), municipality_code=LG, expiry_months=6))
    await kit.grant(hanako, 100)
    await kit.advance(days=90)
    await kit.grant(hanako, 50)
    hold = await kit.authorize(hanako, 120)   # spends the oldest lot first once captured
    await kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id))
    await kit.advance(days=100)          # the first lot (now empty) has expired, the second not
    nothing = await kit.staff.ExpirePoints(pb.ExpirePointsRequest(request_id=rid(), municipality_code=LG))
    assert nothing.expired_points == 0
    await kit.advance(days=100)          # the second lot's 30 remaining points expire
    expired = await kit.staff.ExpirePoints(pb.ExpirePointsRequest(request_id=rid(), municipality_code=LG))
    assert (expired.expired_points, expired.accounts) == (30, 1)
    await kit.relogin(hanako)
    assert (await kit.balances(hanako))[REGULAR] == (0, 0, 0)
    await refused(kit.other_staff.ExpirePoints(pb.ExpirePointsRequest(request_id=rid(), municipality_code=LG)),
                  grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    assert await ledger_sums(platform) == (0, 0)


async def test_callers_and_scope(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await refused(kit.other_staff.GrantPoints(pb.GrantPointsRequest(
        request_id=rid(), municipality_code=LG, mykey_id=hanako.mykey_id, amount=5)),
        grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(kit.shop.GrantPoints(pb.GrantPointsRequest(
        request_id=rid(), municipality_code=LG, mykey_id=hanako.mykey_id, amount=5)),
        grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await refused(kit.anon.GrantPoints(pb.GrantPointsRequest(
        request_id=rid(), municipality_code=LG, mykey_id=hanako.mykey_id, amount=5), metadata=hanako.md),
        grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await refused(kit.staff.GrantPoints(pb.GrantPointsRequest(
        request_id=rid(), municipality_code=LG, mykey_id="ZZZZZZZZ", amount=5)),
        grpc.StatusCode.NOT_FOUND, "MYKEY_ID_NOT_FOUND")
    await refused(kit.staff.GrantPoints(pb.GrantPointsRequest(
        request_id="", municipality_code=LG, mykey_id=hanako.mykey_id, amount=5)),
        grpc.StatusCode.INVALID_ARGUMENT, field="request_id")
    await refused(kit.staff.GrantPoints(pb.GrantPointsRequest(
        request_id=rid(), municipality_code=LG, mykey_id=hanako.mykey_id, amount=-5)),
        grpc.StatusCode.INVALID_ARGUMENT, field="amount")
    await refused(kit.anon.GetBalances(pb.GetBalancesRequest()), grpc.StatusCode.UNAUTHENTICATED)


async def test_retries_return_the_first_outcome(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    request = pb.GrantPointsRequest(request_id=rid(), municipality_code=LG, mykey_id=hanako.mykey_id, amount=70)
    first = await kit.staff.GrantPoints(request)
    again = await kit.staff.GrantPoints(request)
    assert again == first and (await kit.balances(hanako))[REGULAR][0] == 70
    changed = pb.GrantPointsRequest(request_id=request.request_id, municipality_code=LG, mykey_id=hanako.mykey_id,
                                    amount=71)
    await refused(kit.staff.GrantPoints(changed), grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    # A refusal is replayed too, even once the world would allow it.
    hold_request_id = rid()
    await refused(kit.authorize(hanako, 100, request_id=hold_request_id), grpc.StatusCode.FAILED_PRECONDITION,
                  "INSUFFICIENT_FUNDS")
    too_much = pb.DonateToEventRequest(request_id=rid(), municipality_code=LG, event_id="evt_x", amount=80)
    await refused(kit.anon.DonateToEvent(too_much, metadata=hanako.md), grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND")
    await kit.staff.DefineSupportEvent(pb.DefineSupportEventRequest(
        request_id=rid(), municipality_code=LG, title="t", merchant_ids=["m"]))
    await refused(kit.anon.DonateToEvent(too_much, metadata=hanako.md), grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND")
    # A captured hold's capture retried: same answer, one transfer.
    hold = await kit.authorize(hanako, 30)
    capture = pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id)
    assert await kit.shop.CaptureRedemption(capture) == await kit.shop.CaptureRedemption(capture)
    async with platform.db.read() as tx:
        count = await tx.scalar("SELECT COUNT(*) FROM points_transfers WHERE code='capture'")
    assert count == 1
    assert (await kit.balances(hanako))[REGULAR] == (40, 0, 40)


async def test_lists_page_and_refuse_bad_tokens_and_places(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.grant(hanako, 100)
    for shop in (kit.shop, kit.shop2):
        hold = await kit.authorize(hanako, 10, shop=shop)
        await shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id))
    first = await kit.staff.GetMerchantSettlement(pb.GetMerchantSettlementRequest(municipality_code=LG, page_size=1))
    assert [m.merchant_id for m in first.merchants] == ["shop-lib-1"] and first.next_page_token
    second = await kit.staff.GetMerchantSettlement(pb.GetMerchantSettlementRequest(
        municipality_code=LG, page_size=1, page_token=first.next_page_token))
    assert [(m.merchant_id, m.owed) for m in second.merchants] == [("shop-street-2", 10)]
    assert second.next_page_token == ""
    await refused(kit.other_staff.GetMerchantSettlement(pb.GetMerchantSettlementRequest(municipality_code=LG)),
                  grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(kit.anon.ListTransfers(pb.ListTransfersRequest(page_token="not-a-token"), metadata=hanako.md),
                  grpc.StatusCode.INVALID_ARGUMENT, field="page_token")
    await refused(kit.anon.ListTransfers(pb.ListTransfersRequest(page_size=-1), metadata=hanako.md),
                  grpc.StatusCode.INVALID_ARGUMENT, field="page_size")
    pages, token = [], ""
    for _ in range(10):  # bounded
        page = await kit.anon.ListTransfers(pb.ListTransfersRequest(page_size=2, page_token=token), metadata=hanako.md)
        pages.append([(t.code, t.amount) for t in page.transfers])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[("grant", 100), ("capture", -10)], [("capture", -10)]]

    await kit.operator.SetPartnerRate(pb.SetPartnerRateRequest(request_id=rid(), partner_id="card-co",
                                                               rate_milli=1000))
    await refused(kit.operator.SetPartnerRate(pb.SetPartnerRateRequest(request_id=rid(), partner_id="card-co",
                                                                       rate_milli=0)),
                  grpc.StatusCode.INVALID_ARGUMENT, field="rate_milli")
    await kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="card-co", member_account="M-9", card=await kit.present(hanako.card)),
        metadata=hanako.md)
    conversion = await kit.partner.ConvertPartnerPoints(pb.ConvertPartnerPointsRequest(
        request_id=rid(), member_account="M-9", partner_points=7))
    assert conversion.municipal_points == 7
    await refused(kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id=conversion.conversion_id, municipality_code="999999"), metadata=hanako.md),
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_MUNICIPALITY")
    await refused(kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id="cnv_someone_elses", municipality_code=LG), metadata=hanako.md),
        grpc.StatusCode.NOT_FOUND, "CONVERSION_NOT_FOUND")
    await refused(kit.anon.ChooseMunicipality(pb.ChooseMunicipalityRequest(
        request_id=rid(), conversion_id=conversion.conversion_id, municipality_code="13101"), metadata=hanako.md),
        grpc.StatusCode.INVALID_ARGUMENT, field="municipality_code")


async def test_a_grant_is_corrected_by_a_new_transfer_never_an_edit(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    grant = await kit.grant(hanako, 100)
    hold = await kit.authorize(hanako, 30)
    await kit.shop.CaptureRedemption(pb.CaptureRedemptionRequest(request_id=rid(), hold_id=hold.hold_id))

    def correct(amount, transfer_id=grant.transfer_id, staff=None, lgcode=LG):
        return (staff or kit.staff).CorrectGrant(pb.CorrectGrantRequest(
            request_id=rid(), municipality_code=lgcode, transfer_id=transfer_id, amount=amount))

    await refused(correct(80), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")  # 30 already spent
    first = await correct(60)
    assert (first.amount, first.balance) == (60, 10)
    await refused(correct(41), grpc.StatusCode.FAILED_PRECONDITION, "CORRECTION_EXCEEDS_GRANT")
    await refused(correct(0, transfer_id="trf_nope"), grpc.StatusCode.NOT_FOUND, "TRANSFER_NOT_FOUND")
    await refused(correct(1, staff=kit.other_staff, lgcode=OTHER_LG), grpc.StatusCode.NOT_FOUND, "TRANSFER_NOT_FOUND")
    await refused(correct(1, staff=kit.other_staff), grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(correct(-1), grpc.StatusCode.INVALID_ARGUMENT, field="amount")
    await refused(correct(0), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")  # 40 left, 10 there
    last = await correct(10)
    assert last.balance == 0
    async with platform.db.read() as tx:
        rows = [tuple(r) for r in await tx.all("SELECT code, amount, ref FROM points_transfers ORDER BY seq")]
    assert rows == [("grant", 100, ""), ("capture", 30, hold.hold_id), ("correction", 60, grant.transfer_id),
                    ("correction", 10, grant.transfer_id)]
    history = await kit.anon.ListTransfers(pb.ListTransfersRequest(), metadata=hanako.md)
    assert [(t.code, t.amount) for t in history.transfers] == [("grant", 100), ("capture", -30), ("correction", -60),
                                                              ("correction", -10)]
    assert await ledger_sums(platform) == (0, 0)
