"""NotificationService adapter: parse, authorise, call the area's rules and store, translate.

Also publishes `platform.services["notices"]` (NoticeSink) for the other areas, and starts this
process's scheduler loop (due notices, daily rules) and stream hub.
"""

from __future__ import annotations

import json
import logging
from datetime import date

from onestop.notification.v1 import notification_pb2, notification_pb2_grpc

from server import authz, context, pagination
from server.authz import RESIDENT, machine
from server.clock import to_epoch_ms
from server.convert import from_ts, ts_ms
from server.db import Tx
from server.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from server.idempotency import run_once
from server.ids import new_id
from server.notification import ages, rules, store, templates
from server.notification.hub import DeliveryHub
from server.notification.scheduler import Scheduler, complete_fan_out, today
from server.notification.sink import CATEGORIES, NoticeSink, check_text
from server.platform import Platform

log = logging.getLogger("onestop.notification")

pb, pb_grpc = notification_pb2, notification_pb2_grpc  # (module names kept: the contract guards find them)
SERVICE = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name
STAFF = machine("municipality")

authz.register(SERVICE, {
    "SendNotice": STAFF,
    "CancelNotice": STAFF,
    "GetNotice": STAFF,
    "ListSentNotices": STAFF,
    "RunRules": STAFF,
    "SetBenefitHousehold": STAFF,
    "RecordVaccination": STAFF,
    "ListSurveyAnswers": STAFF,
    "ListNotices": RESIDENT,
    "MarkNoticeRead": RESIDENT,
    "StreamNotices": RESIDENT,
    "AnswerSurvey": RESIDENT,
    "GetSelfInformation": RESIDENT,
})

MAX_LISTED = 1000
MAX_CHOICES = 20
MAX_LINK = 2000
MAX_COMMENT = 2000
STREAM_BATCH = 100
SESSION_RECHECK_MS = 5_000  # a live stream re-checks its session at most this often (platform clock)
VACCINES = ("hib", "pcv", "hepb", "dpt_ipv", "dpt_ipv_hib", "bcg", "mr", "varicella", "je", "hpv", "rota",
            "influenza", "other")
PROGRAMS = {
    pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE: "child_allowance",
    pb.BENEFIT_PROGRAM_CHILD_REARING_ALLOWANCE: "child_rearing_allowance",
    pb.BENEFIT_PROGRAM_NURSERY: "nursery",
}
PROGRAM_ENUM = {v: k for k, v in PROGRAMS.items()}
STATUS = {"scheduled": pb.NOTICE_STATUS_SCHEDULED, "sent": pb.NOTICE_STATUS_SENT,
          "cancelled": pb.NOTICE_STATUS_CANCELLED}


async def prepare(platform: Platform) -> None:
    hub = DeliveryHub(platform.db, poll_seconds=platform.settings.notification_poll_ms / 1000)
    platform.services["notification_hub"] = hub
    platform.services["notices"] = NoticeSink(platform.clock, on_delivered=hub.poke)
    scheduler = Scheduler(platform, on_delivered=hub.poke)
    platform.services["notification_scheduler"] = scheduler
    platform.on_shutdown += [scheduler.stop, hub.stop]
    scheduler.start()


# Parsing -------------------------------------------------------------------------------------------

def _lgcode(code: str, field: str = "municipality_code") -> str:
    if len(code) != 6 or not code.isdigit():
        raise InvalidArgument.field(field, "a 6-digit local government code")
    return code


