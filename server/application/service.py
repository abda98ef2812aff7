"""ApplicationService adapter: translate messages, check the caller's kind, call the rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import grpc

from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc

from server import authz, context
from server.application import applications as rules
from server.application import store
from server.application.applications import Applications
from server.application.blobs import HEIC, HEIC_SUPPORTED, PDF, BlobStore, CleanFile, IncomingFile, sniff
from server.application.scrub import Unreadable
from server.application.catalogue import CONTENT_TYPES, Field, Notice, Procedure, Slot, matches
from server.authz import ANYONE, RESIDENT, Machine, either, machine
from server.clock import to_epoch_ms
from server.convert import ts_ms
from server.errors import (DeadlineExceeded, DomainError, FieldViolation, InvalidArgument, NotFound,
                           ResourceExhausted, Unavailable)
from server.idempotency import check_request_id, run_once
from server.pagination import decode_token, encode_token, page_size
from server.platform import Platform

log = logging.getLogger("onestop.application")

SERVICE = pb.DESCRIPTOR.services_by_name["ApplicationService"].full_name
MUNICIPALITY = machine("municipality")
RESIDENT_OR_MUNICIPALITY = either(RESIDENT, MUNICIPALITY)
DRAIN_EXTRA_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 10.0
DOWNLOAD_CHUNK = 1024 * 1024

authz.register(SERVICE, {
    "SearchProcedures": ANYONE,
    "GetProcedure": ANYONE,
    "SetProcedureEnabled": MUNICIPALITY,
    "CreateLocalProcedure": MUNICIPALITY,
    "CreateDraft": RESIDENT,
    "UpdateDraft": RESIDENT,
    "UploadAttachment": RESIDENT,
    "RemoveAttachment": RESIDENT,
    "DownloadAttachment": RESIDENT_OR_MUNICIPALITY,
    "GetApplication": RESIDENT_OR_MUNICIPALITY,
    "ListApplications": RESIDENT_OR_MUNICIPALITY,
    "PrepareSubmission": RESIDENT,
    "SubmitApplication": RESIDENT,
    "WithdrawApplication": RESIDENT,
    "AcceptApplication": MUNICIPALITY,
    "RequestCorrection": MUNICIPALITY,
    "DecideApplication": MUNICIPALITY,
    "ListSubmissionEvidence": RESIDENT_OR_MUNICIPALITY,
})


# ---- enum names <-> domain strings ---------------------------------------------------------------

def _enum(enum_type, prefix: str, value: str) -> int:
    return enum_type.Value(f"{prefix}_{value.upper()}")


def _name(enum_type, prefix: str, number: int) -> str:
    return enum_type.Name(number)[len(prefix) + 1:].lower()


def status_pb(status: str) -> int:
    return _enum(pb.ApplicationStatus, "APPLICATION_STATUS", status)


def status_name(number: int) -> str | None:
    if number == pb.APPLICATION_STATUS_UNSPECIFIED:
        return None
    if number not in pb.ApplicationStatus.values():
        raise InvalidArgument.field("status", "unknown status")
    return _name(pb.ApplicationStatus, "APPLICATION_STATUS", number)


# ---- catalogue <-> proto -------------------------------------------------------------------

def field_pb(f: Field) -> pb.FormField:
    return pb.FormField(
        name=f.name, label=f.label, type=_enum(pb.FieldType, "FIELD_TYPE", f.type), required=f.required,
        repeated=f.repeated, min_items=f.min_items, max_items=f.max_items,
        choices=[pb.Choice(value=v, label=label) for v, label in f.choices],
        has_min=f.min is not None, min=f.min or 0, has_max=f.max is not None, max=f.max or 0,
        max_length=f.max_length, pattern=f.pattern, fields=[field_pb(c) for c in f.fields], help=f.help,
        computed=f.computed,
    )


def procedure_pb(p: Procedure, *, full: bool = True, enabled: bool = True) -> pb.Procedure:
    message = pb.Procedure(
        code=p.code, category=_enum(pb.ProcedureCategory, "PROCEDURE_CATEGORY", p.category), title=p.title,
        description=p.description, life_events=[_enum(pb.LifeEvent, "LIFE_EVENT", e) for e in p.life_events],
        start_month=p.start_month,
        attachment_slots=[pb.AttachmentSlot(slot=s.slot, title=s.title, required=s.required,
                                            accepted_types=s.accepted_types, max_files=s.max_files) for s in p.slots],
        notices=[pb.NoticeItem(title=n.title, start_month=n.start_month) for n in p.notices],
        keywords=p.keywords, municipality_code=p.municipality_code, enabled=enabled,
    )
    if full:
        message.form_fields.extend(field_pb(f) for f in p.fields)
    return message


def _field_from_pb(message: pb.FormField, path: str, violations: list[FieldViolation]) -> Field | None:
    if not message.name or not message.name.isidentifier():
        violations.append(FieldViolation(f"{path}.name", "an identifier (letters, digits, _)"))
        return None
    if message.type == pb.FIELD_TYPE_UNSPECIFIED or message.type not in pb.FieldType.values():
        violations.append(FieldViolation(f"{path}.type", "required"))
        return None
    kind = _name(pb.FieldType, "FIELD_TYPE", message.type)
    children = [_field_from_pb(c, f"{path}.fields[{i}]", violations) for i, c in enumerate(message.fields)]
    if (kind == "group") != bool(message.fields):
        violations.append(FieldViolation(f"{path}.fields", "a GROUP needs fields; other types have none"))
        return None
    if kind in ("choice", "multi_choice") and not message.choices:
        violations.append(FieldViolation(f"{path}.choices", "required for a choice"))
        return None
    if message.pattern:
        import re
        try:
            re.compile(message.pattern)
        except re.error:
            violations.append(FieldViolation(f"{path}.pattern", "not a valid pattern"))
            return None
    if None in children:
        return None
    return Field(
        name=message.name, label=message.label, type=kind, required=message.required, repeated=message.repeated,
        min_items=message.min_items, max_items=message.max_items,
        choices=tuple((c.value, c.label) for c in message.choices), min=message.min if message.has_min else None,
        max=message.max if message.has_max else None, max_length=message.max_length, pattern=message.pattern,
        fields=tuple(children), help=message.help,
    )


def procedure_from_pb(message: pb.Procedure, lgcode: str) -> Procedure:
    """A municipality's own procedure, checked (INVALID_ARGUMENT naming procedure.* fields)."""
    from server.application.catalogue import BY_CODE

    violations: list[FieldViolation] = []
    code = message.code
    if not code.startswith("local.") or len(code) > 80 or not code[6:].replace("_", "a").replace(".", "a").isalnum():
        violations.append(FieldViolation("procedure.code", "local.<letters, digits, _ or .>"))
    elif code in BY_CODE:
        violations.append(FieldViolation("procedure.code", "collides with the national catalogue"))
    if not message.title.strip():
        violations.append(FieldViolation("procedure.title", "required"))
    if message.category not in pb.ProcedureCategory.values() or message.category == 0:
        violations.append(FieldViolation("procedure.category", "required"))
    if len(message.start_month) != 7 or message.start_month[4] != "-":
        violations.append(FieldViolation("procedure.start_month", "YYYY-MM"))
    if not message.form_fields:
        violations.append(FieldViolation("procedure.form_fields", "at least one field"))
    fields = [_field_from_pb(f, f"procedure.form_fields[{i}]", violations) for i, f in enumerate(message.form_fields)]
    names = [f.name for f in fields if f]
    if len(set(names)) != len(names):
        violations.append(FieldViolation("procedure.form_fields", "field names must be unique"))
    slots = []
    for i, s in enumerate(message.attachment_slots):
        bad_types = [t for t in s.accepted_types if t not in CONTENT_TYPES]
        if not s.slot.isidentifier() or bad_types:
            violations.append(FieldViolation(f"procedure.attachment_slots[{i}]",
                                             f"slot an identifier; types among {', '.join(CONTENT_TYPES)}"))
            continue
        slots.append(Slot(s.slot, s.title, s.required, tuple(s.accepted_types) or CONTENT_TYPES, max(1, s.max_files)))
    events = [e for e in message.life_events if e in pb.LifeEvent.values() and e != 0]
    if violations:
        raise InvalidArgument.fields(violations)
    return Procedure(
        code=code, category=_name(pb.ProcedureCategory, "PROCEDURE_CATEGORY", message.category), title=message.title,
        start_month=message.start_month, life_events=tuple(_name(pb.LifeEvent, "LIFE_EVENT", e) for e in events),
        fields=tuple(fields), slots=tuple(slots), description=message.description,
        notices=tuple(Notice(n.title, n.start_month) for n in message.notices), keywords=tuple(message.keywords),
        municipality_code=lgcode,
    )


