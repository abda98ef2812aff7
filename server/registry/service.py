"""RegistryService adapter: translate messages, check the caller, call the registry rules."""

from __future__ import annotations

import hashlib
import sqlite3

from onestop.registry.v1 import registry_pb2
from onestop.registry.v1 import registry_pb2_grpc

from server import authz, context, pagination
from server.authz import ANYONE, RESIDENT, either, machine
from server.convert import ts_ms
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.idempotency import check_request_id, run_once
from server.platform import Platform
from server.registry import rules, store
from server.registry.records import ResidentFields, check_code

pb = registry_pb2
IMPORT_CHUNK_ROWS = 250  # rows per write transaction of an import stream

SERVICE = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name
MUNICIPALITY = machine("municipality")

authz.register(SERVICE, {
    "ListMunicipalities": ANYONE,
    "GetMunicipality": ANYONE,
    "UpsertResident": MUNICIPALITY,
    "GetResident": either(MUNICIPALITY, RESIDENT),
    "ListResidents": MUNICIPALITY,
    "RecordMove": MUNICIPALITY,
    "SetIssuanceBars": MUNICIPALITY,
    "LinkCard": MUNICIPALITY,
    "UnlinkCard": MUNICIPALITY,
    "RegisterSeal": MUNICIPALITY,
    "AbolishSeal": MUNICIPALITY,
    "PutTaxRecord": MUNICIPALITY,
    "ListTaxRecords": either(MUNICIPALITY, RESIDENT),
    "PutFamilyRegister": MUNICIPALITY,
    "GetFamilyRegister": MUNICIPALITY,
    "ImportResidents": MUNICIPALITY,
})

_STATUS = {"active": pb.RESIDENT_STATUS_ACTIVE, "moving_out": pb.RESIDENT_STATUS_MOVING_OUT,
           "moved_out": pb.RESIDENT_STATUS_MOVED_OUT, "deceased": pb.RESIDENT_STATUS_DECEASED}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}
_MOVE = {pb.MOVE_KIND_MOVE_IN: rules.MOVE_IN, pb.MOVE_KIND_PLANNED_MOVE_OUT: rules.PLANNED_MOVE_OUT,
         pb.MOVE_KIND_MOVE_OUT: rules.MOVE_OUT, pb.MOVE_KIND_CANCEL_PLANNED_MOVE_OUT: rules.CANCEL_PLANNED_MOVE_OUT}


def _sex(value: int) -> str:
    return str(value) if value in (1, 2, 3) else ""


# --- message conversion ----------------------------------------------------------------------------


def municipality_message(row: sqlite3.Row) -> pb.Municipality:
    return pb.Municipality(code=row["code"], prefecture=row["prefecture"], name=row["name"],
                           name_kana=row["name_kana"], url=row["url"], latitude=row["latitude"] or 0.0,
                           longitude=row["longitude"] or 0.0)


def resident_message(row: sqlite3.Row) -> pb.Resident:
    return pb.Resident(
        resident_id=row["resident_id"], municipality_code=row["municipality_code"],
        household_id=row["household_id"] or "", household_head=bool(row["household_head"]),
        name=row["name"], name_kana=row["name_kana"], birth_date=row["birth_date"], sex=int(row["sex"]),
        address=row["address"], relationship=row["relationship"], honseki_code=row["honseki_code"] or "",
        moved_in_on=row["moved_in_on"] or "", status=_STATUS[row["status"]],
        moving_out_on=row["moving_out_on"] or "", moved_out_on=row["moved_out_on"] or "",
        moved_out_to=row["moved_out_to"] or "", dv_protection=bool(row["dv_protection"]),
        deceased_on=row["deceased_on"] or "", family_register_id=row["family_register_id"] or "",
        version=row["version"], update_time=ts_ms(row["updated_at_ms"]),
    )


def link_message(row: sqlite3.Row) -> pb.CardLink:
    return pb.CardLink(link_id=row["link_id"], resident_id=row["resident_id"], auth_issuer=row["auth_issuer"],
                       auth_serial=row["auth_serial"], sign_issuer=row["sign_issuer"],
                       sign_serial=row["sign_serial"], link_time=ts_ms(row["linked_at_ms"]),
                       unlink_time=ts_ms(row["unlinked_at_ms"]))


def seal_message(row: sqlite3.Row) -> pb.SealRegistration:
    return pb.SealRegistration(registration_id=row["registration_id"], resident_id=row["resident_id"],
                               registration_number=row["registration_number"],
                               registered_on=row["registered_on"], abolish_time=ts_ms(row["abolished_at_ms"]))