def _audience(request: pb.SendNoticeRequest) -> dict:
    which = request.audience.WhichOneof("kind")
    if which is None:
        raise InvalidArgument.field("audience", "required: residents, all_residents, parents_of_children or"
                                                " benefit_recipients")
    if which == "residents":
        ids = list(request.audience.residents.resident_ids)
        if not ids:
            raise InvalidArgument.field("audience.resident_ids", "at least one resident")
        if len(ids) > MAX_LISTED:
            raise InvalidArgument.field("audience.resident_ids", f"at most {MAX_LISTED}; use a segment")
        if len(set(ids)) != len(ids):
            raise InvalidArgument.field("audience.resident_ids", "listed twice")
        return {"kind": "residents", "resident_ids": ids}
    if which == "all_residents":
        return {"kind": "all_residents"}
    if which == "parents_of_children":
        seg = request.audience.parents_of_children
        problems = []
        if not 0 <= seg.min_months <= 12 * 18:
            problems.append(FieldViolation("audience.min_months", "0 to 216"))
        if not seg.min_months <= seg.max_months <= 12 * 18:
            problems.append(FieldViolation("audience.max_months", "at least min_months and at most 216"))
        if problems:
            raise InvalidArgument.fields(problems)
        audience = {"kind": "parents_of_children", "min_months": seg.min_months, "max_months": seg.max_months}
        if seg.as_of:
            audience["as_of"] = ages.parse_date(seg.as_of, "audience.as_of").isoformat()
        return audience
    program = PROGRAMS.get(request.audience.benefit_recipients.program)
    if program is None:
        raise InvalidArgument.field("audience.program", "a benefit program")
    return {"kind": "benefit_recipients", "program": program}


def _position(token: str, *keys: str) -> dict | None:
    """A page token of this service, its keys checked (a forged one is INVALID_ARGUMENT, not INTERNAL)."""
    position = pagination.decode_token(token)
    if position is not None and (set(position) != set(keys) or not all(
            (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63))
            for v in position.values())):
        raise InvalidArgument.field("page_token", "not a token returned by this list")
    return position


def _choices(raw) -> list[dict]:
    choices = [{"choice_id": c.choice_id, "label": c.label} for c in raw]
    if len(choices) > MAX_CHOICES:
        raise InvalidArgument.field("survey_choices", f"at most {MAX_CHOICES}")
    seen = set()
    for i, c in enumerate(choices):
        if not c["choice_id"] or len(c["choice_id"]) > 64 or not c["choice_id"].isprintable():
            raise InvalidArgument.field(f"survey_choices[{i}].choice_id", "1 to 64 printable characters")
        if c["choice_id"] in seen:
            raise InvalidArgument.field(f"survey_choices[{i}].choice_id", "used twice")
        if not c["label"].strip() or len(c["label"]) > 200:
            raise InvalidArgument.field(f"survey_choices[{i}].label", "1 to 200 characters")
        seen.add(c["choice_id"])
    return choices


# Translation ---------------------------------------------------------------------------------------

def _survey(raw: str | None) -> list[pb.SurveyChoice]:
    return [pb.SurveyChoice(**c) for c in json.loads(raw)] if raw else []


def _sent(row, delivered: int, read: int) -> pb.SentNotice:
    status = STATUS[row["status"]]
    if row["status"] == "sent" and not row["fanout_done"]:
        status = pb.NOTICE_STATUS_SENDING
    return pb.SentNotice(
        notice_id=row["notice_id"], municipality_code=row["municipality_code"], category=row["category"],
        title=row["title"], body=row["body"], link=row["link"], status=status, source=row["source"],
        send_at=ts_ms(row["send_at_ms"]), sent_at=ts_ms(row["sent_at_ms"]), delivered_count=delivered,
        read_count=read, survey_choices=_survey(row["survey"]),
    )


def _inbox(row) -> pb.Notice:
    return pb.Notice(
        notice_id=row["notice_id"], category=row["category"], title=row["title"], body=row["body"], link=row["link"],
        delivered_at=ts_ms(row["delivered_at_ms"]), read=row["read_at_ms"] is not None, cursor=row["seq"],
        survey_choices=_survey(row["survey"]), municipality_code=row["municipality_code"],
    )


def _person(row) -> pb.Person:
    return pb.Person(
        resident_id=row["resident_id"], name=row["name"], name_kana=row["name_kana"], birth_date=row["birth_date"],
        sex=row["sex"], address=row["address"], relationship=row["relationship"], status=row["status"],
        municipality_code=row["municipality_code"], household_id=row["household_id"] or "",
    )


