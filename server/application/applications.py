"""Application rules: who may see and change what, the lifecycle, signed submission.

Lifecycle (状態遷移)::

    draft --submit--> submitted --accept(受理)--> accepted --decide--> decided (approved / rejected)
                         |  \\                      |
                         |   `--request correction (補正)--> correction_requested --submit--> resubmitted
                         `--------------------------------------------------------------------^
    any state before decided --withdraw(取下げ)--> withdrawn

Every change raises `version` by one and appends a history entry (actor, time, action, reason).
Staff actions and resident withdrawals carry the version the caller saw: another version is
ABORTED VERSION_CONFLICT, so of two officers deciding at once exactly one wins.

Visibility rule: a resident asking for another resident's application gets NOT_FOUND, the same as
for a missing one; a municipality asking for another municipality's gets PERMISSION_DENIED.
Municipalities never see drafts.

Everything here runs inside the caller's transaction `tx`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from server.application import canonical, forms, store
from server.application.catalogue import BY_CODE, Procedure
from server.authz import Machine, Principal, Resident
from server.clock import to_epoch_ms
from server.crypto.jpki import CertificateRejected, verify_signature
from server.db import Tx
from server.errors import (Conflict, DomainError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound,
                           PermissionDenied, ResourceExhausted)
from server.ids import new_id
from server.platform import Platform

log = logging.getLogger("onestop.application")

DRAFT, SUBMITTED, ACCEPTED, CORRECTION, RESUBMITTED, DECIDED, WITHDRAWN = (
    "draft", "submitted", "accepted", "correction_requested", "resubmitted", "decided", "withdrawn")
STATUSES = (DRAFT, SUBMITTED, ACCEPTED, CORRECTION, RESUBMITTED, DECIDED, WITHDRAWN)
# Named status sets (what each action may start from).
EDITABLE = frozenset({DRAFT, CORRECTION})
AWAITING_ACCEPTANCE = frozenset({SUBMITTED, RESUBMITTED})
CORRECTABLE = frozenset({SUBMITTED, RESUBMITTED, ACCEPTED})
DECIDABLE = frozenset({ACCEPTED})
FINAL = frozenset({DECIDED, WITHDRAWN})

NOTICE_TEXT = {
    "accepted": ("申請が受理されました", "「{title}」の申請を受理しました。審査結果をお待ちください。"),
    "correction_requested": ("申請の補正をお願いします", "「{title}」の申請について補正をお願いします。{message}"),
    "decided_approved": ("申請の審査結果のお知らせ", "「{title}」の申請は承認されました。{result}"),
    "decided_rejected": ("申請の審査結果のお知らせ", "「{title}」の申請は却下されました。{result}"),
}


MAX_CORRECTION_REASONS = 50


def clean_filename(name: str) -> str:
    """The phone's file name as a label only: no folders, no control characters, at most 200 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:200]


def actor_of(principal: Principal) -> str:
    if isinstance(principal, Resident):
        return f"resident:{principal.resident_id}"
    if isinstance(principal, Machine):
        return f"{principal.role}:{principal.id}"
    return "anonymous"


def require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "required")
    if len(value) > 100 or not value.isprintable():
        raise InvalidArgument.field(field, "not a valid id")
    return value


def require_version(version: int) -> int:
    if version <= 0:
        raise InvalidArgument.field("version", "required: the version you last read")
    return version


# ---- catalogue -------------------------------------------------------------------------------

async def catalogue_for(tx: Tx, municipality_code: str) -> list[Procedure]:
    """What a municipality offers: the national list minus what it switched off, plus its own."""
    if not municipality_code:
        return sorted(BY_CODE.values(), key=lambda p: p.code)
    disabled = await store.disabled_codes(tx, municipality_code)
    found = [p for p in BY_CODE.values() if p.code not in disabled]
    found += [Procedure.from_json(d) for d in await store.local_procedures(tx, municipality_code)
              if d["code"] not in disabled]
    return sorted(found, key=lambda p: p.code)


async def procedure_for(tx: Tx, municipality_code: str, code: str, *, offered_only: bool = True) -> Procedure:
    """A procedure as the municipality has it; PROCEDURE_NOT_FOUND if unknown (or switched off)."""
    if offered_only and municipality_code and code in await store.disabled_codes(tx, municipality_code):
        raise NotFound("PROCEDURE_NOT_FOUND", f"{municipality_code} does not offer {code}")
    if code in BY_CODE:
        return BY_CODE[code]
    if municipality_code:
        for definition in await store.local_procedures(tx, municipality_code):
            if definition["code"] == code:
                return Procedure.from_json(definition)
    raise NotFound("PROCEDURE_NOT_FOUND", f"no procedure {code}")