def tax_message(row: sqlite3.Row) -> pb.TaxRecord:
    return pb.TaxRecord(resident_id=row["resident_id"], fiscal_year=row["fiscal_year"],
                        total_income=row["total_income"], taxable_income=row["taxable_income"],
                        municipal_tax=row["municipal_tax"], prefectural_tax=row["prefectural_tax"],
                        dependents=row["dependents"], update_time=ts_ms(row["updated_at_ms"]))


async def register_message(tx, register_id: str) -> pb.FamilyRegister:
    row = await store.family_register(tx, register_id)
    members = await store.family_register_members(tx, register_id)
    return pb.FamilyRegister(
        register_id=row["register_id"], honseki_code=row["honseki_code"], honseki_address=row["honseki_address"],
        head_name=row["head_name"], pending_notification=bool(row["pending_notification"]),
        update_time=ts_ms(row["updated_at_ms"]),
        members=[pb.FamilyRegisterMember(member_no=m["member_no"], resident_id=m["resident_id"] or "",
                                         name=m["name"], birth_date=m["birth_date"], sex=int(m["sex"]),
                                         relationship=m["relationship"], removed=bool(m["removed"]))
                 for m in members],
    )


def resident_fields(message, municipality_code: str) -> ResidentFields:
    """From a Resident or an ImportRow message."""
    return ResidentFields(
        resident_id=message.resident_id, municipality_code=municipality_code, household_id=message.household_id,
        household_head=message.household_head, name=message.name, name_kana=message.name_kana,
        birth_date=message.birth_date, sex=_sex(message.sex), address=message.address,
        relationship=message.relationship, honseki_code=message.honseki_code, moved_in_on=message.moved_in_on,
    )


def _position(token: str, key: str, kind: type) -> object | None:
    position = pagination.decode_token(token)
    if position is None:
        return None
    value = position.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and not 0 <= value <= 10_000) or (
            kind is str and len(value) > 200):
        raise InvalidArgument.field("page_token", "not a token returned by this list")
    return value