def _vaccination(row) -> pb.Vaccination:
    return pb.Vaccination(vaccination_id=row["vaccination_id"], resident_id=row["resident_id"],
                          vaccine=row["vaccine"], dose=row["dose"], given_on=row["given_on"])


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._hub: DeliveryHub = platform.services["notification_hub"]

    def _now_ms(self) -> int:
        return to_epoch_ms(self._p.clock.now())

    async def _own_notice(self, tx: Tx, notice_id: str):
        if not notice_id:
            raise InvalidArgument.field("notice_id", "required")
        row = await store.get_notice(tx, notice_id)
        if row is None:
            raise NotFound("NOTICE_NOT_FOUND", "no such notice")
        authz.require_municipality(context.current().principal, row["municipality_code"])
        return row

    # Staff -----------------------------------------------------------------------------------------

    async def SendNotice(self, request, context_):
        lgcode = _lgcode(request.municipality_code)
        authz.require_municipality(context.current().principal, lgcode)
        category = request.category or "general"
        if category not in CATEGORIES:
            raise InvalidArgument.field("category", f"one of {', '.join(CATEGORIES)}")
        check_text(request.title, request.body)
        if len(request.link) > MAX_LINK:
            raise InvalidArgument.field("link", f"at most {MAX_LINK} characters")
        audience = _audience(request)
        choices = _choices(request.survey_choices)
        fields = dict(request.fields)
        # Checked now (a missing placeholder is refused before anything is stored); rendered per chunk.
        templates.prepare({"title": request.title, "body": request.body}, fields, store.row_fields(audience))
        send_at_ms = None
        if request.HasField("send_at"):
            try:
                send_at_ms = to_epoch_ms(from_ts(request.send_at))
            except (ValueError, OverflowError, OSError):
                raise InvalidArgument.field("send_at", "not a valid time") from None
            if send_at_ms <= self._now_ms():
                raise InvalidArgument.field("send_at", "must be in the future (leave it unset to send now)")
        caller = context.current().principal.caller_key

        async def work(tx: Tx) -> pb.SendNoticeResponse:
            if audience["kind"] == "residents":
                missing = await store.missing_residents(tx, lgcode, audience["resident_ids"])
                if missing:
                    ids = audience["resident_ids"]
                    raise InvalidArgument.fields(
                        [FieldViolation(f"audience.resident_ids[{ids.index(r)}]", "no such active resident here")
                         for r in missing], reason="RESIDENT_NOT_FOUND")
            now_ms = self._now_ms()
            notice_id = new_id("ntc")
            await store.insert_notice(tx, {
                "notice_id": notice_id, "municipality_code": lgcode, "category": category, "title": request.title,
                "body": request.body, "link": request.link,
                "audience": json.dumps(audience if send_at_ms else {**audience, "on": today(self._p).isoformat()}),
                "fields": json.dumps(fields, ensure_ascii=False),
                "survey": json.dumps(choices, ensure_ascii=False) if choices else None,
                "status": "scheduled" if send_at_ms else "sent", "source": "staff", "send_at_ms": send_at_ms,
                "created_at_ms": now_ms, "created_by": caller, "sent_at_ms": None if send_at_ms else now_ms,
                "sent_by": None if send_at_ms else caller, "fanout_done": 1 if send_at_ms else 0,
            })
            return pb.SendNoticeResponse(notice=_sent(await store.get_notice(tx, notice_id), 0, 0))

        accepted = await run_once(self._p.db, self._p.clock, request, pb.SendNoticeResponse, work)
        notice_id = accepted.notice.notice_id
        # The deliveries are written after the notice, in chunks (each its own transaction, so other
        # writers interleave); the reply says where things stand once they are all in (a retry too).
        await complete_fan_out(self._p, notice_id, self._hub.poke)
        async with self._p.db.read() as tx:
            row = await store.get_notice(tx, notice_id)
            response = pb.SendNoticeResponse(notice=_sent(row, *await store.notice_counts(tx, notice_id)))
        log.info("notice accepted", extra={"notice_id": notice_id, "municipality": lgcode,
                                           "recipients": response.notice.delivered_count})
        return response

    async def CancelNotice(self, request, context_):
        async def work(tx: Tx) -> pb.CancelNoticeResponse:
            row = await self._own_notice(tx, request.notice_id)
            if not await store.cancel(tx, row["notice_id"], self._now_ms()):
                if row["status"] == "cancelled":
                    raise FailedPrecondition("NOTICE_ALREADY_CANCELLED", "the notice was cancelled already")
                raise FailedPrecondition("NOTICE_ALREADY_SENT", "the notice has been sent; it cannot be cancelled")
            return pb.CancelNoticeResponse(notice=_sent(await store.get_notice(tx, row["notice_id"]), 0, 0))

        return await run_once(self._p.db, self._p.clock, request, pb.CancelNoticeResponse, work)

    async def GetNotice(self, request, context_):
        async with self._p.db.read() as tx:
            row = await self._own_notice(tx, request.notice_id)
            delivered, read = await store.notice_counts(tx, row["notice_id"])
        return pb.GetNoticeResponse(notice=_sent(row, delivered, read))

    async def ListSentNotices(self, request, context_):
        lgcode = _lgcode(request.municipality_code)
        authz.require_municipality(context.current().principal, lgcode)
        size = pagination.page_size(request.page_size)
        position = _position(request.page_token, "before")
        before = str(position["before"]) if position else None
        out = []
        async with self._p.db.read() as tx:
            rows = await store.list_sent(tx, lgcode, size + 1, before)
            for row in rows[:size]:
                out.append(_sent(row, *await store.notice_counts(tx, row["notice_id"])))
        token = pagination.encode_token({"before": rows[size - 1]["notice_id"]}) if len(rows) > size else ""
        return pb.ListSentNoticesResponse(notices=out, next_page_token=token)

    async def RunRules(self, request, context_):
        lgcode = _lgcode(request.municipality_code)
        authz.require_municipality(context.current().principal, lgcode)
        on = ages.parse_date(request.as_of, "as_of") if request.as_of else today(self._p)

        async def work(tx: Tx) -> pb.RunRulesResponse:
            outcomes = await rules.run(tx, lgcode, on, self._now_ms())
            return pb.RunRulesResponse(as_of=on.isoformat(), outcomes=[
                pb.RuleOutcome(rule=o.rule, fired=o.fired, delivered=o.delivered, notice_id=o.notice_id)
                for o in outcomes])

        response = await run_once(self._p.db, self._p.clock, request, pb.RunRulesResponse, work)
        self._hub.poke()
        log.info("rules ran", extra={"municipality": lgcode, "fired": sum(o.fired for o in response.outcomes)})
        return response

    async def SetBenefitHousehold(self, request, context_):
        if not request.household_id:
            raise InvalidArgument.field("household_id", "required")
        program = PROGRAMS.get(request.program)
        if program is None:
            raise InvalidArgument.field("program", "a benefit program")
        since = ages.parse_date(request.since, "since")
        until = ages.parse_date(request.until, "until") if request.until else None
        if until is not None and until < since:
            raise InvalidArgument.field("until", "not before since")

        async def work(tx: Tx) -> pb.SetBenefitHouseholdResponse:
            household = await store.household(tx, request.household_id)
            if household is None:
                raise NotFound("HOUSEHOLD_NOT_FOUND", "no such household")
            authz.require_municipality(context.current().principal, household["municipality_code"])
            await store.set_benefit(tx, request.household_id, program, household["municipality_code"],
                                    since.isoformat(), until.isoformat() if until else None)
            return pb.SetBenefitHouseholdResponse()

        return await run_once(self._p.db, self._p.clock, request, pb.SetBenefitHouseholdResponse, work)

    async def RecordVaccination(self, request, context_):
        problems = []
        if not request.resident_id:
            problems.append(FieldViolation("resident_id", "required"))
        if request.vaccine not in VACCINES:
            problems.append(FieldViolation("vaccine", f"one of {', '.join(VACCINES)}"))
        if not 1 <= request.dose <= 10:
            problems.append(FieldViolation("dose", "1 to 10"))
        if problems:
            raise InvalidArgument.fields(problems)
        given_on = ages.parse_date(request.given_on, "given_on")
        if given_on > today(self._p):
            raise InvalidArgument.field("given_on", "not in the future")
        caller = context.current().principal.caller_key

        async def work(tx: Tx) -> pb.RecordVaccinationResponse:
            person = await store.resident(tx, request.resident_id)
            if person is None:
                raise NotFound("RESIDENT_NOT_FOUND", "no such resident")
            authz.require_municipality(context.current().principal, person["municipality_code"])
            if given_on < date.fromisoformat(person["birth_date"]):
                raise InvalidArgument.field("given_on", "before the resident's birth")
            row = {"vaccination_id": new_id("vac"), "resident_id": request.resident_id,
                   "municipality_code": person["municipality_code"], "vaccine": request.vaccine,
                   "dose": request.dose, "given_on": given_on.isoformat(), "recorded_at_ms": self._now_ms(),
                   "recorded_by": caller}
            if not await store.insert_vaccination(tx, row):
                raise AlreadyExists("VACCINATION_ALREADY_RECORDED", "that dose of that vaccine is on record")
            return pb.RecordVaccinationResponse(vaccination=_vaccination(row))

        return await run_once(self._p.db, self._p.clock, request, pb.RecordVaccinationResponse, work)

    async def ListSurveyAnswers(self, request, context_):
        size = pagination.page_size(request.page_size)
        position = _position(request.page_token, "at", "id")
        if position and not isinstance(position["at"], int):
            raise InvalidArgument.field("page_token", "not a token returned by this list")
        after = (position["at"], str(position["id"])) if position else None
        async with self._p.db.read() as tx:
            row = await self._own_notice(tx, request.notice_id)
            if not row["survey"]:
                raise FailedPrecondition("NOT_A_SURVEY", "the notice offers no choices")
            rows = await store.answers_page(tx, row["notice_id"], size + 1, after)
            counts = await store.answer_counts(tx, row["notice_id"])
        page = rows[:size]
        token = (pagination.encode_token({"at": page[-1]["answered_at_ms"], "id": page[-1]["resident_id"]})
                 if len(rows) > size else "")
        return pb.ListSurveyAnswersResponse(
            answers=[pb.SurveyAnswer(resident_id=r["resident_id"], choice_id=r["choice_id"], comment=r["comment"],
                                     answered_at=ts_ms(r["answered_at_ms"])) for r in page],
            next_page_token=token, counts=counts)

    # Residents -------------------------------------------------------------------------------------

    async def ListNotices(self, request, context_):
        resident = authz.require_resident(context.current().principal)
        size = pagination.page_size(request.page_size)
        position = _position(request.page_token, "before")
        if position and not isinstance(position["before"], int):
            raise InvalidArgument.field("page_token", "not a token returned by this list")
        before = position["before"] if position else None
        async with self._p.db.read() as tx:
            rows = await store.inbox_page(tx, resident.resident_id, size + 1, before, request.unread_only)
            unread, latest = await store.inbox_counts(tx, resident.resident_id)
        page = rows[:size]
        token = pagination.encode_token({"before": page[-1]["seq"]}) if len(rows) > size else ""
        return pb.ListNoticesResponse(notices=[_inbox(r) for r in page], next_page_token=token,
                                      unread_count=unread, latest_cursor=latest)

    async def MarkNoticeRead(self, request, context_):
        resident = authz.require_resident(context.current().principal)
        if not request.notice_id:
            raise InvalidArgument.field("notice_id", "required")

        async def work(tx: Tx) -> pb.MarkNoticeReadResponse:
            if await store.inbox_item(tx, resident.resident_id, request.notice_id) is None:
                raise NotFound("NOTICE_NOT_FOUND", "no such notice in your inbox")
            await store.mark_read(tx, resident.resident_id, request.notice_id, self._now_ms())
            return pb.MarkNoticeReadResponse(notice=_inbox(await store.inbox_item(tx, resident.resident_id,
                                                                                   request.notice_id)))

        return await run_once(self._p.db, self._p.clock, request, pb.MarkNoticeReadResponse, work)

    async def _recheck_session(self, context_) -> None:
        resolve = self._p.services.get("resolve_token")
        bearer = dict(context_.invocation_metadata() or ()).get("authorization", "")
        if resolve is not None and bearer.lower().startswith("bearer "):
            await resolve(bearer[7:].strip())

    async def StreamNotices(self, request, context_):
        resident = authz.require_resident(context.current().principal)
        if request.after_cursor < 0:
            raise InvalidArgument.field("after_cursor", "0 or a cursor received earlier")
        cursor = request.after_cursor
        checked_ms = self._now_ms()
        subscription = await self._hub.subscribe(resident.resident_id)  # before the catch-up read: no gap
        try:
            catch_up = True
            while True:
                while catch_up:  # from the database, after the cursor
                    async with self._p.db.read() as tx:
                        rows = await store.inbox_after(tx, resident.resident_id, cursor, STREAM_BATCH)
                    for row in rows:
                        yield pb.StreamNoticesResponse(notice=_inbox(row))
                        cursor = row["seq"]
                    catch_up = len(rows) == STREAM_BATCH
                rows, catch_up = await subscription.next_batch()
                if self._now_ms() - checked_ms >= SESSION_RECHECK_MS:
                    # A stream outlives its token's checks at connect: a session signed out or expired
                    # since then ends the stream (UNAUTHENTICATED) instead of receiving more.
                    await self._recheck_session(context_)
                    checked_ms = self._now_ms()
                for row in rows:
                    if row["seq"] > cursor:  # already sent by the catch-up otherwise
                        yield pb.StreamNoticesResponse(notice=_inbox(row))
                        cursor = row["seq"]
        finally:
            subscription.close()

    async def AnswerSurvey(self, request, context_):
        resident = authz.require_resident(context.current().principal)
        if not request.notice_id:
            raise InvalidArgument.field("notice_id", "required")
        if not request.choice_id:
            raise InvalidArgument.field("choice_id", "required")
        if len(request.comment) > MAX_COMMENT:
            raise InvalidArgument.field("comment", f"at most {MAX_COMMENT} characters")

        async def work(tx: Tx) -> pb.AnswerSurveyResponse:
            item = await store.inbox_item(tx, resident.resident_id, request.notice_id)
            if item is None:
                raise NotFound("NOTICE_NOT_FOUND", "no such notice in your inbox")
            if not item["survey"]:
                raise FailedPrecondition("NOT_A_SURVEY", "the notice offers no choices")
            if request.choice_id not in {c["choice_id"] for c in json.loads(item["survey"])}:
                raise InvalidArgument.field("choice_id", "not one of the notice's choices")
            now_ms = self._now_ms()
            if not await store.insert_answer(tx, request.notice_id, resident.resident_id, request.choice_id,
                                             request.comment, now_ms):
                raise AlreadyExists("SURVEY_ALREADY_ANSWERED", "you answered this survey already")
            await store.mark_read(tx, resident.resident_id, request.notice_id, now_ms)
            return pb.AnswerSurveyResponse(answer=pb.SurveyAnswer(
                resident_id=resident.resident_id, choice_id=request.choice_id, comment=request.comment,
                answered_at=ts_ms(now_ms)))

        return await run_once(self._p.db, self._p.clock, request, pb.AnswerSurveyResponse, work)

    async def GetSelfInformation(self, request, context_):
        resident = authz.require_resident(context.current().principal)
        on = today(self._p)
        async with self._p.db.read() as tx:
            me = await store.resident(tx, resident.resident_id)
            if me is None:
                raise NotFound("RESIDENT_NOT_FOUND", "no registry record")
            members = await store.household_members(tx, me["household_id"], me["resident_id"]) \
                if me["household_id"] else []
            children = [m["resident_id"] for m in members
                        if ages.age_in_months(date.fromisoformat(m["birth_date"]), on) < ages.ADULT_MONTHS]
            vaccinations = await store.vaccinations_of(tx, [me["resident_id"], *children])
            applications = await store.applications_of(tx, me["resident_id"])
            benefits = (await store.benefits_of(tx, me["household_id"], me["municipality_code"], on)
                        if me["household_id"] else [])
        return pb.GetSelfInformationResponse(
            self=_person(me), household_members=[_person(m) for m in members],
            vaccinations=[_vaccination(v) for v in vaccinations],
            applications=[pb.ApplicationState(application_id=a["application_id"], procedure=str(a["procedure"] or ""),
                                              status=str(a["status"] or ""), updated_at=ts_ms(a["updated_at_ms"]))
                          for a in applications],
            benefits=[PROGRAM_ENUM[b] for b in benefits])


def add_to_server(server, platform: Platform) -> list[str]:
    pb_grpc.add_NotificationServiceServicer_to_server(NotificationServicer(platform), server)
    return [SERVICE]