# ---- applications -> proto -----------------------------------------------------------------

def attachment_pb(a) -> pb.Attachment:
    return pb.Attachment(attachment_id=a["attachment_id"], slot=a["slot"], content_type=a["content_type"],
                         size=a["size"], sha256=a["sha256"], filename=a["filename"],
                         uploaded_at=ts_ms(a["uploaded_at_ms"]))


async def application_pb(tx, row, *, full: bool = True) -> pb.Application:
    from server.application.catalogue import BY_CODE

    title = BY_CODE[row["procedure_code"]].title if row["procedure_code"] in BY_CODE else ""
    if not title:
        try:
            title = (await rules.procedure_for(tx, row["municipality_code"], row["procedure_code"],
                                               offered_only=False)).title
        except NotFound:
            title = ""
    message = pb.Application(
        application_id=row["application_id"], procedure_code=row["procedure_code"],
        municipality_code=row["municipality_code"], resident_id=row["resident_id"], status=status_pb(row["status"]),
        version=row["version"], decision=_enum(pb.Decision, "DECISION", row["decision"]) if row["decision"] else 0,
        result_text=row["result_text"], created_at=ts_ms(row["created_at_ms"]),
        updated_at=ts_ms(row["updated_at_ms"]), submitted_at=ts_ms(row["submitted_at_ms"]),
        last_submitted_at=ts_ms(row["last_submitted_at_ms"]), accepted_at=ts_ms(row["accepted_at_ms"]),
        decided_at=ts_ms(row["decided_at_ms"]), procedure_title=title,
        corrections=[pb.CorrectionReason(**c) for c in json.loads(row["corrections_json"])],
    )
    if full:
        message.form_json = row["form_json"]
        message.attachments.extend(attachment_pb(a) for a in await store.attachments(tx, row["application_id"]))
        message.history.extend(
            pb.HistoryEntry(actor=h["actor"], at=ts_ms(h["at_ms"]), action=h["action"], status=status_pb(h["status"]),
                            reason=h["reason"], version=h["version"])
            for h in await store.history(tx, row["application_id"])
        )
    return message


