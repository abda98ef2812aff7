"""The kiosk transaction (キオスク端末での交付): every step answered once, state in the database.

A step is keyed by (kiosk, kiosk_transaction_id, step_id). Its first answer is stored in the same
write transaction as its effects, so a step resent after a reconnect (to any server process on the
same database) is answered from the store and never issues or charges twice. Refusals are answers
too. Records are read in the transaction that creates the documents, so a certificate reflects the
register at the moment of issuance.

PDFs (a few milliseconds of CPU each) are rendered in a worker process (`ONESTOP_PDF_WORKERS`,
default 1; 0 renders inline) before the issuing transaction, from a snapshot, with serial numbers
reserved for them; the issuing transaction reads the record again and uses them only if they say
exactly what it reads, else renders anew inline. Inline rendering (no worker) happens inside the
issuing transaction: statements run on the event loop's thread (server.db), so rendering first and
checking afterwards would only add work there.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import date, datetime

from onestop.issuance.v1 import issuance_pb2 as pb

from server.authz import Machine
from server.clock import JST, to_epoch_ms
from server.convert import ts, ts_ms
from server.db import Tx
from server.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument
from server.ids import new_id
from server.issuance import pdf, rules, store
from server.groupcommit import GroupCommit
from server.issuance.pdf import BlobStore, CertificateContent, render
from server.issuance.pdf_workers import Renderer
from server.issuance.rules import KioskSettings
from server.platform import Platform

log = logging.getLogger("onestop.issuance")

OPEN_STATES = ("begun", "signed_in", "ordered", "paid")
KIOSK_KINDS = ("convenience_store", "post_office", "city_hall")
MAX_ID = 128
_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_SEX = {"1": "男", "2": "女", "3": "－"}


class DeliveryGuardError(Exception):
    """A document about to leave the server is not of the transaction's card holder (or an allowed
    household member). Never expected: raising it rolls the issuing transaction back."""


def refusal(reason: str, message: str, fields: list[str] | None = None) -> pb.KioskSessionResponse:
    return pb.KioskSessionResponse(refusal=pb.Refusal(reason=reason, message=message, fields=fields or []))


def refusal_of(error: DomainError) -> pb.KioskSessionResponse:
    return refusal(error.reason, error.message, [v.field for v in error.violations])


def new_verification_code() -> str:
    """16 characters of a 32-letter alphabet: 80 random bits, drawn at once (a draw per character
    cost a system call each)."""
    bits = secrets.randbits(80)
    raw = "".join(_CODE_ALPHABET[(bits >> (5 * i)) & 31] for i in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalise_code(code: str) -> str:
    raw = "".join(ch for ch in code.upper() if ch.isalnum())
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


_parsed_settings: dict[str, KioskSettings] = {}


async def load_settings(tx: Tx, lgcode: str) -> KioskSettings:
    """The municipality's settings as they stand in `tx`. The row is read every time; only its JSON
    parse is remembered, by the exact text, and each caller gets its own copy."""
    row = await store.settings_row(tx, lgcode)
    if row is None:
        return KioskSettings.default_for(lgcode)
    text = row["settings_json"]
    settings = _parsed_settings.get(text)
    if settings is None:
        if len(_parsed_settings) >= 1024:
            _parsed_settings.clear()
        settings = _parsed_settings[text] = KioskSettings.from_json(text)
    return replace(settings, offered_types=list(settings.offered_types), fees=dict(settings.fees))


def municipality_label(row) -> str:
    return row["name"] if row else ""


@dataclass
class Issuable:
    """What the checks found: whose certificate, from which municipality, at which fee."""

    certificate_type: int
    subject: object
    holder: object
    issuing_code: str
    settings: KioskSettings
    fee: int
    extra: dict


@dataclass
class Prepared:
    """Copies rendered before the issuing transaction: (serial, code, pdf, sha256) each."""

    now: datetime
    identity: tuple
    copies: list[tuple[str, str, bytes, str]]


def _identity(found: "Issuable", order: pb.Order, base: CertificateContent) -> tuple:
    """What a certificate says, apart from its serial and code: equal means the same document."""
    return (found.certificate_type, found.issuing_code, found.subject["resident_id"], found.fee, order.copies,
            base.title, base.municipality_name, base.mayor_line, tuple(base.lines), tuple(base.footer),
            base.issued_at)


class Records:
    """The registry rows and settings one step reads, each read once: inside one transaction they
    cannot change, and the menu checks all seven certificate types against the same few rows."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self._residents: dict[str, object] = {}
        self._settings: dict[str, KioskSettings] = {}
        self._municipalities: dict[str, object] = {}

    async def resident(self, resident_id: str):
        if resident_id not in self._residents:
            self._residents[resident_id] = await store.resident(self.tx, resident_id)
        return self._residents[resident_id]

    async def settings(self, lgcode: str) -> KioskSettings:
        if lgcode not in self._settings:
            self._settings[lgcode] = await load_settings(self.tx, lgcode)
        return self._settings[lgcode]

    async def municipality(self, code: str):
        if code not in self._municipalities:
            self._municipalities[code] = await store.municipality(self.tx, code)
        return self._municipalities[code]