# ---- access ----------------------------------------------------------------------------------

async def load(tx: Tx, principal: Principal, application_id: str) -> Any:
    """The application if the caller may see it (see the module docstring for the refusals)."""
    require_id(application_id, "application_id")
    row = await store.get_application(tx, application_id)
    missing = NotFound("APPLICATION_NOT_FOUND", "no such application")
    if row is None:
        raise missing
    if isinstance(principal, Resident):
        if row["resident_id"] != principal.resident_id:
            raise missing
        return row
    if isinstance(principal, Machine) and principal.role == "municipality":
        if row["municipality_code"] != principal.id:
            raise PermissionDenied("OTHER_MUNICIPALITY", f"a system of {principal.id} cannot see another "
                                                         "municipality's application")
        if row["status"] == DRAFT:
            raise missing
        return row
    raise PermissionDenied("CALLER_NOT_ALLOWED", "only the applicant or their municipality may see this")


def _own(principal: Principal) -> Resident:
    if not isinstance(principal, Resident):
        raise PermissionDenied("RESIDENT_ONLY", "only the applicant may do this")
    return principal


def _staff(principal: Principal) -> Machine:
    if not isinstance(principal, Machine) or principal.role != "municipality":
        raise PermissionDenied("MUNICIPALITY_ONLY", "only a municipal system may do this")
    return principal


def _check_version(row: Any, version: int) -> None:
    if row["version"] != version:
        raise Conflict("VERSION_CONFLICT", f"the application is at version {row['version']}, not {version}; "
                                           "read it again", metadata={"current_version": str(row["version"])})