async def _settled(operation):
    """Await a file operation running in a thread; if the call is cancelled meanwhile, let the
    operation finish first (so the cleanup that follows sees its result), then re-raise."""
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _lgcode(value: str, field: str = "municipality_code") -> str:
    if not (len(value) == 6 and value.isdigit()):
        raise InvalidArgument.field(field, "a 6-digit local government code")
    return value


class ApplicationServicer(pb_grpc.ApplicationServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._apps = Applications(platform)
        self._blobs = BlobStore(platform.settings.blob_dir)

    def _run(self, request, response_type, work):
        return run_once(self._p.db, self._p.clock, request, response_type, work)

    @staticmethod
    def _principal():
        return context.current().principal

    # ---- catalogue ----------------------------------------------------------------------

    async def SearchProcedures(self, request, context_):
        limit = page_size(request.page_size)
        position = decode_token(request.page_token) or {}
        lgcode = _lgcode(request.municipality_code) if request.municipality_code else ""
        if request.category not in pb.ProcedureCategory.values():
            raise InvalidArgument.field("category", "unknown category")
        if request.life_event not in pb.LifeEvent.values():
            raise InvalidArgument.field("life_event", "unknown life event")
        category = _name(pb.ProcedureCategory, "PROCEDURE_CATEGORY", request.category) if request.category else None
        event = _name(pb.LifeEvent, "LIFE_EVENT", request.life_event) if request.life_event else None
        if len(request.keyword) > 200:
            raise InvalidArgument.field("keyword", "at most 200 characters")
        async with self._p.db.read() as tx:
            if lgcode and not await store.municipality_exists(tx, lgcode):
                raise NotFound("MUNICIPALITY_NOT_FOUND", f"no municipality {lgcode}")
            found = await rules.catalogue_for(tx, lgcode)
        after = str(position.get("after", ""))
        hits = [p for p in found
                if p.code > after and (category is None or p.category == category)
                and (event is None or event in p.life_events) and matches(p, request.keyword)]
        page = hits[:limit]
        token = encode_token({"after": page[-1].code}) if len(hits) > limit else ""
        return pb.SearchProceduresResponse(procedures=[procedure_pb(p, full=False) for p in page],
                                           next_page_token=token)

    async def GetProcedure(self, request, context_):
        rules.require_id(request.procedure_code, "procedure_code")
        lgcode = _lgcode(request.municipality_code) if request.municipality_code else ""
        async with self._p.db.read() as tx:
            procedure = await rules.procedure_for(tx, lgcode, request.procedure_code)
        return pb.GetProcedureResponse(procedure=procedure_pb(procedure))

    async def SetProcedureEnabled(self, request, context_):
        caller = authz.require_municipality(self._principal(), _lgcode(request.municipality_code))

        async def work(tx):
            procedure = await rules.procedure_for(tx, caller.id, rules.require_id(request.procedure_code,
                                                                                 "procedure_code"),
                                                  offered_only=False)
            await store.set_enabled(tx, caller.id, procedure.code, request.enabled, to_epoch_ms(self._p.clock.now()))
            log.info("procedure switched", extra={"municipality": caller.id, "procedure": procedure.code,
                                                  "enabled": request.enabled})
            return pb.SetProcedureEnabledResponse(procedure=procedure_pb(procedure, enabled=request.enabled))

        return await self._run(request, pb.SetProcedureEnabledResponse, work)

    async def CreateLocalProcedure(self, request, context_):
        caller = authz.require_municipality(self._principal(), _lgcode(request.municipality_code))
        procedure = procedure_from_pb(request.procedure, caller.id)

        async def work(tx):
            await store.put_local_procedure(tx, caller.id, procedure.code, procedure.to_json(),
                                            to_epoch_ms(self._p.clock.now()))
            return pb.CreateLocalProcedureResponse(procedure=procedure_pb(procedure))

        return await self._run(request, pb.CreateLocalProcedureResponse, work)

    # ---- drafts -----------------------------------------------------------------------------

    async def CreateDraft(self, request, context_):
        principal = self._principal()

        async def work(tx):
            row = await self._apps.create_draft(tx, principal, request.procedure_code, request.form_json)
            return pb.CreateDraftResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.CreateDraftResponse, work)

    async def UpdateDraft(self, request, context_):
        principal = self._principal()

        async def work(tx):
            row = await self._apps.update_draft(tx, principal, request.application_id, request.version,
                                                request.form_json)
            return pb.UpdateDraftResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.UpdateDraftResponse, work)

    async def UploadAttachment(self, request_iterator, context_):
        principal = self._principal()
        stream = request_iterator.__aiter__()
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument.field("metadata", "required: send the metadata first") from None
        try:
            if first.WhichOneof("part") != "metadata":
                raise InvalidArgument.field("metadata", "required: the first message carries the metadata")
            return await self._upload(principal, first.metadata, stream)
        except DomainError:
            await self._drain(stream)
            raise

    async def _drain(self, stream) -> None:
        """Read and discard what the client is still sending (bounded), so that it receives our refusal.

        A client that is mid-send when the call ends sees a transport failure instead of the status;
        draining lets its writes complete and it then reads the refusal.
        """
        budget = self._p.settings.attachment_max_bytes + DRAIN_EXTRA_BYTES
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for message in stream:
                    budget -= message.ByteSize()
                    if budget < 0:
                        return
        except (TimeoutError, grpc.RpcError, asyncio.InvalidStateError):
            return

    async def _upload(self, principal, meta, stream):
        check_request_id(meta.request_id)
        rules.require_id(meta.application_id, "metadata.application_id")
        declared = meta.declared_content_type
        if declared not in CONTENT_TYPES:
            raise InvalidArgument.field("metadata.declared_content_type", f"one of {', '.join(CONTENT_TYPES)}",
                                        reason="CONTENT_TYPE_UNSUPPORTED")
        async with self._p.db.read() as tx:
            await self._apps.check_upload(tx, principal, meta.application_id, meta.slot, declared, meta.declared_size)
        limit = self._p.settings.attachment_max_bytes
        # Bounded below the age at which the leftovers sweep deems a temporary file a dead server's
        # (settings), so the sweep never removes a file that a live upload could still store.
        max_seconds = self._p.settings.upload_max_seconds
        deadline_ms = to_epoch_ms(self._p.clock.now()) + int(max_seconds * 1000)

        def in_time() -> None:
            if to_epoch_ms(self._p.clock.now()) > deadline_ms:
                raise DeadlineExceeded("UPLOAD_TOO_SLOW", f"the upload took longer than the server allows "
                                       f"({max_seconds:g} s); send it again")

        incoming = IncomingFile(self._blobs, declared)
        stored_sha: list[str] = []
        try:
            received = 0
            async for message in stream:
                in_time()
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument.field("metadata", "only once, in the first message")
                chunk = message.chunk
                received += len(chunk)
                if received > limit:
                    raise ResourceExhausted("ATTACHMENT_TOO_LARGE", f"a file may have at most {limit} bytes",
                                            [FieldViolation("chunk", f"more than {limit} bytes arrived")])
                if received > meta.declared_size:
                    raise InvalidArgument.field("metadata.declared_size", "more bytes arrived than declared",
                                                reason="SIZE_MISMATCH")
                await incoming.write(chunk)
            in_time()
            head = incoming.head
            if received != meta.declared_size:
                raise InvalidArgument.field("metadata.declared_size",
                                            f"declared {meta.declared_size} bytes, {received} arrived",
                                            reason="SIZE_MISMATCH")
            sniffed = sniff(head)
            if sniffed != declared:
                raise InvalidArgument.field("metadata.declared_content_type",
                                            f"declared {declared}, content is {sniffed or 'of an unknown type'}",
                                            reason="CONTENT_TYPE_MISMATCH")
            if sniffed == HEIC and not HEIC_SUPPORTED:
                raise InvalidArgument.field("metadata.declared_content_type", "HEIC is not supported here; send "
                                            "JPEG", reason="CONTENT_TYPE_UNSUPPORTED")
            # Cleaned, hashed and synced before the write transaction: the writer is held only for
            # the rows and a rename.
            try:
                clean: CleanFile = await _settled(incoming.finish(sniffed))
            except Unreadable as exc:
                if sniffed == PDF:
                    raise InvalidArgument.field("chunk", f"the PDF cannot be read: {exc}",
                                                reason="PDF_UNREADABLE") from None
                raise InvalidArgument.field("chunk", f"the image cannot be read: {exc}",
                                            reason="IMAGE_UNREADABLE") from None

            async def work(tx):
                row, _ = await self._apps.check_upload(tx, principal, meta.application_id, meta.slot, declared,
                                                       clean.size)
                # Known before the file exists, so that a failure or cancellation from here on removes it.
                stored_sha.append(clean.sha256)
                blob = self._blobs.adopt(clean)
                attachment, fresh = await self._apps.add_attachment(
                    tx, principal, row, slot=meta.slot, content_type=blob.content_type, size=blob.size,
                    sha256=blob.sha256, filename=meta.filename)
                log.info("attachment stored", extra={"application_id": row["application_id"],
                                                     "attachment_id": attachment["attachment_id"],
                                                     "content_type": blob.content_type, "size": blob.size})
                return pb.UploadAttachmentResponse(attachment=attachment_pb(attachment), version=fresh["version"])

            return await self._run(meta, pb.UploadAttachmentResponse, work)
        except BaseException:
            if stored_sha:
                await asyncio.shield(self._drop_orphan(stored_sha[0]))
            raise
        finally:
            await _settled(incoming.discard())

    async def _drop_orphan(self, sha256: str) -> None:
        """Remove a blob no attachment row refers to (a failed or cancelled upload's file)."""
        async with self._p.db.write() as tx:
            if not await store.blob_referenced(tx, sha256):
                self._blobs.remove(sha256)

    async def DownloadAttachment(self, request, context_):
        rules.require_id(request.attachment_id, "attachment_id")
        async with self._p.db.read() as tx:
            row = await rules.load(tx, self._principal(), request.application_id)
            found = [a for a in await store.attachments(tx, row["application_id"])
                     if a["attachment_id"] == request.attachment_id]
        if not found:
            raise NotFound("ATTACHMENT_NOT_FOUND", "no such attachment on this application")
        attachment = found[0]
        path = self._blobs.path_for(attachment["sha256"])
        try:
            source = open(path, "rb")
        except FileNotFoundError:
            raise Unavailable("BLOB_MISSING", "the stored file is missing; tell the operator") from None
        with source:
            yield pb.DownloadAttachmentResponse(attachment=attachment_pb(attachment))
            while block := await asyncio.to_thread(source.read, DOWNLOAD_CHUNK):
                yield pb.DownloadAttachmentResponse(chunk=block)

    async def RemoveAttachment(self, request, context_):
        principal = self._principal()

        removed_sha: list[str] = []

        async def work(tx):
            removed, fresh = await self._apps.remove_attachment(tx, principal, request.application_id,
                                                                request.attachment_id)
            removed_sha.append(removed["sha256"])
            return pb.RemoveAttachmentResponse(version=fresh["version"])

        response = await self._run(request, pb.RemoveAttachmentResponse, work)
        if removed_sha:  # the photo goes with its row, unless another attachment has the same content
            await asyncio.shield(self._drop_orphan(removed_sha[0]))
        return response

    # ---- reading ----------------------------------------------------------------------------

    async def GetApplication(self, request, context_):
        async with self._p.db.read() as tx:
            row = await rules.load(tx, self._principal(), request.application_id)
            return pb.GetApplicationResponse(application=await application_pb(tx, row))

    async def ListApplications(self, request, context_):
        principal = self._principal()
        limit = page_size(request.page_size)
        position = decode_token(request.page_token) or {}
        status = status_name(request.status)
        procedure = request.procedure_code or None
        async with self._p.db.read() as tx:
            if isinstance(principal, Machine):
                after = (int(position["t"]), str(position["id"])) if "t" in position else None
                rows = await store.queue(tx, principal.id, status=status, procedure=procedure, after=after,
                                         limit=limit + 1)
                token = (encode_token({"t": rows[limit - 1]["submitted_at_ms"], "id": rows[limit - 1]["application_id"]})
                         if len(rows) > limit else "")
            else:
                rows = await store.list_for_resident(tx, principal.resident_id, status=status, procedure=procedure,
                                                     after=position.get("id"), limit=limit + 1)
                token = encode_token({"id": rows[limit - 1]["application_id"]}) if len(rows) > limit else ""
            applications = [await application_pb(tx, r, full=False) for r in rows[:limit]]
        return pb.ListApplicationsResponse(applications=applications, next_page_token=token)

    async def ListSubmissionEvidence(self, request, context_):
        limit = page_size(request.page_size)
        position = decode_token(request.page_token) or {}
        async with self._p.db.read() as tx:
            row = await rules.load(tx, self._principal(), request.application_id)
            rows = await store.evidence(tx, row["application_id"], after=position.get("id"), limit=limit + 1)
        token = encode_token({"id": rows[limit - 1]["evidence_id"]}) if len(rows) > limit else ""
        return pb.ListSubmissionEvidenceResponse(
            evidence=[pb.SubmissionEvidence(
                evidence_id=e["evidence_id"], version=e["version"], canonical_bytes=e["canonical"],
                signature=e["signature"], signature_certificate=e["certificate"], arrived_at=ts_ms(e["arrived_at_ms"]),
                certificate_issuer=e["certificate_issuer"], certificate_serial=e["certificate_serial"],
            ) for e in rows[:limit]],
            next_page_token=token,
        )

    # ---- submission ------------------------------------------------------------------------

    async def PrepareSubmission(self, request, context_):
        async with self._p.db.read() as tx:
            data, row = await self._apps.canonical_bytes(tx, self._principal(), request.application_id)
        return pb.PrepareSubmissionResponse(canonical_bytes=data, version=row["version"],
                                            sha256=hashlib.sha256(data).hexdigest())

    async def SubmitApplication(self, request, context_):
        principal = self._principal()

        async def work(tx):
            row = await self._apps.submit(tx, principal, request.application_id, request.signature,
                                          request.signature_certificate)
            return pb.SubmitApplicationResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.SubmitApplicationResponse, work)

    async def WithdrawApplication(self, request, context_):
        principal = self._principal()

        async def work(tx):
            row = await self._apps.withdraw(tx, principal, request.application_id, request.version, request.reason)
            return pb.WithdrawApplicationResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.WithdrawApplicationResponse, work)

    # ---- staff ------------------------------------------------------------------------------

    async def AcceptApplication(self, request, context_):
        principal = self._principal()

        async def work(tx):
            row = await self._apps.accept(tx, principal, request.application_id, request.version, request.note)
            return pb.AcceptApplicationResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.AcceptApplicationResponse, work)

    async def RequestCorrection(self, request, context_):
        principal = self._principal()
        reasons = [{"field_path": r.field_path, "attachment_slot": r.attachment_slot, "reason": r.reason}
                   for r in request.reasons]

        async def work(tx):
            row = await self._apps.request_correction(tx, principal, request.application_id, request.version,
                                                      reasons, request.message)
            return pb.RequestCorrectionResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.RequestCorrectionResponse, work)

    async def DecideApplication(self, request, context_):
        principal = self._principal()
        decision = (_name(pb.Decision, "DECISION", request.decision)
                    if request.decision in (pb.DECISION_APPROVED, pb.DECISION_REJECTED) else "")

        async def work(tx):
            row = await self._apps.decide(tx, principal, request.application_id, request.version, decision,
                                          request.result_text)
            return pb.DecideApplicationResponse(application=await application_pb(tx, row))

        return await self._run(request, pb.DecideApplicationResponse, work)


def add_to_server(server, platform: Platform) -> list[str]:
    pb_grpc.add_ApplicationServiceServicer_to_server(ApplicationServicer(platform), server)
    return [SERVICE]