class OpenTransaction(dict):
    """A kiosk transaction's row as one step sees it. The step's changes to it (`set`) are written
    in one UPDATE at the end of the step, with its new idle expiry (an UPDATE each cost a statement
    more per step)."""

    def __init__(self, row: dict) -> None:
        super().__init__(row)
        self.changes: dict = {}

    def set(self, **columns) -> None:
        self.changes.update(columns)
        self.update(columns)


class KioskDesk:
    """Answers kiosk steps. One per server process; all state is in the database."""

    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self.blobs = BlobStore(platform.settings.blob_dir)
        # No lingering (unlike the points writer): measured with bench.issuance on a shared, busy
        # machine, waiting up to 5 ms for steps on their way saved ~6% of the main thread's CPU
        # but cost throughput in every pair of interleaved runs (a descheduled loop never looks idle).
        self._commits = GroupCommit(platform.db, name="kiosk steps", unavailable_reason="STEP_NOT_STORED")
        self.renderer = Renderer(self.blobs, platform.settings.pdf_workers)
        if platform.settings.pdf_stats_file is not None:
            pdf.STATS.path = str(platform.settings.pdf_stats_file)

        async def close_renderer() -> None:
            self.renderer.close()

        platform.on_shutdown.append(self._commits.aclose)  # steps in flight are owed their answers
        platform.on_shutdown.append(close_renderer)

    # entry point ----------------------------------------------------------------------------

    async def handle(self, kiosk: Machine, request: pb.KioskSessionRequest) -> pb.KioskSessionResponse:
        self.renderer.start()  # starts (or restarts, when due) the PDF workers; otherwise a no-op
        ktid, step_id = request.kiosk_transaction_id, request.step_id
        bad = [name for name, value in (("kiosk_transaction_id", ktid), ("step_id", step_id))
               if not value or len(value) > MAX_ID or not value.isprintable()]
        kind = request.WhichOneof("step")
        if kind is None:
            bad.append("step")
        if bad:
            response = refusal("INVALID_FIELD", "required: " + ", ".join(bad), bad)
        else:
            response = await self._answer(kiosk, request, kind)
        response.kiosk_transaction_id, response.step_id = ktid, step_id
        return response

    async def _answer(self, kiosk: Machine, request: pb.KioskSessionRequest, kind: str) -> pb.KioskSessionResponse:
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        if kind in ("begin", "card_sign_in") or (kind == "payment_confirmed" and self.renderer.offloaded):
            # These act outside the step's write transaction (a challenge, the nonce, rendering in
            # the worker): a resent step must be recognised before that. Other steps are checked
            # inside it.
            prior = await store.step_now(self._p.db, kiosk.id, request.kiosk_transaction_id, request.step_id)
            if prior is not None:
                return self._replay(prior, digest)
            if kind == "begin":
                return await self._begin(kiosk, request, digest)
            if kind == "card_sign_in":
                return await self._sign_in(kiosk, request, digest)
            prepared = await self._prepare_documents(kiosk, request)
            return await self._step(kiosk, request, digest, functools.partial(self._pay, prepared=prepared))
        work = {
            "menu": self._menu, "order": self._order, "payment_confirmed": self._pay,
            "print_result": self._print_result, "finish": self._finish, "cancel": self._cancel,
            "honseki_usage": self._honseki_usage,
        }[kind]
        return await self._step(kiosk, request, digest, work)

    def _replay(self, prior, digest: bytes) -> pb.KioskSessionResponse:
        if prior["request_digest"] != digest:
            return refusal("STEP_ID_REUSED", "this step_id was used for a different step of the transaction",
                           ["step_id"])
        response = pb.KioskSessionResponse()
        response.ParseFromString(prior["response"])
        for doc in response.documents.documents:
            doc.pdf = self.blobs.get(doc.pdf_sha256)
        response.replayed = True
        return response

    async def _step(self, kiosk: Machine, request, digest: bytes, work, *,
                    txn_required: bool = True) -> pb.KioskSessionResponse:
        """Run `work(tx, txn, request, now)` and store its answer, in one write transaction (shared
        with the other steps that arrive together: `server.groupcommit`). `txn` is an
        OpenTransaction: what the work changes in it is written with the step's new idle expiry.

        Expiry of the transaction is committed even though the step is refused; anything else a
        refused step wrote is undone (to the group commit's savepoint of this unit).
        """
        key = (kiosk.id, request.kiosk_transaction_id, request.step_id)
        now = self._p.clock.now()
        now_ms = to_epoch_ms(now)

        async def in_tx(tx: Tx) -> tuple[pb.KioskSessionResponse, bool]:
            prior, row = await store.step_and_transaction(tx, *key)
            if prior is not None:
                return self._replay(prior, digest), True
            txn = None if row is None else OpenTransaction(row)
            response = None
            if txn is None and txn_required:
                response = refusal("UNKNOWN_TRANSACTION", "no such transaction at this kiosk; begin one first")
            elif txn is not None and txn["state"] in OPEN_STATES and txn["expires_at_ms"] <= now_ms:
                await self._expire(tx, txn["txn_id"], now_ms)
                response = refusal("TRANSACTION_EXPIRED", "the transaction was abandoned and has expired")
            if response is None:
                try:
                    response = await work(tx, txn, request, now)
                    if txn is not None:
                        if response.WhichOneof("result") != "refusal":
                            txn.set(updated_at_ms=now_ms, expires_at_ms=now_ms + rules.TRANSACTION_IDLE_SECONDS * 1000)
                        if txn.changes:
                            await store.update_transaction(tx, txn["txn_id"], **txn.changes)
                except DomainError as error:
                    await self._commits.undo(tx)  # only reads and the work came before: nothing is lost
                    response = refusal_of(error)
            stored = response
            if response.documents.documents:
                stored = pb.KioskSessionResponse()
                stored.CopyFrom(response)
                for doc in stored.documents.documents:
                    doc.pdf = b""
            await store.put_step(tx, *key, digest, stored.SerializeToString(), now_ms)
            return response, False

        response, replayed = await self._commits.run(in_tx)
        if not replayed:
            reason = response.refusal.reason if response.WhichOneof("result") == "refusal" else ""
            log.info("kiosk step", extra={"kiosk": kiosk.id, "step": request.WhichOneof("step"),
                                          "reason": reason or "OK"})
        return response

    # expiry -----------------------------------------------------------------------------------

    async def _expire(self, tx: Tx, txn_id: str, now_ms: int) -> None:
        await store.void_open_documents(tx, txn_id, now_ms)
        await store.update_transaction(tx, txn_id, state="expired", updated_at_ms=now_ms)

    async def sweep_expired(self) -> int:
        """Expire abandoned transactions: their unconfirmed copies are voided, nothing is charged."""
        now_ms = to_epoch_ms(self._p.clock.now())
        async with self._p.db.write() as tx:
            ids = await store.expired_transactions(tx, now_ms, OPEN_STATES)
            for txn_id in ids:
                await self._expire(tx, txn_id, now_ms)
        return len(ids)

    # begin and sign-in --------------------------------------------------------------------------

    async def _begin(self, kiosk: Machine, request, digest: bytes) -> pb.KioskSessionResponse:
        existing = await store.transaction_now(self._p.db, kiosk.id, request.kiosk_transaction_id)
        challenge = None if existing else await self._p.services["authenticator"].create_challenge()

        async def work(tx, txn, request, now):
            if txn is not None or challenge is None:
                raise FailedPrecondition("TRANSACTION_EXISTS", "this kiosk_transaction_id has begun already")
            kind = kiosk.attributes.get("kind", "")
            if kind not in KIOSK_KINDS or (kind == "city_hall" and not kiosk.attributes.get("lg")):
                raise FailedPrecondition("KIOSK_CERTIFICATE_INCOMPLETE",
                                         "the kiosk certificate must name its kind (and lg for a city hall)")
            now_ms = to_epoch_ms(now)
            for txn_id in await store.expired_transactions(tx, now_ms, OPEN_STATES, limit=20):
                await self._expire(tx, txn_id, now_ms)
            attributes = kiosk.attributes
            await store.insert_transaction(tx, {
                "txn_id": new_id("ktx"), "kiosk_id": kiosk.id,
                "kiosk_transaction_id": request.kiosk_transaction_id,
                "operator": attributes.get("operator", "unknown"),
                "kiosk_kind": kind, "kiosk_lg": attributes.get("lg"),
                "state": "begun", "challenge_id": challenge.challenge_id, "created_at_ms": now_ms,
                "updated_at_ms": now_ms, "expires_at_ms": now_ms + rules.TRANSACTION_IDLE_SECONDS * 1000,
            })
            return pb.KioskSessionResponse(challenge=pb.Challenge(nonce=challenge.nonce,
                                                                  expires_at=ts(challenge.expires_at)))

        return await self._step(kiosk, request, digest, work, txn_required=False)

    async def _sign_in(self, kiosk: Machine, request, digest: bytes) -> pb.KioskSessionResponse:
        step = request.card_sign_in
        txn = await store.transaction_now(self._p.db, kiosk.id, request.kiosk_transaction_id)
        signed, failure = None, None
        now_ms = to_epoch_ms(self._p.clock.now())
        if (txn is not None and txn["state"] == "begun" and txn["expires_at_ms"] > now_ms
                and not step.card_locked):
            try:
                signed = await self._p.services["authenticator"].verify_card_response(
                    txn["challenge_id"], step.certificate, step.signature)
            except DomainError as error:
                failure = error
            if failure is not None and failure.reason == "NONCE_REPLAYED":
                # The same step resent after a dropped line, while its first attempt (on this or
                # another server process) holds the nonce: wait for that attempt's stored answer.
                prior = await self._await_step(kiosk.id, request.kiosk_transaction_id, request.step_id)
                if prior is not None:
                    return self._replay(prior, digest)

        async def work(tx, txn, request, now):
            if txn["state"] != "begun":
                raise FailedPrecondition("WRONG_STATE", f"the transaction is {txn['state']}, not waiting for a card")
            if step.card_locked:
                txn.set(state="locked", updated_at_ms=to_epoch_ms(now))
                return refusal("CARD_LOCKED", "the card's PIN is locked; the municipality can reset it")
            if failure is not None:
                if isinstance(failure, InvalidArgument):
                    raise InvalidArgument.fields([FieldViolation(f"card_sign_in.{v.field}", v.description)
                                                  for v in failure.violations])
                raise failure
            txn.set(state="signed_in", resident_id=signed.resident_id)
            holder = await store.resident(tx, signed.resident_id)
            return pb.KioskSessionResponse(signed_in=pb.SignedIn(
                resident_id=signed.resident_id, municipality_code=holder["municipality_code"]))

        return await self._step(kiosk, request, digest, work)

    async def _await_step(self, kiosk_id: str, ktid: str, step_id: str, *, attempts: int = 250):
        for _ in range(attempts):
            prior = await store.step_now(self._p.db, kiosk_id, ktid, step_id)
            if prior is not None:
                return prior
            await asyncio.sleep(0.02)  # polling another attempt's progress, not waiting on the clock
        return None

    # menu, order --------------------------------------------------------------------------------

    @staticmethod
    def _require(txn, *states: str) -> None:
        if txn["state"] not in states:
            closed = txn["state"] not in OPEN_STATES
            raise FailedPrecondition("TRANSACTION_CLOSED" if closed else "WRONG_STATE",
                                     f"the transaction is {txn['state']}")

    async def _menu(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, "signed_in", "ordered")
        records = Records(tx)
        holder = await records.resident(txn["resident_id"])
        menu = pb.Menu()
        no_options = pb.OrderOptions()
        for certificate_type in rules.ALL_TYPES:
            item = pb.MenuItem(certificate_type=certificate_type)
            try:
                found = await self.check_issuable(tx, txn, certificate_type, "", no_options, now, records=records)
                item.municipality_code, item.fee_yen, item.available = found.issuing_code, found.fee, True
            except DomainError as error:
                item.available, item.unavailable_reason = False, error.reason
                code = holder["honseki_code"] if certificate_type in rules.HONSEKI_TYPES else holder["municipality_code"]
                item.municipality_code = code or ""
                if code:
                    item.fee_yen = (await records.settings(code)).fee(certificate_type)
            if item.municipality_code:
                item.municipality_name = municipality_label(await records.municipality(item.municipality_code))
            menu.items.append(item)
        if holder["household_id"] and holder["dv_protection"] == 0:
            for member in await store.household_members(tx, holder["household_id"]):
                if member["resident_id"] != holder["resident_id"] and member["status"] == "active":
                    menu.household.append(pb.HouseholdMember(resident_id=member["resident_id"], name=member["name"],
                                                             relationship=member["relationship"]))
        return pb.KioskSessionResponse(menu=menu)

    def _check_order(self, order: pb.Order, now) -> None:
        bad = []
        if order.certificate_type not in rules.ALL_TYPES:
            bad.append(("order.certificate_type", "choose a certificate type"))
        if not 1 <= order.copies <= rules.MAX_COPIES:
            bad.append(("order.copies", f"1 to {rules.MAX_COPIES}"))
        fy = order.options.fiscal_year
        if fy and fy != rules.current_fiscal_year(now):
            bad.append(("order.options.fiscal_year", "only the current fiscal year is issued at kiosks"))
        if bad:
            raise InvalidArgument.fields([FieldViolation(f, d) for f, d in bad])

    async def _order(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, "signed_in", "ordered")
        order = request.order
        self._check_order(order, now)
        found = await self.check_issuable(tx, txn, order.certificate_type, order.subject_resident_id,
                                          order.options, now)
        total = found.fee * order.copies
        txn.set(state="ordered", quote_yen=total, order_json=order.SerializeToString().hex())
        return pb.KioskSessionResponse(quote=pb.Quote(
            certificate_type=order.certificate_type, copies=order.copies, fee_per_copy_yen=found.fee,
            total_yen=total, municipality_code=found.issuing_code))

    async def check_issuable(self, tx: Tx, txn, certificate_type: int, subject_id: str, options, now, *,
                             records: Records | None = None) -> Issuable:
        """Every refusal rule, against the records as they stand in `tx`."""
        records = records or Records(tx)
        holder = await records.resident(txn["resident_id"])
        rules.status_refusal(holder["status"], whose="card holder")
        if not subject_id or subject_id == holder["resident_id"]:
            subject = holder
        else:
            if certificate_type not in rules.HOUSEHOLD_TYPES:
                raise FailedPrecondition("HOLDER_ONLY", "this certificate is issued to its holder only")
            subject = await records.resident(subject_id)
            if subject is None or not holder["household_id"] or subject["household_id"] != holder["household_id"]:
                raise FailedPrecondition("NOT_SAME_HOUSEHOLD", "only members of the card holder's household")
            rules.status_refusal(subject["status"], whose="household member")
        if subject["dv_protection"] or holder["dv_protection"]:
            raise FailedPrecondition("DV_PROTECTED", "kiosk issuance is suspended for this record; ask at the office")
        extra: dict = {}
        if certificate_type in rules.HONSEKI_TYPES:
            issuing = subject["honseki_code"]
            if not issuing or not subject["family_register_id"]:
                raise FailedPrecondition("NO_FAMILY_REGISTER", "no family register on record")
        else:
            issuing = subject["municipality_code"]
        settings = await records.settings(issuing)
        if not settings.participating:
            raise FailedPrecondition("NOT_PARTICIPATING", "this municipality does not issue at kiosks")
        if txn["kiosk_kind"] == "city_hall" and txn["kiosk_lg"] != issuing:
            hall = await records.settings(txn["kiosk_lg"] or "")
            if not hall.city_hall_serves_all:
                raise FailedPrecondition("NOT_SERVED_AT_THIS_KIOSK", "this city hall's kiosks serve its own residents")
        if certificate_type not in settings.offered_types:
            raise FailedPrecondition("TYPE_NOT_OFFERED", "the municipality does not offer this certificate at kiosks")
        rules.check_hours(settings, certificate_type, now)
        if certificate_type == rules.SEAL_REGISTRATION:
            seal = await store.live_seal(tx, subject["resident_id"])
            if seal is None:
                raise FailedPrecondition("NO_ACTIVE_SEAL", "no seal registration in force")
            extra["seal"] = dict(seal)
        elif certificate_type == rules.TAX:
            fiscal_year = rules.current_fiscal_year(now)
            record = await store.tax_record(tx, subject["resident_id"], fiscal_year)
            if record is None:
                raise FailedPrecondition("NO_TAX_RECORD", f"no tax record for fiscal year {fiscal_year}")
            extra["tax"] = dict(record)
        elif certificate_type in rules.HONSEKI_TYPES:
            if issuing != subject["municipality_code"]:
                usage = await store.honseki_usage(tx, subject["resident_id"], issuing)
                if usage is None or usage["status"] != "approved":
                    raise FailedPrecondition("HONSEKI_USAGE_NOT_REGISTERED",
                                             "register use of the 本籍地 (利用登録) first")
            register = await store.family_register(tx, subject["family_register_id"])
            if register is None:
                raise FailedPrecondition("NO_FAMILY_REGISTER", "no family register on record")
            if register["pending_notification"]:
                raise FailedPrecondition("REGISTER_NOT_REFLECTED", "a notification is not yet reflected in the register")
            extra["register"] = dict(register)
            extra["members"] = [dict(m) for m in await store.family_register_members(tx, register["register_id"])]
        return Issuable(certificate_type, subject, holder, issuing, settings, settings.fee(certificate_type), extra)

    # payment: the documents ---------------------------------------------------------------------

    async def _prepare_documents(self, kiosk: Machine, request) -> "Prepared | None":
        """Render the copies in the worker process before the issuing transaction, from a snapshot
        (so the event loop's thread and the writer do no rendering). The issuing transaction reads
        the record again and uses these PDFs only if they say exactly what it reads; otherwise it
        renders anew. Serial numbers are reserved here; a reservation not used leaves a gap."""
        now = self._p.clock.now()
        try:
            async with self._p.db.read() as tx:
                txn = await store.transaction(tx, kiosk.id, request.kiosk_transaction_id)
                if (txn is None or txn["state"] != "ordered" or txn["expires_at_ms"] <= to_epoch_ms(now)
                        or request.payment_confirmed.amount_yen != txn["quote_yen"]):
                    return None
                order = pb.Order()
                order.ParseFromString(bytes.fromhex(txn["order_json"]))
                records = Records(tx)
                found = await self.check_issuable(tx, txn, order.certificate_type, order.subject_resident_id,
                                                  order.options, now, records=records)
                municipality = await records.municipality(found.issuing_code)
                base = await self._content(tx, found, order.options, municipality, "", "", now)
        except DomainError:
            return None  # the step itself will refuse, in its transaction
        year = now.astimezone(JST).year

        async def reserve(tx: Tx) -> list[int]:
            return [await store.next_serial(tx, found.issuing_code, year) for _ in range(order.copies)]

        numbers = await self._commits.run(reserve)
        contents = [replace(base, serial=f"{found.issuing_code}-{year}-{number:07d}",
                            verification_code=new_verification_code()) for number in numbers]
        stored = await self.renderer.render_and_store(contents)
        copies = [(c.serial, c.verification_code, data, sha) for c, (data, sha) in zip(contents, stored)]
        return Prepared(now, _identity(found, order, base), copies)

    async def _pay(self, tx: Tx, txn, request, now, prepared: "Prepared | None" = None) -> pb.KioskSessionResponse:
        self._require(txn, "ordered")
        if request.payment_confirmed.amount_yen != txn["quote_yen"]:
            raise FailedPrecondition("AMOUNT_MISMATCH", f"the quote was {txn['quote_yen']} yen")
        order = pb.Order()
        order.ParseFromString(bytes.fromhex(txn["order_json"]))
        records = Records(tx)
        found = await self.check_issuable(tx, txn, order.certificate_type, order.subject_resident_id,
                                          order.options, now, records=records)
        municipality = await records.municipality(found.issuing_code)
        if prepared is not None:
            # The record as it stands now, in this transaction, must read as the prepared PDFs say.
            base = await self._content(tx, found, order.options, municipality, "", "", prepared.now)
            if _identity(found, order, base) != prepared.identity:
                prepared = None
        if prepared is not None:
            issued_at = prepared.now
            copies = prepared.copies
        else:
            # Inline, in this transaction (no worker, or the record changed since the worker rendered).
            issued_at = now
            year = now.astimezone(JST).year
            copies = []
            for _ in range(order.copies):
                number = await store.next_serial(tx, found.issuing_code, year)
                serial, code = f"{found.issuing_code}-{year}-{number:07d}", new_verification_code()
                content = await self._content(tx, found, order.options, municipality, serial, code, now)
                data = render(content)
                copies.append((serial, code, data, self.blobs.put(data)))
        now_ms, issued_ms = to_epoch_ms(now), to_epoch_ms(issued_at)
        documents = pb.Documents()
        for copy_no, (serial, code, data, sha) in enumerate(copies, start=1):
            document_id = new_id("doc")
            await store.insert_document(tx, {
                "document_id": document_id, "txn_id": txn["txn_id"], "copy_no": copy_no, "serial": serial,
                "verification_code": code, "certificate_type": order.certificate_type,
                "municipality_code": found.issuing_code, "subject_resident_id": found.subject["resident_id"],
                "holder_resident_id": txn["resident_id"], "pdf_sha256": sha, "status": "issued",
                "issued_at_ms": issued_ms,
            })
            await store.insert_charge(tx, {
                "charge_id": new_id("chg"), "document_id": document_id, "txn_id": txn["txn_id"],
                "municipality_code": found.issuing_code, "operator": txn["operator"], "amount_yen": found.fee,
                "status": "pending", "created_at_ms": now_ms,
            })
            documents.documents.append(pb.Document(
                copy_no=copy_no, serial=serial, verification_code=code, certificate_type=order.certificate_type,
                municipality_code=found.issuing_code, subject_resident_id=found.subject["resident_id"],
                issued_at=ts_ms(issued_ms), pdf=data, pdf_sha256=sha))
        await self.guard_delivery(tx, txn, documents)
        txn.set(state="paid")
        return pb.KioskSessionResponse(documents=documents)

    async def guard_delivery(self, tx: Tx, txn, documents: pb.Documents) -> None:
        """Before documents leave the server: each is of this transaction's card holder, or of a
        member of the holder's household for a type that allows it. Checked against the database."""
        holder_id = await tx.scalar("SELECT resident_id FROM kiosk_transactions WHERE txn_id = ?", (txn["txn_id"],))
        if not holder_id or holder_id != txn["resident_id"]:
            raise DeliveryGuardError("transaction has no card holder")
        holder = None
        for doc in documents.documents:
            row = await tx.one("SELECT subject_resident_id, holder_resident_id, certificate_type FROM issued_documents"
                               " WHERE serial = ?", (doc.serial,))
            if row is None or row["holder_resident_id"] != holder_id or row["subject_resident_id"] != doc.subject_resident_id:
                raise DeliveryGuardError("document does not belong to this transaction")
            if doc.subject_resident_id == holder_id:
                continue
            holder = holder or await store.resident(tx, holder_id)
            subject = await store.resident(tx, doc.subject_resident_id)
            if (row["certificate_type"] not in rules.HOUSEHOLD_TYPES or subject is None
                    or not holder["household_id"] or subject["household_id"] != holder["household_id"]):
                log.error("delivery guard tripped", extra={"kiosk_txn": txn["txn_id"]})
                raise DeliveryGuardError("document subject is not the card holder nor of the household")

    async def _content(self, tx: Tx, found: Issuable, options, municipality, serial: str, code: str,
                       now: datetime) -> CertificateContent:
        s, kind = found.subject, found.certificate_type
        name = municipality_label(municipality)
        full_name = f"{municipality['prefecture']}{name}" if municipality else found.issuing_code
        content = CertificateContent(
            title=rules.TYPE_NAMES[kind], municipality_name=full_name,
            mayor_line=f"{name}長　　　　【公印】", serial=serial, verification_code=code, issued_at=now)
        born = rules.to_wareki(date.fromisoformat(s["birth_date"]))
        lines = content.lines
        if kind in (rules.RESIDENT_RECORD, rules.RESIDENT_RECORD_ITEMS):
            lines += [("氏名", s["name"]), ("生年月日", born), ("性別", _SEX.get(s["sex"], "－")), ("住所", s["address"])]
            if s["moved_in_on"]:
                lines.append(("住民となった日", rules.to_wareki(date.fromisoformat(s["moved_in_on"]))))
            if kind == rules.RESIDENT_RECORD:
                if options.include_household and s["household_id"]:
                    head = await store.household_head(tx, s["household_id"])
                    lines += [("世帯主", head["name"] if head else ""), ("続柄", s["relationship"] or "")]
                else:
                    lines.append(("世帯主・続柄", "記載省略"))
                register = await store.family_register(tx, s["family_register_id"]) if s["family_register_id"] else None
                if options.include_honseki and register:
                    lines += [("本籍", register["honseki_address"]), ("筆頭者", register["head_name"])]
                else:
                    lines.append(("本籍・筆頭者", "記載省略"))
                allowed = options.include_individual_number and found.settings.individual_number_allowed
                lines.append(("個人番号", "記載を選択（番号は本システムでは保持・印字しない）" if allowed else "記載省略"))
                content.footer.append("住民票コードは記載を省略しています。")
            content.footer.append("この写しは住民票の原本と相違ないことを証明する。")
        elif kind == rules.SEAL_REGISTRATION:
            seal = found.extra["seal"]
            lines += [("氏名", s["name"]), ("生年月日", born), ("住所", s["address"]),
                      ("登録番号", seal["registration_number"]),
                      ("登録日", rules.to_wareki(date.fromisoformat(seal["registered_on"]))), ("印影", "（登録印影）")]
            content.footer.append("この写しは登録されている印影と相違ないことを証明する。")
        elif kind == rules.TAX:
            tax = found.extra["tax"]
            fy = tax["fiscal_year"]
            lines += [("年度", f"{fy}年度（{rules.income_year(fy)}年分所得）"), ("氏名", s["name"]), ("住所", s["address"]),
                      ("総所得金額", f"{tax['total_income']:,}円"), ("課税所得金額", f"{tax['taxable_income']:,}円"),
                      ("市町村民税", f"{tax['municipal_tax']:,}円"), ("道府県民税", f"{tax['prefectural_tax']:,}円"),
                      ("扶養人数", f"{tax['dependents']}人")]
        else:
            register, members = found.extra["register"], found.extra["members"]
            lines += [("本籍", register["honseki_address"]), ("筆頭者", register["head_name"])]
            if kind == rules.FAMILY_REGISTER_FULL:
                shown = members
            else:
                shown = [m for m in members if m["resident_id"] == s["resident_id"]]
            if kind == rules.FAMILY_REGISTER_ATTACHMENT:
                lines += [("氏名", s["name"]), ("住所", s["address"]),
                          ("住所を定めた日", rules.to_wareki(date.fromisoformat(s["moved_in_on"])) if s["moved_in_on"] else "")]
            else:
                for m in shown:
                    state = "（除籍）" if m["removed"] else ""
                    lines.append((f"{m['relationship']}{state}",
                                  f"{m['name']}　{rules.to_wareki(date.fromisoformat(m['birth_date']))}生"))
        return content

    # print results, finish, cancel ------------------------------------------------------------------

    async def _print_result(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, "paid")
        result = request.print_result
        if result.outcome not in (pb.PRINT_OUTCOME_PRINTED, pb.PRINT_OUTCOME_FAILED):
            raise InvalidArgument.field("print_result.outcome", "PRINTED or FAILED")
        docs = {d["copy_no"]: d for d in await store.documents(tx, txn["txn_id"])}
        doc = docs.get(result.copy_no)
        if doc is None:
            raise InvalidArgument.field("print_result.copy_no", "no such copy in this transaction", reason="UNKNOWN_COPY")
        if doc["status"] != "issued":
            raise FailedPrecondition("COPY_ALREADY_RESOLVED", f"copy {result.copy_no} is already {doc['status']}")
        now_ms = to_epoch_ms(now)
        if result.outcome == pb.PRINT_OUTCOME_PRINTED:
            await store.resolve_document(tx, doc["document_id"], "printed", "posted", now_ms)
            await store.insert_operator_fee(tx, {
                "document_id": doc["document_id"], "municipality_code": doc["municipality_code"],
                "operator": txn["operator"], "month": now.astimezone(JST).strftime("%Y-%m"),
                "amount_yen": rules.OPERATOR_FEE_YEN, "fee_collected_yen": doc["amount_yen"], "created_at_ms": now_ms,
            })
            charged = doc["amount_yen"]
        else:
            await store.resolve_document(tx, doc["document_id"], "voided", "voided", now_ms)
            charged = 0
        return pb.KioskSessionResponse(print_recorded=pb.PrintRecorded(
            copy_no=result.copy_no, outcome=result.outcome, charged_yen=charged))

    async def _finish(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, "signed_in", "ordered", "paid")
        docs = await store.documents(tx, txn["txn_id"])
        if any(d["status"] == "issued" or d["charge_status"] == "pending" for d in docs):
            await store.void_open_documents(tx, txn["txn_id"], to_epoch_ms(now))
            docs = await store.documents(tx, txn["txn_id"])
        printed = [d for d in docs if d["status"] == "printed"]
        txn.set(state="finished")
        return pb.KioskSessionResponse(receipt=pb.Receipt(
            copies_printed=len(printed), copies_voided=len(docs) - len(printed),
            total_yen=sum(d["amount_yen"] for d in printed), serials=[d["serial"] for d in printed]))

    async def _cancel(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, *OPEN_STATES)
        voided = await store.void_open_documents(tx, txn["txn_id"], to_epoch_ms(now))
        txn.set(state="cancelled")
        return pb.KioskSessionResponse(voided=pb.Voided(copies_voided=voided))

    async def _honseki_usage(self, tx: Tx, txn, request, now) -> pb.KioskSessionResponse:
        self._require(txn, "signed_in", "ordered")
        usage = await apply_honseki_usage(tx, txn["resident_id"], now)
        return pb.KioskSessionResponse(honseki_usage=usage)