@dataclass
class Applications:
    platform: Platform

    @property
    def _now(self):
        return self.platform.clock.now()

    def _now_ms(self) -> int:
        return to_epoch_ms(self.platform.clock.now())

    async def _change(self, tx: Tx, row: Any, principal: Principal, *, action: str, status: str, reason: str = "",
                      **columns: Any) -> Any:
        """Apply a change guarded by the row's version, add history, return the fresh row."""
        now_ms = self._now_ms()
        if not await store.update_application(tx, row["application_id"], row["version"], status=status,
                                              updated_at_ms=now_ms, **columns):
            raise Conflict("VERSION_CONFLICT", "the application changed meanwhile; read it again")
        await store.add_history(tx, row["application_id"], actor=actor_of(principal), at_ms=now_ms, action=action,
                                status=status, reason=reason, version=row["version"] + 1)
        return await store.get_application(tx, row["application_id"])

    # ---- resident: drafts ------------------------------------------------------------------

    async def create_draft(self, tx: Tx, principal: Principal, procedure_code: str, form_json: str) -> Any:
        resident = _own(principal)
        require_id(procedure_code, "procedure_code")
        lgcode = await store.resident_municipality(tx, resident.resident_id)
        if lgcode is None:
            raise FailedPrecondition("RESIDENT_NOT_REGISTERED", "the resident is not registered in a municipality")
        procedure = await procedure_for(tx, lgcode, procedure_code)
        today = forms.today_in_japan(self._now)
        if today.strftime("%Y-%m") < procedure.start_month:
            raise FailedPrecondition("PROCEDURE_NOT_STARTED", f"online from {procedure.start_month}")
        form = forms.check_form(procedure, forms.parse_form_json(form_json), complete=False, today=today)
        now_ms = self._now_ms()
        application_id = new_id("app")
        await store.insert_application(tx, {
            "application_id": application_id, "resident_id": resident.resident_id, "municipality_code": lgcode,
            "procedure_code": procedure.code, "status": DRAFT, "version": 1,
            "form_json": canonical.canonical_json(form).decode(), "created_at_ms": now_ms, "updated_at_ms": now_ms,
        })
        await store.add_history(tx, application_id, actor=actor_of(principal), at_ms=now_ms, action="created",
                                status=DRAFT, reason="", version=1)
        log.info("draft created", extra={"application_id": application_id, "procedure": procedure.code})
        return await store.get_application(tx, application_id)

    async def _editable(self, tx: Tx, principal: Principal, application_id: str) -> Any:
        _own(principal)
        row = await load(tx, principal, application_id)
        if row["status"] not in EDITABLE:
            raise FailedPrecondition("NOT_EDITABLE", f"an application in state {row['status']} cannot be changed")
        return row

    async def update_draft(self, tx: Tx, principal: Principal, application_id: str, version: int,
                           form_json: str) -> Any:
        require_version(version)
        row = await self._editable(tx, principal, application_id)
        _check_version(row, version)
        procedure = await procedure_for(tx, row["municipality_code"], row["procedure_code"], offered_only=False)
        form = forms.check_form(procedure, forms.parse_form_json(form_json), complete=False,
                                today=forms.today_in_japan(self._now))
        return await self._change(tx, row, principal, action="updated", status=row["status"],
                                  form_json=canonical.canonical_json(form).decode())

    # ---- resident: attachments -------------------------------------------------------------

    async def check_upload(self, tx: Tx, principal: Principal, application_id: str, slot: str, declared_type: str,
                           declared_size: int, *, prefix: str = "metadata") -> tuple[Any, Procedure]:
        """Everything that can be refused before a byte is stored."""
        row = await self._editable(tx, principal, application_id)
        procedure = await procedure_for(tx, row["municipality_code"], row["procedure_code"], offered_only=False)
        target = procedure.slot(slot)
        if target is None:
            raise InvalidArgument.field(f"{prefix}.slot", f"one of {', '.join(s.slot for s in procedure.slots)}")
        if declared_type not in target.accepted_types:
            raise InvalidArgument.field(f"{prefix}.declared_content_type",
                                        f"this slot accepts {', '.join(target.accepted_types)}",
                                        reason="CONTENT_TYPE_UNSUPPORTED")
        settings = self.platform.settings
        if declared_size <= 0:
            raise InvalidArgument.field(f"{prefix}.declared_size", "must be the file's size in bytes")
        if declared_size > settings.attachment_max_bytes:
            raise ResourceExhausted("ATTACHMENT_TOO_LARGE", f"a file may have at most {settings.attachment_max_bytes}"
                                    " bytes", [FieldViolation(f"{prefix}.declared_size",
                                                              f"at most {settings.attachment_max_bytes} bytes")])
        existing = await store.attachments(tx, application_id)
        total = sum(a["size"] for a in existing)
        if total + declared_size > settings.application_max_bytes:
            raise ResourceExhausted("APPLICATION_TOO_LARGE", f"an application may carry at most "
                                    f"{settings.application_max_bytes} bytes of attachments",
                                    [FieldViolation(f"{prefix}.declared_size",
                                                    f"{settings.application_max_bytes - total} bytes left")])
        if sum(1 for a in existing if a["slot"] == slot) >= target.max_files:
            raise FailedPrecondition("SLOT_FULL", f"slot {slot} holds at most {target.max_files} file(s); "
                                                  "remove one first")
        return row, procedure

    async def add_attachment(self, tx: Tx, principal: Principal, row: Any, *, slot: str, content_type: str,
                             size: int, sha256: str, filename: str) -> tuple[dict, Any]:
        attachment = {
            "attachment_id": new_id("att"), "application_id": row["application_id"], "slot": slot,
            "content_type": content_type, "size": size, "sha256": sha256, "filename": clean_filename(filename),
            "uploaded_at_ms": self._now_ms(),
        }
        await store.insert_attachment(tx, attachment)
        fresh = await self._change(tx, row, principal, action="attachment_added", status=row["status"], reason=slot)
        return attachment, fresh

    async def remove_attachment(self, tx: Tx, principal: Principal, application_id: str,
                                attachment_id: str) -> tuple[Any, Any]:
        require_id(attachment_id, "attachment_id")
        row = await self._editable(tx, principal, application_id)
        removed = await store.delete_attachment(tx, application_id, attachment_id)
        if removed is None:
            raise NotFound("ATTACHMENT_NOT_FOUND", "no such attachment on this application")
        fresh = await self._change(tx, row, principal, action="attachment_removed", status=row["status"],
                                   reason=removed["slot"])
        return removed, fresh

    # ---- resident: signed submission -------------------------------------------------------

    async def canonical_bytes(self, tx: Tx, principal: Principal, application_id: str) -> tuple[bytes, Any]:
        data, row, _ = await self._canonical(tx, principal, application_id)
        return data, row

    async def _canonical(self, tx: Tx, principal: Principal, application_id: str) -> tuple[bytes, Any, dict]:
        """The bytes to sign for the application as it stands (checked complete)."""
        _own(principal)
        row = await load(tx, principal, application_id)
        if row["status"] not in EDITABLE:
            raise FailedPrecondition("NOT_SUBMITTABLE", f"an application in state {row['status']} cannot be "
                                                        "submitted")
        procedure = await procedure_for(tx, row["municipality_code"], row["procedure_code"], offered_only=False)
        form = forms.check_form(procedure, json.loads(row["form_json"]), complete=True,
                                today=forms.today_in_japan(self._now))
        attachments = await store.attachments(tx, application_id)
        present = {a["slot"] for a in attachments}
        missing = [s for s in forms.required_slots(procedure, form) if s not in present]
        if missing:
            raise InvalidArgument.fields([FieldViolation(f"attachments.{s}", "required") for s in missing],
                                         reason="ATTACHMENT_REQUIRED")
        data = canonical.submission_bytes(
            application_id=row["application_id"], procedure_code=row["procedure_code"],
            municipality_code=row["municipality_code"], resident_id=row["resident_id"], version=row["version"],
            form=form, attachments=[dict(a) for a in attachments],
        )
        return data, row, form

    async def submit(self, tx: Tx, principal: Principal, application_id: str, signature: bytes,
                     certificate: bytes) -> Any:
        resident = _own(principal)
        require_id(application_id, "application_id")
        if not signature:
            raise InvalidArgument.field("signature", "required")
        if not certificate:
            raise InvalidArgument.field("signature_certificate", "required: DER of the signature certificate")
        data, row, form = await self._canonical(tx, principal, application_id)
        now = self._now
        trust = await self.platform.services["authenticator"].trust.current()
        try:
            card = trust.verify(certificate, usage="sign", now=now)
        except CertificateRejected as rejected:
            raise FailedPrecondition(rejected.reason, f"the signature certificate is refused ({rejected.reason})",
                                     [FieldViolation("signature_certificate", rejected.reason)]) from None
        # card_links holds the even-length spelling (serial_text); the unpadded one is accepted too.
        serials = tuple({card.serial_hex, format(card.serial, "x")})
        owner = await store.sign_certificate_owner(tx, card.issuer, serials)
        if owner != resident.resident_id:
            raise FailedPrecondition("CERTIFICATE_NOT_LINKED", "this signature certificate is not linked to you",
                                     [FieldViolation("signature_certificate", "not the caller's card")])
        try:
            verify_signature(card, data, signature)
        except CertificateRejected:
            raise InvalidArgument("SIGNATURE_MISMATCH", "the signature is not over the application as it stands "
                                  "now; prepare the submission again and sign it",
                                  [FieldViolation("signature", "does not verify over the current canonical bytes")]
                                  ) from None
        now_ms = to_epoch_ms(now)
        await store.insert_evidence(tx, {
            "evidence_id": new_id("evd"), "application_id": application_id, "version": row["version"],
            "canonical": data, "signature": signature, "certificate": certificate,
            "certificate_issuer": card.issuer, "certificate_serial": card.serial_hex,
            "arrived_at_ms": now_ms,
        })
        first = row["status"] == DRAFT
        status = SUBMITTED if first else RESUBMITTED
        # What staff read is exactly the form that was signed.
        columns: dict[str, Any] = {"last_submitted_at_ms": now_ms, "corrections_json": "[]",
                                   "form_json": canonical.canonical_json(form).decode()}
        if first:
            columns["submitted_at_ms"] = now_ms
        fresh = await self._change(tx, row, principal, action=status, status=status, **columns)
        log.info("application submitted", extra={"application_id": application_id, "status": status})
        return fresh

    async def withdraw(self, tx: Tx, principal: Principal, application_id: str, version: int, reason: str) -> Any:
        _own(principal)
        require_version(version)
        row = await load(tx, principal, application_id)
        if row["status"] == DECIDED:
            raise FailedPrecondition("ALREADY_DECIDED", "a decided application cannot be withdrawn")
        if row["status"] == WITHDRAWN:
            raise FailedPrecondition("ALREADY_WITHDRAWN", "the application is already withdrawn")
        _check_version(row, version)
        return await self._change(tx, row, principal, action="withdrawn", status=WITHDRAWN, reason=reason[:1000])

    # ---- staff ----------------------------------------------------------------------------

    async def _staff_row(self, tx: Tx, principal: Principal, application_id: str, version: int,
                         allowed: frozenset[str]) -> Any:
        _staff(principal)
        require_version(version)
        row = await load(tx, principal, application_id)
        _check_version(row, version)
        if row["status"] not in allowed:
            raise FailedPrecondition("INVALID_TRANSITION", f"not possible from state {row['status']}",
                                     metadata={"status": row["status"]})
        return row

    async def _notify(self, tx: Tx, row: Any, key: str, **values: str) -> None:
        sink = self.platform.services.get("notices")
        if sink is None:
            return
        procedure = await procedure_for(tx, row["municipality_code"], row["procedure_code"], offered_only=False)
        title, body = NOTICE_TEXT[key]
        try:
            await sink.send_to_resident(
                tx, resident_id=row["resident_id"], municipality_code=row["municipality_code"], title=title,
                body=body.format(title=procedure.title, **values).strip()[:5000],
                link=f"application/{row['application_id']}", category="application",
                dedupe_key=f"{row['application_id']}:{row['version']}",
            )
        except DomainError as error:  # e.g. the resident moved away: the action stands, the notice is skipped
            log.warning("notice not sent", extra={"application_id": row["application_id"], "reason": error.reason})

    async def accept(self, tx: Tx, principal: Principal, application_id: str, version: int, note: str) -> Any:
        row = await self._staff_row(tx, principal, application_id, version, AWAITING_ACCEPTANCE)
        fresh = await self._change(tx, row, principal, action="accepted", status=ACCEPTED, reason=note[:1000],
                                   accepted_at_ms=self._now_ms())
        await self._notify(tx, fresh, "accepted")
        return fresh

    async def request_correction(self, tx: Tx, principal: Principal, application_id: str, version: int,
                                 reasons: list[dict[str, str]], message: str) -> Any:
        if not reasons:
            raise InvalidArgument.field("reasons", "name at least one field or attachment to correct")
        if len(reasons) > MAX_CORRECTION_REASONS:
            raise InvalidArgument.field("reasons", f"at most {MAX_CORRECTION_REASONS}")
        row = await self._staff_row(tx, principal, application_id, version, CORRECTABLE)
        procedure = await procedure_for(tx, row["municipality_code"], row["procedure_code"], offered_only=False)
        violations = []
        for i, item in enumerate(reasons):
            if not item["field_path"] and not item["attachment_slot"]:
                violations.append(FieldViolation(f"reasons[{i}]", "name a field_path or an attachment_slot"))
            if item["field_path"] and not item["field_path"].startswith("form."):
                violations.append(FieldViolation(f"reasons[{i}].field_path", "a form path like form.claimant.name"))
            if item["attachment_slot"] and procedure.slot(item["attachment_slot"]) is None:
                violations.append(FieldViolation(f"reasons[{i}].attachment_slot", "not a slot of this procedure"))
            if not item["reason"].strip():
                violations.append(FieldViolation(f"reasons[{i}].reason", "required"))
        if violations:
            raise InvalidArgument.fields(violations)
        summary = "; ".join(f"{r['field_path'] or r['attachment_slot']}: {r['reason']}" for r in reasons)
        fresh = await self._change(tx, row, principal, action="correction_requested", status=CORRECTION,
                                   reason=(message + " " if message else "") + summary[:2000],
                                   corrections_json=json.dumps(reasons, ensure_ascii=False))
        await self._notify(tx, fresh, "correction_requested", message=message[:2000])
        return fresh

    async def decide(self, tx: Tx, principal: Principal, application_id: str, version: int, decision: str,
                     result_text: str) -> Any:
        if decision not in ("approved", "rejected"):
            raise InvalidArgument.field("decision", "DECISION_APPROVED or DECISION_REJECTED")
        if not result_text.strip():
            raise InvalidArgument.field("result_text", "required: the result the resident reads")
        row = await self._staff_row(tx, principal, application_id, version, DECIDABLE)
        now_ms = self._now_ms()
        fresh = await self._change(tx, row, principal, action="decided", status=DECIDED, reason=decision,
                                   decision=decision, result_text=result_text[:5000], decided_at_ms=now_ms)
        await self._notify(tx, fresh, f"decided_{decision}", result=result_text[:2000])
        return fresh
