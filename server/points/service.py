"""PointsService adapter: check the caller, verify card presentations, hand work to the batch writer."""

from __future__ import annotations

import functools

from onestop.points.v1 import points_pb2, points_pb2_grpc

from server import authz, context
from server.authz import RESIDENT, Machine, machine
from server.clock import to_epoch_ms
from server.convert import ts_ms
from server.errors import InvalidArgument, NotFound, PermissionDenied
from server.idempotency import check_request_id
from server.pagination import decode_token, encode_token, page_size
from server.platform import Platform
from server.points import ledger, mykey, store
from server.points.mykey import SignedCard
from server.points.writer import BatchWriter, digest

pb = points_pb2  # (the module name `points_pb2` is how the shared guard tests find this service)
SERVICE = pb.DESCRIPTOR.services_by_name["PointsService"].full_name
SHOP = machine("shop")
MUNICIPALITY = machine("municipality")

authz.register(SERVICE, {
    "CreateMyKeyId": RESIDENT,
    "RelinkMyKeyId": RESIDENT,
    "GetMyKeyId": RESIDENT,
    "BindPartnerAccount": RESIDENT,
    "BindPaymentAccount": RESIDENT,
    "RegisterMembership": SHOP,
    "LookupMembership": SHOP,
    "SetPartnerRate": machine("operator"),
    "SetPointRules": MUNICIPALITY,
    "DefineSupportEvent": MUNICIPALITY,
    "GrantPoints": MUNICIPALITY,
    "CorrectGrant": MUNICIPALITY,
    "ConvertPartnerPoints": machine("partner"),
    "ListHeldConversions": RESIDENT,
    "ChooseMunicipality": RESIDENT,
    "AuthorizeRedemption": SHOP,
    "CaptureRedemption": SHOP,
    "VoidRedemption": SHOP,
    "DonateToEvent": RESIDENT,
    "ExpirePoints": MUNICIPALITY,
    "SweepHoldings": machine("operator"),
    "GetBalances": RESIDENT,
    "ListTransfers": RESIDENT,
    "GetMerchantSettlement": MUNICIPALITY,
})

KIND = {"resident": pb.ACCOUNT_KIND_REGULAR, "holding": pb.ACCOUNT_KIND_HOLDING}


async def prepare(platform: Platform) -> None:
    writer = BatchWriter(platform.db, platform.clock)
    platform.services["points_writer"] = writer
    platform.on_shutdown.append(writer.aclose)


def _kind(row) -> int:
    if row["kind"] == "resident" and row["event_id"]:
        return pb.ACCOUNT_KIND_EVENT
    return KIND[row["kind"]]


