"""IssuanceService adapter: the kiosk stream, settings, 利用登録, verification, settlements."""

from __future__ import annotations

import asyncio
import re

from onestop.issuance.v1 import issuance_pb2, issuance_pb2_grpc

from server import authz, context, pagination
from server.authz import ANYONE, RESIDENT, Machine, machine
from server.clock import to_epoch_ms
from server.convert import ts_ms
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.idempotency import run_once
from server.issuance import kiosk as kiosk_rules
from server.issuance import rules, store
from server.issuance.kiosk import KioskDesk, load_settings, normalise_code, usage_message
from server.issuance.rules import KioskSettings
from server.platform import Platform

pb = issuance_pb2
SERVICE = pb.DESCRIPTOR.services_by_name["IssuanceService"].full_name
_LGCODE = re.compile(r"[0-9]{6}")
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

authz.register(SERVICE, {
    "KioskSession": machine("kiosk"),
    "ApplyHonsekiUsage": RESIDENT,
    "ApproveHonsekiUsage": machine("municipality"),
    "ListHonsekiUsages": machine("municipality"),
    "GetKioskSettings": machine("municipality"),
    "UpdateKioskSettings": machine("municipality"),
    "VerifyCertificate": ANYONE,
    "GetSettlement": machine("municipality"),
    "ListJlisContributions": ANYONE,
})


async def prepare(platform: Platform) -> None:
    platform.services["kiosk_desk"] = KioskDesk(platform)


def _lgcode(value: str, name: str = "municipality_code") -> str:
    if not _LGCODE.fullmatch(value or ""):
        raise InvalidArgument.field(name, "a 6-digit local-government code")
    return value


def settings_message(lgcode: str, s: KioskSettings, updated_ms: int | None) -> pb.KioskSettings:
    return pb.KioskSettings(
        municipality_code=lgcode, participating=s.participating, offered_types=sorted(s.offered_types),
        fees=[pb.Fee(certificate_type=t, fee_yen=s.fee(t)) for t in rules.ALL_TYPES],
        open_minute=s.open_minute, close_minute=s.close_minute,
        family_register_weekdays_only=s.family_register_weekdays_only,
        family_register_open_minute=s.family_register_open_minute,
        family_register_close_minute=s.family_register_close_minute,
        individual_number_allowed=s.individual_number_allowed, city_hall_serves_all=s.city_hall_serves_all,
        updated_at=ts_ms(updated_ms),
    )


def settings_from_message(m: pb.KioskSettings) -> KioskSettings:
    fees = dict(rules.DEFAULT_FEES)
    bad = []
    for fee in m.fees:
        if fee.certificate_type not in rules.ALL_TYPES:
            bad.append(FieldViolation("settings.fees", "unknown certificate type"))
        fees[fee.certificate_type] = fee.fee_yen
    if bad:
        raise InvalidArgument.fields(bad)
    s = KioskSettings(
        participating=m.participating, offered_types=sorted(set(m.offered_types)), fees=fees,
        open_minute=m.open_minute, close_minute=m.close_minute,
        family_register_weekdays_only=m.family_register_weekdays_only,
        family_register_open_minute=m.family_register_open_minute or 9 * 60,
        family_register_close_minute=m.family_register_close_minute or 17 * 60,
        individual_number_allowed=m.individual_number_allowed, city_hall_serves_all=m.city_hall_serves_all,
    )
    s.validate()
    return s