# 利用登録 ----------------------------------------------------------------------------------------


def usage_message(row) -> pb.HonsekiUsage:
    status = {"pending": pb.HONSEKI_USAGE_STATUS_PENDING, "approved": pb.HONSEKI_USAGE_STATUS_APPROVED,
              "rejected": pb.HONSEKI_USAGE_STATUS_REJECTED}[row["status"]]
    return pb.HonsekiUsage(usage_id=row["usage_id"], resident_id=row["resident_id"],
                           honseki_code=row["honseki_code"], status=status, applied_at=ts_ms(row["applied_at_ms"]),
                           decided_at=ts_ms(row["decided_at_ms"]))


async def apply_honseki_usage(tx: Tx, resident_id: str, now: datetime) -> pb.HonsekiUsage:
    resident = await store.resident(tx, resident_id)
    code = resident["honseki_code"] if resident else None
    if not code:
        raise FailedPrecondition("NO_FAMILY_REGISTER", "no 本籍地 on record")
    if code == resident["municipality_code"]:
        raise FailedPrecondition("HONSEKI_IS_ADDRESS", "the 本籍地 is the address municipality: no registration needed")
    if not (await load_settings(tx, code)).participating:
        raise FailedPrecondition("NOT_PARTICIPATING", "the 本籍地 does not issue at kiosks")
    row = await store.honseki_usage(tx, resident_id, code)
    if row is None:
        await store.insert_honseki_usage(tx, new_id("hsu"), resident_id, code, to_epoch_ms(now))
        row = await store.honseki_usage(tx, resident_id, code)
    return usage_message(row)