# --- the servicer ----------------------------------------------------------------------------------


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform

    @property
    def _db(self):
        return self._p.db

    def _now(self):
        return self._p.clock.now()

    async def _once(self, request, response_type, work):
        return await run_once(self._db, self._p.clock, request, response_type, work)

    # municipalities

    async def ListMunicipalities(self, request, context_):
        size = pagination.page_size(request.page_size)
        after = _position(request.page_token, "code", str) or ""
        async with self._db.read() as tx:
            rows = await store.list_municipalities(tx, prefecture=request.prefecture.strip(),
                                                   keyword=request.keyword.strip(), after=after, limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListMunicipalitiesResponse(
            municipalities=[municipality_message(r) for r in rows],
            next_page_token=pagination.encode_token({"code": rows[-1]["code"]}) if more else "",
        )

    async def GetMunicipality(self, request, context_):
        rules.invalid(check_code("code", request.code, required=True))
        async with self._db.read() as tx:
            row = await store.municipality(tx, request.code)
        if row is None:
            raise NotFound("MUNICIPALITY_NOT_FOUND", "no municipality with this code")
        return pb.GetMunicipalityResponse(municipality=municipality_message(row))

    # residents

    async def UpsertResident(self, request, context_):
        principal = context.current().principal

        async def work(tx):
            lgcode = request.resident.municipality_code or getattr(principal, "id", "")
            written = await rules.upsert_resident(tx, principal, resident_fields(request.resident, lgcode),
                                                  request.expected_version, self._now())
            return pb.UpsertResidentResponse(
                resident=resident_message(await store.resident(tx, written.resident_id)), created=written.created)

        return await self._once(request, pb.UpsertResidentResponse, work)

    async def GetResident(self, request, context_):
        principal = context.current().principal
        async with self._db.read() as tx:
            row = await rules.readable_resident(tx, principal, request.resident_id)
            seal = await store.live_seal(tx, row["resident_id"])
            link = await store.active_link(tx, row["resident_id"])
        return pb.GetResidentResponse(resident=resident_message(row),
                                      seal=seal_message(seal) if seal else None,
                                      card_link=link_message(link) if link else None)

    async def ListResidents(self, request, context_):
        violations = check_code("municipality_code", request.municipality_code, required=True)
        if request.status and request.status not in _STATUS_NAME:
            violations.append(FieldViolation("status", "unknown status"))
        rules.invalid(violations)
        authz.require_municipality(context.current().principal, request.municipality_code)
        size = pagination.page_size(request.page_size)
        after = _position(request.page_token, "id", str) or ""
        async with self._db.read() as tx:
            rows = await store.list_residents(tx, request.municipality_code, household_id=request.household_id,
                                              status=_STATUS_NAME.get(request.status, ""), after=after,
                                              limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListResidentsResponse(
            residents=[resident_message(r) for r in rows],
            next_page_token=pagination.encode_token({"id": rows[-1]["resident_id"]}) if more else "",
        )

    async def RecordMove(self, request, context_):
        principal = context.current().principal

        async def work(tx):
            await rules.record_move(tx, principal, request.resident_id, _MOVE.get(request.kind, ""), request.date,
                                    request.destination, request.expected_version, self._now())
            return pb.RecordMoveResponse(resident=resident_message(await store.resident(tx, request.resident_id)))

        return await self._once(request, pb.RecordMoveResponse, work)

    async def SetIssuanceBars(self, request, context_):
        principal = context.current().principal
        dv = request.dv_protection if request.HasField("dv_protection") else None

        async def work(tx):
            await rules.set_issuance_bars(tx, principal, request.resident_id, dv, request.deceased_on, self._now())
            return pb.SetIssuanceBarsResponse(resident=resident_message(await store.resident(tx, request.resident_id)))

        return await self._once(request, pb.SetIssuanceBarsResponse, work)

    # card links

    async def LinkCard(self, request, context_):
        principal = context.current().principal
        authenticator = self._p.services["authenticator"]

        async def work(tx):
            trust = await authenticator.trust.current()
            linked = await rules.link_card(tx, principal, trust, request.resident_id, request.auth_certificate,
                                           request.sign_certificate, self._now())
            return pb.LinkCardResponse(link=link_message(await store.link(tx, linked.link_id)),
                                       ended_link_id=linked.ended_link_id)

        return await self._once(request, pb.LinkCardResponse, work)

    async def UnlinkCard(self, request, context_):
        principal = context.current().principal

        async def work(tx):
            link_id = await rules.unlink_card(tx, principal, request.resident_id, request.link_id, self._now())
            return pb.UnlinkCardResponse(link=link_message(await store.link(tx, link_id)))

        return await self._once(request, pb.UnlinkCardResponse, work)

    # seals

    async def RegisterSeal(self, request, context_):
        principal = context.current().principal

        async def work(tx):
            registration_id = await rules.register_seal(tx, principal, request.resident_id,
                                                        request.registration_number, request.registered_on,
                                                        self._now())
            return pb.RegisterSealResponse(registration=seal_message(await store.seal(tx, registration_id)))

        return await self._once(request, pb.RegisterSealResponse, work)

    async def AbolishSeal(self, request, context_):
        principal = context.current().principal

        async def work(tx):
            registration_id = await rules.abolish_seal(tx, principal, request.resident_id, self._now())
            return pb.AbolishSealResponse(registration=seal_message(await store.seal(tx, registration_id)))

        return await self._once(request, pb.AbolishSealResponse, work)

    # tax records

    async def PutTaxRecord(self, request, context_):
        principal = context.current().principal
        r = request.record
        fields = rules.TaxFields(r.resident_id, r.fiscal_year, r.total_income, r.taxable_income, r.municipal_tax,
                                 r.prefectural_tax, r.dependents)

        async def work(tx):
            await rules.put_tax_record(tx, principal, fields, self._now())
            return pb.PutTaxRecordResponse(record=tax_message(await store.tax_record(tx, r.resident_id,
                                                                                     r.fiscal_year)))

        return await self._once(request, pb.PutTaxRecordResponse, work)

    async def ListTaxRecords(self, request, context_):
        principal = context.current().principal
        size = pagination.page_size(request.page_size)
        before = _position(request.page_token, "year", int) or 10_000
        async with self._db.read() as tx:
            row = await rules.readable_resident(tx, principal, request.resident_id)
            rows = await store.tax_records(tx, row["resident_id"], before_year=before, limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListTaxRecordsResponse(
            records=[tax_message(r) for r in rows],
            next_page_token=pagination.encode_token({"year": rows[-1]["fiscal_year"]}) if more else "",
        )

    # family registers

    async def PutFamilyRegister(self, request, context_):
        principal = context.current().principal
        r = request.register
        fields = rules.RegisterFields(
            register_id=r.register_id, honseki_code=r.honseki_code, honseki_address=r.honseki_address,
            head_name=r.head_name, pending_notification=r.pending_notification,
            members=[rules.MemberFields(m.member_no, m.resident_id, m.name, m.birth_date, _sex(m.sex),
                                        m.relationship, m.removed) for m in r.members],
        )

        async def work(tx):
            register_id = await rules.put_family_register(tx, principal, fields, self._now())
            return pb.PutFamilyRegisterResponse(register=await register_message(tx, register_id))

        return await self._once(request, pb.PutFamilyRegisterResponse, work)

    async def GetFamilyRegister(self, request, context_):
        principal = context.current().principal
        async with self._db.read() as tx:
            await rules.readable_register(tx, principal, request.register_id)
            return pb.GetFamilyRegisterResponse(register=await register_message(tx, request.register_id))

    # bulk import

    async def ImportResidents(self, request_iterator, context_):
        principal = context.current().principal
        batch = pb.ImportResidentsBatch()
        last = 0
        async for message in request_iterator:
            index = len(batch.rows)
            if index == 0:
                batch.request_id, batch.municipality_code = message.request_id, message.municipality_code
                check_request_id(batch.request_id)
                rules.invalid(check_code("municipality_code", batch.municipality_code, required=True))
                authz.require_municipality(principal, batch.municipality_code)
            elif (message.request_id and message.request_id != batch.request_id) or (
                    message.municipality_code and message.municipality_code != batch.municipality_code):
                raise InvalidArgument.field(f"rows[{index}]", "request_id and municipality_code must not change")
            if index >= rules.MAX_IMPORT_ROWS:
                raise InvalidArgument.field("rows", f"at most {rules.MAX_IMPORT_ROWS} rows per stream",
                                            reason="TOO_MANY_ROWS")
            if message.row.row_number <= last:
                raise InvalidArgument.field(f"rows[{index}].row_number", "must be greater than the previous row's")
            last = message.row.row_number
            batch.rows.append(message.row)
        if not batch.rows:
            raise InvalidArgument.field("rows", "the stream carried no rows")
        # The stream is written in chunks, each its own transaction, so a large import never holds
        # the one writer for long (kiosks and sign-ins keep writing in between). Each chunk is keyed
        # by the request_id under its own method suffix and carries the digest of the whole stream,
        # so a retry replays every chunk already done, completes the rest, and a different stream
        # under the same request_id is refused (REQUEST_ID_REUSED) before anything is written.
        whole = hashlib.sha256(batch.SerializeToString(deterministic=True)).digest()
        method = context.current().method
        total = pb.ImportResidentsResponse(last_row_number=last)
        for index, start in enumerate(range(0, len(batch.rows), IMPORT_CHUNK_ROWS)):
            chunk = pb.ImportResidentsBatch(request_id=batch.request_id, municipality_code=batch.municipality_code,
                                            rows=batch.rows[start:start + IMPORT_CHUNK_ROWS], stream_digest=whole,
                                            chunk=index)
            part = await run_once(self._db, self._p.clock, chunk, pb.ImportResidentsResponse,
                                  self._import_chunk(chunk), method=f"{method}#{index}")
            total.received += part.received
            total.created += part.created
            total.updated += part.updated
            total.rejected_count += part.rejected_count
            total.rejected.extend(part.rejected)
            total.imported.extend(part.imported)

        async def work(tx):
            return total

        return await self._once(batch, pb.ImportResidentsResponse, work)

    def _import_chunk(self, chunk: pb.ImportResidentsBatch):
        rows = [(r.row_number, resident_fields(r, chunk.municipality_code)) for r in chunk.rows]

        async def work(tx):
            outcome = await rules.import_rows(tx, chunk.municipality_code, rows, self._now())
            return pb.ImportResidentsResponse(
                received=len(rows), created=outcome.created, updated=outcome.updated,
                rejected_count=len(outcome.rejected), last_row_number=rows[-1][0],
                rejected=[pb.RowRejection(row_number=n, violations=[pb.FieldViolation(field=v.field,
                                                                                      description=v.description)
                                                                    for v in vs])
                          for n, vs in outcome.rejected],
                imported=[pb.ImportedResident(row_number=n, resident_id=rid) for n, rid in outcome.written],
            )

        return work


def add_to_server(server, platform: Platform) -> list[str]:
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(platform), server)
    return [SERVICE]