class IssuanceServicer(issuance_pb2_grpc.IssuanceServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._desk: KioskDesk = platform.services["kiosk_desk"]

    async def KioskSession(self, request_iterator, context_):
        principal = context.current().principal
        assert isinstance(principal, Machine) and principal.role == "kiosk"
        async for request in request_iterator:
            # A step that has started runs to its end even if the kiosk's line drops meanwhile: its
            # answer is stored for the resend, and no database transaction is cut in the middle.
            yield await asyncio.shield(asyncio.ensure_future(self._desk.handle(principal, request)))

    async def ApplyHonsekiUsage(self, request, context_):
        resident = authz.require_resident(context.current().principal)

        async def work(tx):
            usage = await kiosk_rules.apply_honseki_usage(tx, resident.resident_id, self._p.clock.now())
            return pb.ApplyHonsekiUsageResponse(usage=usage)

        return await run_once(self._p.db, self._p.clock, request, pb.ApplyHonsekiUsageResponse, work)

    async def ApproveHonsekiUsage(self, request, context_):
        code = _lgcode(request.honseki_code, "honseki_code")
        authz.require_municipality(context.current().principal, code)
        if not request.usage_id:
            raise InvalidArgument.field("usage_id", "required")

        async def work(tx):
            row = await store.honseki_usage_by_id(tx, request.usage_id)
            if row is None or row["honseki_code"] != code:
                raise NotFound("UNKNOWN_USAGE", "no such 利用登録 for this 本籍地")
            await store.decide_honseki_usage(tx, request.usage_id, "approved" if request.approve else "rejected",
                                             to_epoch_ms(self._p.clock.now()))
            return pb.ApproveHonsekiUsageResponse(usage=usage_message(await store.honseki_usage_by_id(tx, request.usage_id)))

        return await run_once(self._p.db, self._p.clock, request, pb.ApproveHonsekiUsageResponse, work)

    async def ListHonsekiUsages(self, request, context_):
        code = _lgcode(request.honseki_code, "honseki_code")
        authz.require_municipality(context.current().principal, code)
        size = pagination.page_size(request.page_size)
        position = pagination.decode_token(request.page_token)
        after = position.get("after") if position else None
        async with self._p.db.read() as tx:
            rows = await store.honseki_usages_page(tx, code, after, size + 1)
        page = rows[:size]
        token = pagination.encode_token({"after": page[-1]["usage_id"]}) if len(rows) > size else ""
        return pb.ListHonsekiUsagesResponse(usages=[usage_message(r) for r in page], next_page_token=token)

    async def GetKioskSettings(self, request, context_):
        code = _lgcode(request.municipality_code)
        authz.require_municipality(context.current().principal, code)
        async with self._p.db.read() as tx:
            if await store.municipality(tx, code) is None:
                raise NotFound("UNKNOWN_MUNICIPALITY", "no such municipality")
            row = await store.settings_row(tx, code)
            settings = await load_settings(tx, code)
        return pb.GetKioskSettingsResponse(settings=settings_message(code, settings, row["updated_at_ms"] if row else None))

    async def UpdateKioskSettings(self, request, context_):
        code = _lgcode(request.settings.municipality_code, "settings.municipality_code")
        authz.require_municipality(context.current().principal, code)
        settings = settings_from_message(request.settings)

        async def work(tx):
            if await store.municipality(tx, code) is None:
                raise NotFound("UNKNOWN_MUNICIPALITY", "no such municipality")
            now_ms = to_epoch_ms(self._p.clock.now())
            await store.put_settings(tx, code, settings.to_json(), now_ms)
            return pb.UpdateKioskSettingsResponse(settings=settings_message(code, settings, now_ms))

        return await run_once(self._p.db, self._p.clock, request, pb.UpdateKioskSettingsResponse, work)

    async def VerifyCertificate(self, request, context_):
        if not request.verification_code or len(request.verification_code) > 64:
            raise InvalidArgument.field("verification_code", "required, at most 64 characters")
        async with self._p.db.read() as tx:
            row = await store.document_by_code(tx, normalise_code(request.verification_code))
        if row is None:
            return pb.VerifyCertificateResponse(status=pb.VERIFICATION_STATUS_UNKNOWN)
        status = pb.VERIFICATION_STATUS_VOIDED if row["status"] == "voided" else pb.VERIFICATION_STATUS_GENUINE
        return pb.VerifyCertificateResponse(
            status=status, certificate_type=row["certificate_type"], municipality_code=row["municipality_code"],
            municipality_name=row["municipality_name"] or "", issued_at=ts_ms(row["issued_at_ms"]), serial=row["serial"])

    async def GetSettlement(self, request, context_):
        code = _lgcode(request.municipality_code)
        if not _MONTH.fullmatch(request.month):
            raise InvalidArgument.field("month", "YYYY-MM")
        authz.require_municipality(context.current().principal, code)
        async with self._p.db.read() as tx:
            rows = await store.settlement(tx, code, request.month)
        lines = [pb.SettlementLine(operator=r["operator"], copies=r["copies"], fees_collected_yen=r["fees"],
                                   owed_to_operator_yen=r["owed"]) for r in rows]
        return pb.GetSettlementResponse(
            municipality_code=code, month=request.month, lines=lines, total_copies=sum(x.copies for x in lines),
            total_owed_yen=sum(x.owed_to_operator_yen for x in lines),
            total_fees_yen=sum(x.fees_collected_yen for x in lines))

    async def ListJlisContributions(self, request, context_):
        size = pagination.page_size(request.page_size)
        position = pagination.decode_token(request.page_token)
        start = int(position.get("i", 0)) if position else 0
        if request.population < 0:
            raise InvalidArgument.field("population", "must not be negative")
        if request.municipality_kind not in (0, 1, 2, 3):
            raise InvalidArgument.field("municipality_kind", "unknown kind")
        table = rules.jlis_rows(request.municipality_kind, request.population)
        page = table[start:start + size]
        token = pagination.encode_token({"i": start + size}) if start + size < len(table) else ""
        return pb.ListJlisContributionsResponse(
            contributions=[pb.JlisContribution(
                municipality_class=c.municipality_class, population_bracket=c.population_bracket,
                population_min=c.population_min, population_max=c.population_max,
                current_man_yen=c.current_man_yen, revised_man_yen=c.revised_man_yen,
                reduction_percent=c.reduction_percent, new_bracket=c.new_bracket) for c in page],
            next_page_token=token)


def add_to_server(server, platform: Platform) -> list[str]:
    issuance_pb2_grpc.add_IssuanceServiceServicer_to_server(IssuanceServicer(platform), server)
    return [SERVICE]