class PointsServicer(points_pb2_grpc.PointsServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._writer: BatchWriter = platform.services["points_writer"]

    # --- plumbing -----------------------------------------------------------------------------

    def _key(self, request) -> tuple[str, str, str]:
        check_request_id(request.request_id)
        call = context.current()
        return call.principal.caller_key, call.method, request.request_id

    async def _submit(self, request, response_type, work):
        return await self._writer.submit(self._key(request), request, response_type, work)

    async def _submit_with_card(self, request, response_type, work_for_card, *, required_reason: str | None = None):
        """A mutating request carrying a card presentation: a retry is answered from the stored
        outcome before the (single-use) challenge is looked at again."""
        key = self._key(request)
        async with self._p.db.read() as tx:
            prior = await store.recall(tx, key, digest(request), response_type)
        if prior is not None:
            return prior
        card = await self._verify(request.card, required_reason=required_reason)
        return await self._writer.submit(key, request, response_type, functools.partial(work_for_card, card))

    async def _verify(self, card: pb.CardPresentation, *, required_reason: str | None = None) -> SignedCard:
        if required_reason and not (card.challenge_id or card.certificate or card.signature):
            raise PermissionDenied(required_reason, "binding an account needs a fresh card signature in this request")
        for name in ("challenge_id", "certificate", "signature"):
            if not getattr(card, name):
                raise InvalidArgument.field(f"card.{name}", "required")
        signed = await self._p.services["authenticator"].verify_card_response(
            card.challenge_id, card.certificate, card.signature)
        return SignedCard(signed.resident_id, signed.card.issuer, signed.card.serial_hex)

    @staticmethod
    def _resident() -> str:
        return authz.require_resident(context.current().principal).resident_id

    @staticmethod
    def _machine() -> Machine:
        principal = context.current().principal
        assert isinstance(principal, Machine)
        return principal

    def _own_municipality(self, code: str) -> None:
        ledger.check_lgcode(code)
        authz.require_municipality(context.current().principal, code)

    def _now_ms(self) -> int:
        return to_epoch_ms(self._p.clock.now())

    # --- MyKey ID, bindings, memberships --------------------------------------------------------

    async def CreateMyKeyId(self, request, context_):
        resident = self._resident()
        return await self._submit_with_card(
            request, pb.CreateMyKeyIdResponse,
            lambda card, conn, now: mykey.create(conn, now, resident, card))

    async def RelinkMyKeyId(self, request, context_):
        resident = self._resident()
        return await self._submit_with_card(
            request, pb.RelinkMyKeyIdResponse,
            lambda card, conn, now: mykey.relink(conn, now, resident, card))

    async def GetMyKeyId(self, request, context_):
        async with self._p.db.read() as tx:
            row = await store.mykey_of_resident(tx, self._resident())
        return pb.GetMyKeyIdResponse(mykey_id=row["mykey_id"], created_at=ts_ms(row["created_at_ms"]))

    async def BindPartnerAccount(self, request, context_):
        resident = self._resident()
        mykey.check_ref(request.partner_id, "partner_id")
        mykey.check_ref(request.member_account, "member_account")

        def work(card, conn, now):
            bound = mykey.bind(conn, now, resident, card, "partner", request.partner_id, request.member_account)
            return pb.BindPartnerAccountResponse(mykey_id=bound)

        return await self._submit_with_card(request, pb.BindPartnerAccountResponse, work,
                                            required_reason="FRESH_CARD_SIGNATURE_REQUIRED")

    async def BindPaymentAccount(self, request, context_):
        resident = self._resident()
        mykey.check_ref(request.provider, "provider")
        mykey.check_ref(request.account_ref, "account_ref")

        def work(card, conn, now):
            bound = mykey.bind(conn, now, resident, card, "payment", request.provider, request.account_ref)
            return pb.BindPaymentAccountResponse(mykey_id=bound)

        return await self._submit_with_card(request, pb.BindPaymentAccountResponse, work,
                                            required_reason="FRESH_CARD_SIGNATURE_REQUIRED")

    async def RegisterMembership(self, request, context_):
        shop = self._machine()
        kind = shop.attributes.get("kind", "shop")
        return await self._submit_with_card(
            request, pb.RegisterMembershipResponse,
            lambda card, conn, now: mykey.register(conn, now, shop.id, kind, card, request.member_number))

    async def LookupMembership(self, request, context_):
        shop = self._machine()
        card = await self._verify(request.card)
        async with self._p.db.read() as tx:
            mykey_id = await store.mykey_for_card(tx, card.resident_id, card.issuer, card.serial)
            row = await store.membership(tx, shop.id, mykey_id)
        if row is None:
            raise NotFound("NOT_A_MEMBER", "the card holder is not a member here")
        return pb.LookupMembershipResponse(membership=mykey.membership_message(row))

    # --- configuration --------------------------------------------------------------------------

    async def SetPartnerRate(self, request, context_):
        return await self._submit(request, pb.SetPartnerRateResponse, lambda conn, now: ledger.set_partner_rate(
            conn, now, request.partner_id, request.rate_milli))

    async def SetPointRules(self, request, context_):
        self._own_municipality(request.municipality_code)
        return await self._submit(request, pb.SetPointRulesResponse, lambda conn, now: ledger.set_point_rules(
            conn, now, request.municipality_code, request.expiry_months))

    async def DefineSupportEvent(self, request, context_):
        self._own_municipality(request.municipality_code)
        return await self._submit(request, pb.DefineSupportEventResponse, lambda conn, now: ledger.define_event(
            conn, now, request.municipality_code, request.title, list(request.merchant_ids)))

    # --- ledger -----------------------------------------------------------------------------------

    async def GrantPoints(self, request, context_):
        self._own_municipality(request.municipality_code)
        return await self._submit(request, pb.GrantPointsResponse, lambda conn, now: ledger.grant(
            conn, now, request.municipality_code, request.mykey_id, request.amount, request.event_id))

    async def CorrectGrant(self, request, context_):
        self._own_municipality(request.municipality_code)
        return await self._submit(request, pb.CorrectGrantResponse, lambda conn, now: ledger.correct_grant(
            conn, now, request.municipality_code, request.transfer_id, request.amount))

    async def ConvertPartnerPoints(self, request, context_):
        partner = self._machine()
        return await self._submit(request, pb.ConvertPartnerPointsResponse, lambda conn, now: ledger.convert(
            conn, now, partner.id, request.member_account, request.partner_points))

    async def ChooseMunicipality(self, request, context_):
        resident = self._resident()
        return await self._submit(request, pb.ChooseMunicipalityResponse, lambda conn, now: ledger.choose_municipality(
            conn, now, resident, request.conversion_id, request.municipality_code))

    async def AuthorizeRedemption(self, request, context_):
        shop = self._machine()
        ledger.check_lgcode(request.municipality_code)
        ledger.check_amount(request.amount)

        def work(card, conn, now):
            holder = mykey.mykey_for_card(conn, card)
            return ledger.authorize(conn, now, shop.id, shop.municipality, holder, request.municipality_code,
                                    request.event_id, request.amount)

        return await self._submit_with_card(request, pb.AuthorizeRedemptionResponse, work)

    async def CaptureRedemption(self, request, context_):
        shop = self._machine()
        return await self._submit(request, pb.CaptureRedemptionResponse,
                                  lambda conn, now: ledger.capture(conn, now, shop.id, request.hold_id))

    async def VoidRedemption(self, request, context_):
        shop = self._machine()
        return await self._submit(request, pb.VoidRedemptionResponse,
                                  lambda conn, now: ledger.void(conn, now, shop.id, request.hold_id))

    async def DonateToEvent(self, request, context_):
        resident = self._resident()
        return await self._submit(request, pb.DonateToEventResponse, lambda conn, now: ledger.donate(
            conn, now, resident, request.municipality_code, request.event_id, request.amount))

    async def ExpirePoints(self, request, context_):
        self._own_municipality(request.municipality_code)
        return await self._submit(request, pb.ExpirePointsResponse,
                                  lambda conn, now: ledger.expire(conn, now, request.municipality_code))

    async def SweepHoldings(self, request, context_):
        return await self._submit(request, pb.SweepHoldingsResponse, lambda conn, now: ledger.sweep(conn, now))

    # --- reads ------------------------------------------------------------------------------------

    async def GetBalances(self, request, context_):
        async with self._p.db.read() as tx:
            row = await store.mykey_of_resident(tx, self._resident())
            rows = await store.balances(tx, row["mykey_id"], self._now_ms())
        return pb.GetBalancesResponse(mykey_id=row["mykey_id"], balances=[
            pb.Balance(kind=_kind(r), municipality_code=r["municipality_code"], event_id=r["event_id"],
                       balance=r["balance"], held=r["held"], available=r["balance"] - r["held"]) for r in rows])

    async def ListTransfers(self, request, context_):
        size = page_size(request.page_size)
        position = decode_token(request.page_token) or {"seq": 0, "side": -2}
        try:
            after = (int(position["seq"]), int(position["side"]))
            if not 0 <= after[0] < 2**62 or after[1] not in (-2, -1, 1):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument.field("page_token", "not a token returned by this list") from None
        async with self._p.db.read() as tx:
            row = await store.mykey_of_resident(tx, self._resident())
            rows = await store.transfers(tx, row["mykey_id"], after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        token = encode_token({"seq": rows[-1]["seq"], "side": rows[-1]["sign"]}) if more else ""
        return pb.ListTransfersResponse(next_page_token=token, transfers=[
            pb.Transfer(transfer_id=r["transfer_id"], code=r["code"], amount=r["sign"] * r["amount"], kind=_kind(r),
                        municipality_code=r["municipality_code"], event_id=r["event_id"],
                        created_at=ts_ms(r["created_at_ms"])) for r in rows])

    async def ListHeldConversions(self, request, context_):
        size = page_size(request.page_size)
        position = decode_token(request.page_token) or {"after": ""}
        async with self._p.db.read() as tx:
            row = await store.mykey_of_resident(tx, self._resident())
            rows = await store.held_conversions(tx, row["mykey_id"], str(position.get("after", "")), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListHeldConversionsResponse(
            next_page_token=encode_token({"after": rows[-1]["conversion_id"]}) if more else "",
            conversions=[pb.HeldConversion(conversion_id=r["conversion_id"], partner_id=r["partner_id"],
                                           municipal_points=r["municipal_points"],
                                           held_until=ts_ms(r["held_until_ms"])) for r in rows])

    async def GetMerchantSettlement(self, request, context_):
        self._own_municipality(request.municipality_code)
        size = page_size(request.page_size)
        position = decode_token(request.page_token) or {"after": ""}
        async with self._p.db.read() as tx:
            rows = await store.settlement(tx, request.municipality_code, str(position.get("after", "")), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.GetMerchantSettlementResponse(
            next_page_token=encode_token({"after": rows[-1]["merchant_id"]}) if more else "",
            merchants=[pb.MerchantOwed(merchant_id=r["merchant_id"], owed=r["owed"], captures=r["captures"])
                       for r in rows])


def add_to_server(server, platform: Platform) -> list[str]:
    points_pb2_grpc.add_PointsServiceServicer_to_server(PointsServicer(platform), server)
    return [SERVICE]
