"""The whole story of the one-stop card, played against one running platform, every step checked.

1. 子育てワンストップ — 山田 花子 signs in from her phone with her card, finds 児童手当 認定請求,
   applies with a photographed document and signs the submission with the card's signature key.
2. 補正 — the officer of 千代田区 accepts it and asks for a correction; the phone gets the notice
   live (SSE), the parent corrects and re-signs, the officer approves; the phone reads the decision.
3. コンビニ交付 — a convenience-store kiosk issues her 住民票の写し and 印鑑登録証明書; the
   verification codes check out, over gRPC and on the gateway's public route.
4. 自治体ポイント — a card company converts her card points, she spends some at a shop in two
   steps (authorise, capture), and the month's settlements print.

Every actor uses the project's own client code: the phone is `mobile_stub.MobileApp` (through the
gateway), the officer `clients.staff.Staff`, the kiosk `clients.kiosk.Kiosk`, the shop
`clients.shop.Terminal`; the rest (registry, partner, operator, settlements) are the generated stubs
over mTLS with development-PKI machine certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from typing import Any

import click
import grpc
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from onestop.application.v1 import application_pb2 as app_pb
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.issuance.v1 import issuance_pb2 as iss_pb
from onestop.issuance.v1 import issuance_pb2_grpc
from onestop.points.v1 import points_pb2 as pts_pb
from onestop.points.v1 import points_pb2_grpc
from onestop.registry.v1 import registry_pb2 as reg_pb
from onestop.registry.v1 import registry_pb2_grpc
from PIL import ExifTags, Image

from clients.demo.platform import Endpoints
from clients.kiosk import Kiosk, Printer
from clients.connect import describe
from clients.pki import DevPki, MachineIdentity, SoftwareCard
from clients.shop.__main__ import Terminal
from clients.staff.__main__ import Staff
from mobile_stub.app import CHILD_ALLOWANCE, GatewayCallError, MobileApp, child_allowance_form
from mobile_stub.photos import gps_of, jpeg_with_gps
from server.bootstrap import DEMO_MUNICIPALITY, DEMO_PASSWORD, DEMO_PIN
from server.clock import JST
from server.ids import new_id

LG = DEMO_MUNICIPALITY                       # 東京都千代田区
PARENT_CARD = "yamada-hanako"                # 山田 花子, 世帯主 of the demo household
CHILD_NAME, CHILD_KANA, CHILD_BORN = "山田 ひな", "ヤマダ ヒナ", "2026-07-15"   # the household's baby
CORRECTED_PHONE = "090-1234-5678"
RESULT_TEXT = "児童手当の受給資格を認定しました（月額15,000円、12月分から支給）"
CERTIFICATE_LABELS = {
    iss_pb.CERTIFICATE_TYPE_RESIDENT_RECORD: "住民票の写し",
    iss_pb.CERTIFICATE_TYPE_RESIDENT_RECORD_ITEMS: "住民票記載事項証明書",
    iss_pb.CERTIFICATE_TYPE_SEAL_REGISTRATION: "印鑑登録証明書",
    iss_pb.CERTIFICATE_TYPE_TAX: "所得・課税証明書",
    iss_pb.CERTIFICATE_TYPE_FAMILY_REGISTER_FULL: "戸籍全部事項証明書",
    iss_pb.CERTIFICATE_TYPE_FAMILY_REGISTER_INDIVIDUAL: "戸籍個人事項証明書",
    iss_pb.CERTIFICATE_TYPE_FAMILY_REGISTER_ATTACHMENT: "戸籍の附票の写し",
}
KIOSK = MachineIdentity("kiosk", "demo-kiosk-0001", {"operator": "seven", "kind": "convenience_store"})
OPERATOR_FEE_YEN = 123                       # per issued copy, owed to the store operator (seed §3(2)②)
PARTNER_ID = "demo-card-co"                  # a credit-card company
MEMBER_ACCOUNT = "CC-4980-0012-3456"
RATE_MILLI = 500                             # 1 card point = 0.5 municipal points
CARD_POINTS = 3000
SHOP = MachineIdentity("shop", "demo-kanda-shotengai", {"lg": LG, "kind": "shopping_street"})
SPEND = 800
CALL_TIMEOUT = 30.0
LIVE_NOTICE_SECONDS = 20.0


class DemoFailure(Exception):
    """A step did not give what it must."""


# ---- telling the story -----------------------------------------------------------------------


class Narrator:
    """Prints the account: a heading per step, a line per action, a ✓ per checked result."""

    def __init__(self, echo: Callable[[str], None] = click.echo) -> None:
        self.echo = echo
        self.checks = 0

    def step(self, number: int, title: str) -> None:
        self.echo("")
        self.echo(f"━━ Step {number}. {title}")

    def say(self, line: str) -> None:
        self.echo(f"   · {line}")

    def check(self, condition: bool, what: str, got: Any = None) -> None:
        if not condition:
            raise DemoFailure(what + ("" if got is None else f" (got: {got!r})"))
        self.checks += 1
        self.echo(f"   ✓ {what}")

    def passed(self, number: int, summary: str) -> None:
        self.echo(f"✓ Step {number} passed: {summary}")


def explain(error: BaseException) -> str:
    """One readable line (or a few) for whatever stopped a step."""
    if isinstance(error, grpc.RpcError):
        return "gRPC " + describe(error)
    if isinstance(error, GatewayCallError):
        fields = f" fields {error.fields}" if error.fields else ""
        return f"gateway {error}{fields}"
    if isinstance(error, click.ClickException):
        return error.format_message()
    if isinstance(error, (DemoFailure, TimeoutError)):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


def _reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a refusal ("" when there is none)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def _today_jst() -> date:
    return datetime.now(JST).date()


def _month_jst() -> str:
    return datetime.now(JST).strftime("%Y-%m")


def _has_personal_metadata(jpeg: bytes) -> bool:
    with Image.open(io.BytesIO(jpeg)) as image:
        exif = image.getexif()
        return bool(exif.get_ifd(ExifTags.IFD.GPSInfo)) or ExifTags.Base.Make in exif


# ---- the actors' connections ---------------------------------------------------------------------


class Connections:
    """Channels for every principal of the story: anonymous/resident (plain TLS) and machines (mTLS)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.pki = DevPki.ensure(endpoints.pki_dir, now=datetime.now(timezone.utc))
        self._ca = self.pki.ca_path.read_bytes()
        self._channels: list[aio.Channel] = []

    def public(self) -> aio.Channel:
        return self._keep(aio.secure_channel(self.endpoints.target, grpc.ssl_channel_credentials(self._ca)))

    def credentials(self, identity: MachineIdentity) -> grpc.ChannelCredentials:
        cert, key = self.pki.machine(identity)
        return grpc.ssl_channel_credentials(root_certificates=self._ca, private_key=key.read_bytes(),
                                            certificate_chain=cert.read_bytes())

    def machine(self, identity: MachineIdentity) -> aio.Channel:
        return self._keep(aio.secure_channel(self.endpoints.mtls_target, self.credentials(identity)))

    def sync_machine(self, identity: MachineIdentity) -> grpc.Channel:
        """For the synchronous client libraries (the shop terminal), called in a worker thread."""
        return grpc.secure_channel(self.endpoints.mtls_target, self.credentials(identity))

    def _keep(self, channel: aio.Channel) -> aio.Channel:
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class LiveNotices:
    """The phone's live notice stream (`GET /v1/notices/stream`, Server-Sent Events), read in the
    background from the inbox's latest cursor, so only notices that arrive from now on show up."""

    def __init__(self, phone: MobileApp) -> None:
        self.phone = phone
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "LiveNotices":
        inbox = await self.phone.request("GET", "/v1/notices")
        self.after = str(inbox.get("latestCursor", "0"))
        response = await self._stack.enter_async_context(self.phone.client.stream(
            "GET", "/v1/notices/stream",
            headers={"authorization": f"Bearer {self.phone.session['accessToken']}", "last-event-id": self.after}))
        if response.status_code != 200:
            await response.aread()
            await self._stack.aclose()
            raise DemoFailure(f"the notice stream answered HTTP {response.status_code}: {response.text[:200]}")
        self._reader = asyncio.create_task(self._read(response))
        return self

    async def _read(self, response) -> None:
        current: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in current:
                    await self.events.put(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = value.removeprefix(" ")

    async def next_notice(self, link: str) -> dict:
        """The next notice about `link` (e.g. application/app_...), waiting a bounded time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIVE_NOTICE_SECONDS
        while True:
            remaining = deadline - loop.time()
            if self._reader is not None and self._reader.done() and self.events.empty():
                problem = self._reader.exception() if not self._reader.cancelled() else None
                raise DemoFailure(f"the notice stream ended before a notice about {link} arrived"
                                  + (f" ({explain(problem)})" if problem else ""))
            if remaining <= 0:
                raise DemoFailure(f"no live notice about {link} within {LIVE_NOTICE_SECONDS:.0f} s")
            try:
                event = await asyncio.wait_for(self.events.get(), remaining)
            except asyncio.TimeoutError:
                continue
            if event.get("event") == "error":
                raise DemoFailure(f"the notice stream sent an error: {event.get('data')}")
            notice = json.loads(event["data"])
            if notice.get("link") == link:
                return notice

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._stack.aclose()


# ---- the story ---------------------------------------------------------------------------------


class Story:
    def __init__(self, endpoints: Endpoints, narrator: Narrator) -> None:
        self.endpoints = endpoints
        self.n = narrator
        self.net = Connections(endpoints)
        self.card_path = endpoints.card_path(PARENT_CARD)
        self.card = SoftwareCard.load(self.card_path)
        self.phone = MobileApp(endpoints.gateway, self.card, DEMO_PIN, DEMO_PASSWORD, timeout=CALL_TIMEOUT)
        self.staff = Staff(endpoints.mtls_target, endpoints.pki_dir, LG, CALL_TIMEOUT)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.net.public())
        self.municipality = self.net.machine(MachineIdentity("municipality", LG, {}))
        self.resident_id = ""
        self.application_id = ""

    async def close(self) -> None:
        await self.phone.client.aclose()
        self.staff.channel.close()
        await self.net.close()

    @property
    def bearer(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.phone.session['accessToken']}"),)

    async def officer(self, method: str, request):
        """The officer's call through the staff library (synchronous: run in a worker thread)."""
        return await asyncio.to_thread(self.staff.call, method, request)

    # ---- 1 ----------------------------------------------------------------------------------

    async def apply_from_the_phone(self) -> None:
        n, phone = self.n, self.phone
        n.step(1, "子育てワンストップ: the parent applies for 児童手当 from her phone")
        holder = self.card.holder
        n.say(f"{holder.name} holds her My Number Card to the phone and enters the PIN (sign-in, "
              f"利用者証明用電子証明書) — gateway {self.endpoints.gateway}")
        session = await phone.sign_in()
        self.resident_id = session["residentId"]
        me = await phone.me()
        n.check(bool(self.resident_id) and me.get("residentId") == self.resident_id,
                f"signed in as {self.resident_id} (a platform id, never a My Number)", me)

        found = await phone.search("児童手当")
        n.say("search 「児童手当」: " + "; ".join(p["title"] for p in found[:4]))
        claim = next((p for p in found if p["code"] == CHILD_ALLOWANCE), None)
        n.check(claim is not None, f"found 児童手当 認定請求 ({CHILD_ALLOWANCE}): {claim and claim['title']}")

        form = child_allowance_form(self.card)
        form["children"] = [{"name": CHILD_NAME, "name_kana": CHILD_KANA, "birth_date": CHILD_BORN,
                             "relationship": "child", "lives_with_claimant": True}]
        draft = await phone.create_draft(CHILD_ALLOWANCE, form)
        self.application_id = app_id = draft["applicationId"]
        n.say(f"filled the 認定請求 from the card's 署名用電子証明書 (claimant {holder.name}, child {CHILD_NAME}, "
              f"born {CHILD_BORN}): draft {app_id}")
        n.check(draft["status"] == "APPLICATION_STATUS_DRAFT", "the draft is saved", draft["status"])

        photo = jpeg_with_gps()
        n.check(bool(gps_of(photo)), f"photographed the 健康保険証 with the phone camera: a {len(photo):,}-byte "
                                     f"JPEG carrying its GPS position in EXIF")
        uploaded = (await phone.attach_photo(app_id, "health_insurance", photo))["attachment"]
        n.say(f"uploaded it to the slot health_insurance: stored as {uploaded['contentType']}, "
              f"{int(uploaded['size']):,} bytes, sha256 {uploaded['sha256'][:16]}…")

        submitted = await phone.submit(app_id)
        n.say("signed the canonical bytes of the application with the card's 署名用電子証明書 (password) "
              "and submitted")
        n.check(submitted["status"] == "APPLICATION_STATUS_SUBMITTED" and bool(submitted.get("submittedAt")),
                f"submitted, arrival (到達) recorded at {submitted.get('submittedAt')}", submitted["status"])
        download = await self._officer_download(app_id, uploaded["attachmentId"])
        n.check(download.startswith(b"\xff\xd8") and not _has_personal_metadata(download),
                "the photo the municipality receives is a JPEG without its location (GPS) or camera metadata")
        evidence = await phone.request("GET", f"/v1/applications/{app_id}/evidence")
        n.check(len(evidence.get("evidence", [])) == 1, "the signed submission is kept as evidence for audit",
                evidence)
        self.n.passed(1, f"児童手当 認定請求 {app_id} submitted from the phone, signed with the card")

    async def _officer_download(self, application_id: str, attachment_id: str) -> bytes:
        def fetch() -> bytes:
            chunks = self.staff.stub.DownloadAttachment(app_pb.DownloadAttachmentRequest(
                application_id=application_id, attachment_id=attachment_id), timeout=CALL_TIMEOUT)
            return b"".join(m.chunk for m in chunks if m.WhichOneof("part") == "chunk")

        return await asyncio.to_thread(fetch)

    # ---- 2 ----------------------------------------------------------------------------------

    async def correction_and_decision(self) -> None:
        n, phone, app_id = self.n, self.phone, self.application_id
        link = f"application/{app_id}"
        n.step(2, "補正: the officer asks for a correction, the parent answers, the officer approves")
        async with LiveNotices(phone) as live:
            n.say(f"the phone follows its notices live (SSE /v1/notices/stream from cursor {live.after})")
            n.say(f"千代田区 ({LG}) officer connects over mTLS with the municipality's certificate")
            queued = await self._in_queue(app_id)
            n.check(queued is not None, f"{app_id} is in the officer's queue of submitted applications")

            accepted = (await self.officer("AcceptApplication", app_pb.AcceptApplicationRequest(
                request_id=new_id("demo"), application_id=app_id, version=queued.version,
                note="書類到達を確認"))).application
            n.check(accepted.status == app_pb.APPLICATION_STATUS_ACCEPTED,
                    f"受理: accepted at {accepted.accepted_at.ToDatetime(tzinfo=timezone.utc).astimezone(JST):%Y-%m-%d %H:%M:%S} JST")
            notice = await live.next_notice(link)
            n.check("受理" in notice["title"], f"the phone got the notice live: 「{notice['title']}」")

            corrected = (await self.officer("RequestCorrection", app_pb.RequestCorrectionRequest(
                request_id=new_id("demo"), application_id=app_id, version=accepted.version,
                reasons=[app_pb.CorrectionReason(field_path="form.claimant.phone",
                                                 reason="日中に連絡のつく電話番号を記入してください")],
                message="電話番号の補正をお願いします"))).application
            n.check(corrected.status == app_pb.APPLICATION_STATUS_CORRECTION_REQUESTED,
                    "補正 requested on form.claimant.phone")
            notice = await live.next_notice(link)
            n.check("補正" in notice["title"] or "補正" in notice["body"],
                    f"the phone got the notice live: 「{notice['title']}」")

            def fix(form: dict, reasons: list[dict]) -> dict:
                n.say("the parent reads the reasons: " + "; ".join(
                    f"{r.get('fieldPath') or r.get('attachmentSlot')}: {r.get('reason')}" for r in reasons))
                if not any(r.get("fieldPath") == "form.claimant.phone" for r in reasons):
                    raise DemoFailure(f"the phone does not show the correction reason: {reasons}")
                form["claimant"]["phone"] = CORRECTED_PHONE
                return form

            resubmitted = await phone.answer_correction(app_id, fix)
            n.check(resubmitted["status"] == "APPLICATION_STATUS_RESUBMITTED",
                    f"corrected the phone number to {CORRECTED_PHONE}, re-signed with the card and resubmitted",
                    resubmitted["status"])

            shown = (await self.officer("GetApplication", app_pb.GetApplicationRequest(application_id=app_id))).application
            n.check(json.loads(shown.form_json)["claimant"]["phone"] == CORRECTED_PHONE,
                    "the officer sees the corrected form")
            accepted = (await self.officer("AcceptApplication", app_pb.AcceptApplicationRequest(
                request_id=new_id("demo"), application_id=app_id, version=shown.version))).application
            n.check(accepted.status == app_pb.APPLICATION_STATUS_ACCEPTED, "受理 of the corrected application")
            notice = await live.next_notice(link)
            n.check("受理" in notice["title"], f"the phone got the notice live: 「{notice['title']}」")
            decided = (await self.officer("DecideApplication", app_pb.DecideApplicationRequest(
                request_id=new_id("demo"), application_id=app_id, version=accepted.version,
                decision=app_pb.DECISION_APPROVED, result_text=RESULT_TEXT))).application
            n.check(decided.status == app_pb.APPLICATION_STATUS_DECIDED and decided.decision == app_pb.DECISION_APPROVED,
                    "decided: approved (認定)")
            notice = await live.next_notice(link)
            n.check("承認" in notice["body"] and RESULT_TEXT in notice["body"],
                    f"the phone got the notice live: 「{notice['title']}」: {notice['body']}", notice["body"])

        final = await phone.get(app_id)
        n.say(f"the parent opens the application: {final['status']}, {final['decision']}: {final['resultText']}")
        n.check(final["status"] == "APPLICATION_STATUS_DECIDED" and final["decision"] == "DECISION_APPROVED"
                and final["resultText"] == RESULT_TEXT, "the parent sees the decision on her phone", final["status"])
        actions = [h["action"] for h in final.get("history", [])]
        expected = ["submitted", "accepted", "correction_requested", "resubmitted", "accepted", "decided"]
        n.check(_in_order(expected, actions), "the history reads " + " → ".join(expected), actions)
        evidence = await phone.request("GET", f"/v1/applications/{app_id}/evidence")
        n.check(len(evidence.get("evidence", [])) == 2, "both signed submissions are kept as evidence",
                len(evidence.get("evidence", [])))
        n.passed(2, "補正 answered live, 児童手当 approved, the decision read on the phone")

    async def _in_queue(self, application_id: str) -> app_pb.Application | None:
        """The application in the officer's queue of submitted 認定請求 (oldest arrival first)."""
        token = ""
        for _ in range(20):
            page = await self.officer("ListApplications", app_pb.ListApplicationsRequest(
                status=app_pb.APPLICATION_STATUS_SUBMITTED, procedure_code=CHILD_ALLOWANCE, page_size=100,
                page_token=token))
            found = next((a for a in page.applications if a.application_id == application_id), None)
            token = page.next_page_token
            if found is not None or not token:
                return found
        return None

    # ---- 3 ----------------------------------------------------------------------------------

    async def kiosk_certificates(self) -> None:
        n = self.n
        n.step(3, "コンビニ交付: a convenience-store kiosk issues 住民票の写し and 印鑑登録証明書")
        today = _today_jst()
        if (today.month, today.day) >= (12, 29) or (today.month, today.day) <= (1, 3):
            raise DemoFailure("kiosk issuance is closed from 29 December to 3 January (the seed's rule); "
                              "the kiosk step cannot run today")
        registry = registry_pb2_grpc.RegistryServiceStub(self.municipality)
        issuance = issuance_pb2_grpc.IssuanceServiceStub(self.municipality)
        try:
            seal = (await registry.RegisterSeal(reg_pb.RegisterSealRequest(
                request_id=new_id("demo"), resident_id=self.resident_id, registration_number="0012345",
                registered_on=today.isoformat()), timeout=CALL_TIMEOUT)).registration
            n.say(f"千代田区 registers her seal (印鑑登録 no. {seal.registration_number}, {seal.registered_on}) "
                  "through RegistryService.RegisterSeal")
        except grpc.aio.AioRpcError as error:
            if _reason(error) != "SEAL_ALREADY_REGISTERED":
                raise
            n.say("her seal is already registered (印鑑登録) in 千代田区")

        restore = await self._open_kiosk_hours(issuance)
        try:
            await self._at_the_kiosk(issuance)
        finally:
            if restore is not None:
                await issuance.UpdateKioskSettings(iss_pb.UpdateKioskSettingsRequest(
                    request_id=new_id("demo"), settings=restore), timeout=CALL_TIMEOUT)
                n.say(f"千代田区's kiosk hours restored to {_hhmm(restore.open_minute)}–{_hhmm(restore.close_minute)}")
        n.passed(3, "住民票の写し and 印鑑登録証明書 issued at the kiosk, both verification codes genuine")

    async def _open_kiosk_hours(self, issuance) -> iss_pb.KioskSettings | None:
        """Kiosks serve 6:30–23:00 by default; when the demo runs outside those hours, the municipality
        opens its kiosks round the clock for the demo (and the demo puts the hours back afterwards)."""
        settings = (await issuance.GetKioskSettings(iss_pb.GetKioskSettingsRequest(municipality_code=LG),
                                                    timeout=CALL_TIMEOUT)).settings
        now = datetime.now(JST)
        minute = now.hour * 60 + now.minute
        self.n.say(f"千代田区 offers kiosk issuance {_hhmm(settings.open_minute)}–{_hhmm(settings.close_minute)} JST; "
                   f"now it is {now:%H:%M} JST")
        if settings.participating and settings.open_minute <= minute < settings.close_minute:
            return None
        original = copy.deepcopy(settings)
        settings.participating = True
        settings.open_minute, settings.close_minute = 0, 24 * 60
        await issuance.UpdateKioskSettings(iss_pb.UpdateKioskSettingsRequest(request_id=new_id("demo"),
                                                                           settings=settings), timeout=CALL_TIMEOUT)
        self.n.say("outside those hours: for the demo, 千代田区 opens its kiosks 00:00–24:00 (UpdateKioskSettings)")
        return original

    async def _at_the_kiosk(self, issuance) -> None:
        n = self.n
        month = _month_jst()
        before = await self._kiosk_settlement(issuance, month)
        channel = aio.secure_channel(self.endpoints.mtls_target, self.net.credentials(KIOSK))
        kiosk = Kiosk(KIOSK.id, [channel], printer=Printer())
        n.say(f"kiosk {KIOSK.id} (operator {KIOSK.attributes['operator']}, convenience store) opens its stream "
              "(IssuanceService.KioskSession, mTLS)")
        documents: list[iss_pb.Document] = []
        try:
            for certificate_type in (iss_pb.CERTIFICATE_TYPE_RESIDENT_RECORD, iss_pb.CERTIFICATE_TYPE_SEAL_REGISTRATION):
                label = CERTIFICATE_LABELS[certificate_type]
                n.say(f"{self.card.holder.name} places her card on the reader, enters the PIN, chooses {label} × 1 "
                      "and pays")
                result = await kiosk.transact(self.card, DEMO_PIN, iss_pb.Order(certificate_type=certificate_type,
                                                                                 copies=1))
                if not documents:
                    menu = next((r.menu for r in result.responses if r.WhichOneof("result") == "menu"), None)
                    if menu is not None:
                        n.say("the menu the kiosk showed her: " + ", ".join(
                            f"{CERTIFICATE_LABELS.get(i.certificate_type, i.certificate_type)} "
                            + (f"{i.fee_yen}円" if i.available else f"(not for her: {i.unavailable_reason})")
                            for i in menu.items))
                if result.refusal is not None:
                    raise DemoFailure(f"the kiosk refused the {label}: {result.refusal.reason} {result.refusal.message}")
                n.check(result.ok and result.resident_id == self.resident_id and len(result.printed) == 1,
                        f"{label} printed for the card holder ({result.resident_id})", result)
                doc = result.documents[0]
                n.check(doc.pdf.startswith(b"%PDF") and doc.subject_resident_id == self.resident_id
                        and doc.certificate_type == certificate_type and doc.municipality_code == LG,
                        f"{label}: serial {doc.serial}, verification code {doc.verification_code}, "
                        f"{len(doc.pdf):,}-byte PDF")
                n.check(result.receipt.total_yen == result.quote.total_yen == result.quote.fee_per_copy_yen
                        and result.receipt.copies_printed == 1,
                        f"receipt: {result.receipt.copies_printed} copy, {result.receipt.total_yen} yen")
                documents.append(doc)
        finally:
            await kiosk.close()
            await channel.close()

        anyone = issuance_pb2_grpc.IssuanceServiceStub(self.net.public())
        for doc in documents:
            verified = await anyone.VerifyCertificate(iss_pb.VerifyCertificateRequest(
                verification_code=doc.verification_code), timeout=CALL_TIMEOUT)
            n.check(verified.status == iss_pb.VERIFICATION_STATUS_GENUINE and verified.serial == doc.serial
                    and verified.certificate_type == doc.certificate_type and verified.municipality_code == LG,
                    f"IssuanceService.VerifyCertificate({doc.verification_code}): GENUINE, "
                    f"{CERTIFICATE_LABELS.get(verified.certificate_type)}, {verified.municipality_name}",
                    verified)
            public = await self.phone.client.get(f"/v1/certificates/{doc.verification_code}")
            body = public.json()
            n.check(public.status_code == 200 and body.get("status") == "VERIFICATION_STATUS_GENUINE"
                    and body.get("serial") == doc.serial,
                    f"GET /v1/certificates/{doc.verification_code} on the gateway (no sign-in): GENUINE", body)
        bogus = await self.phone.client.get("/v1/certificates/NOTAREALCODE")
        n.check(bogus.status_code == 200 and bogus.json().get("status") == "VERIFICATION_STATUS_UNKNOWN",
                "a made-up code is UNKNOWN", bogus.text[:200])

        after = await self._kiosk_settlement(issuance, month)
        operator = KIOSK.attributes["operator"]
        copies = after.get(operator, (0, 0))[0] - before.get(operator, (0, 0))[0]
        owed = after.get(operator, (0, 0))[1] - before.get(operator, (0, 0))[1]
        n.check(copies == 2 and owed == 2 * OPERATOR_FEE_YEN,
                f"this month's settlement counts the 2 copies for {operator}: {owed} yen owed (2 × 123)",
                (copies, owed))

    async def _kiosk_settlement(self, issuance, month: str) -> dict[str, tuple[int, int]]:
        reply = await issuance.GetSettlement(iss_pb.GetSettlementRequest(municipality_code=LG, month=month),
                                             timeout=CALL_TIMEOUT)
        return {line.operator: (line.copies, line.owed_to_operator_yen) for line in reply.lines}

    # ---- 4 ----------------------------------------------------------------------------------

    async def points(self) -> None:
        n = self.n
        n.step(4, "自治体ポイント: a card company converts points, the resident spends some at a shop")
        resident = points_pb2_grpc.PointsServiceStub(self.net.public())
        operator = points_pb2_grpc.PointsServiceStub(self.net.machine(MachineIdentity("operator", "ops", {})))
        partner = points_pb2_grpc.PointsServiceStub(self.net.machine(MachineIdentity("partner", PARTNER_ID, {})))
        staff = points_pb2_grpc.PointsServiceStub(self.municipality)

        try:
            mykey = (await resident.CreateMyKeyId(pts_pb.CreateMyKeyIdRequest(
                request_id=new_id("demo"), card=await self._present()), metadata=self.bearer,
                timeout=CALL_TIMEOUT)).mykey_id
            n.say("she creates her MyKey ID with the card (マイキープラットフォーム)")
        except grpc.aio.AioRpcError as error:
            if _reason(error) != "MYKEY_ID_EXISTS":
                raise
            mykey = (await resident.GetMyKeyId(pts_pb.GetMyKeyIdRequest(), metadata=self.bearer,
                                               timeout=CALL_TIMEOUT)).mykey_id
            n.say("she already has a MyKey ID")
        n.check(len(mykey) == 8 and mykey.isalnum(), f"MyKey ID {mykey}")
        bound = await resident.BindPartnerAccount(pts_pb.BindPartnerAccountRequest(
            request_id=new_id("demo"), card=await self._present(), partner_id=PARTNER_ID,
            member_account=MEMBER_ACCOUNT), metadata=self.bearer, timeout=CALL_TIMEOUT)
        n.check(bound.mykey_id == mykey, f"bound her {PARTNER_ID} member account {MEMBER_ACCOUNT} to it (fresh card signature)")

        rate = await operator.SetPartnerRate(pts_pb.SetPartnerRateRequest(
            request_id=new_id("demo"), partner_id=PARTNER_ID, rate_milli=RATE_MILLI), timeout=CALL_TIMEOUT)
        n.say(f"the platform operator sets {PARTNER_ID}'s rate: 1 card point = {rate.rate_milli / 1000} municipal points")
        converted = await partner.ConvertPartnerPoints(pts_pb.ConvertPartnerPointsRequest(
            request_id=new_id("demo"), member_account=MEMBER_ACCOUNT, partner_points=CARD_POINTS),
            timeout=CALL_TIMEOUT)
        expected = CARD_POINTS * RATE_MILLI // 1000
        n.check(converted.municipal_points == expected,
                f"{PARTNER_ID} converts {CARD_POINTS:,} card points → {converted.municipal_points:,} municipal points "
                f"(one way), held for her", converted.municipal_points)

        held = await resident.ListHeldConversions(pts_pb.ListHeldConversionsRequest(page_size=100),
                                                  metadata=self.bearer, timeout=CALL_TIMEOUT)
        n.check(any(c.conversion_id == converted.conversion_id for c in held.conversions),
                "the conversion waits in her holding account")
        before = await self._regular_balance(resident)
        placed = await resident.ChooseMunicipality(pts_pb.ChooseMunicipalityRequest(
            request_id=new_id("demo"), conversion_id=converted.conversion_id, municipality_code=LG),
            metadata=self.bearer, timeout=CALL_TIMEOUT)
        n.check(placed.balance == before + expected,
                f"she places them in 千代田区's points: balance {placed.balance:,}", placed.balance)

        merchants_before = await self._merchant_settlement(staff)
        shop_channel = self.net.sync_machine(SHOP)
        terminal = Terminal(shop_channel, CALL_TIMEOUT)
        try:
            n.say(f"at the shop {SHOP.id} ({SHOP.attributes['kind']}, 千代田区) she pays {SPEND} points with her card")

            def authorise() -> pts_pb.AuthorizeRedemptionResponse:
                return terminal.call("AuthorizeRedemption", pts_pb.AuthorizeRedemptionRequest(
                    request_id=new_id("demo"), card=terminal.present(self.card_path, DEMO_PIN),
                    municipality_code=LG, amount=SPEND))

            hold = await asyncio.to_thread(authorise)
            n.check(hold.available == placed.balance - SPEND,
                    f"authorise: hold {hold.hold_id} on {SPEND} points, {hold.available:,} still available",
                    hold.available)
            balances = await self._balance_row(resident)
            n.check(balances.held >= SPEND and balances.balance == placed.balance,
                    f"while held: balance {balances.balance:,}, held {balances.held:,}")
            captured = await asyncio.to_thread(terminal.call, "CaptureRedemption", pts_pb.CaptureRedemptionRequest(
                request_id=new_id("demo"), hold_id=hold.hold_id))
            n.check(captured.amount == SPEND, f"capture: {captured.amount} points move to the shop "
                                             f"(transfer {captured.transfer_id})", captured.amount)
        finally:
            shop_channel.close()
        after = await self._regular_balance(resident)
        n.check(after == placed.balance - SPEND, f"her 千代田区 points balance is now {after:,}", after)
        transfers = await resident.ListTransfers(pts_pb.ListTransfersRequest(page_size=500), metadata=self.bearer,
                                                 timeout=CALL_TIMEOUT)
        codes = [t.code for t in transfers.transfers]
        n.check("capture" in codes and "place" in codes, "her history lists the placement and the capture", codes)

        n.say(f"month-end ({_month_jst()}): settlements for 千代田区")
        merchants_after = await self._merchant_settlement(staff)
        for merchant, (owed, captures) in sorted(merchants_after.items()):
            n.say(f"   merchant {merchant:<24} owed {owed:>8,} yen  ({captures} capture(s))")
        owed_now = merchants_after.get(SHOP.id, (0, 0))[0] - merchants_before.get(SHOP.id, (0, 0))[0]
        n.check(owed_now == SPEND, f"千代田区 owes {SHOP.id} {SPEND} yen for this purchase (1 point = 1 yen)",
                owed_now)

        issuance = issuance_pb2_grpc.IssuanceServiceStub(self.municipality)
        settlement = await issuance.GetSettlement(iss_pb.GetSettlementRequest(municipality_code=LG,
                                                                              month=_month_jst()),
                                                  timeout=CALL_TIMEOUT)
        for line in settlement.lines:
            n.say(f"   kiosk operator {line.operator:<16} {line.copies:>4} copies × 123 = "
                  f"{line.owed_to_operator_yen:>8,} yen owed  (fees collected {line.fees_collected_yen:,} yen)")
        n.say(f"   total: {settlement.total_copies} copies, {settlement.total_owed_yen:,} yen owed to operators, "
              f"{settlement.total_fees_yen:,} yen collected")
        n.check(settlement.total_owed_yen == settlement.total_copies * OPERATOR_FEE_YEN
                and all(l.owed_to_operator_yen == l.copies * OPERATOR_FEE_YEN for l in settlement.lines)
                and settlement.total_copies >= 2,
                "kiosk settlement: every operator is owed copies × 123 yen")
        n.passed(4, f"{expected:,} points converted, {SPEND} spent in two steps, settlements printed")

    async def _present(self) -> pts_pb.CardPresentation:
        challenge = await self.auth.CreateChallenge(auth_pb2.CreateChallengeRequest(), timeout=CALL_TIMEOUT)
        return pts_pb.CardPresentation(challenge_id=challenge.challenge_id, certificate=self.card.auth_certificate_der,
                                       signature=self.card.sign_with_auth_key(challenge.nonce, DEMO_PIN))

    async def _balance_row(self, resident) -> pts_pb.Balance:
        reply = await resident.GetBalances(pts_pb.GetBalancesRequest(), metadata=self.bearer, timeout=CALL_TIMEOUT)
        for row in reply.balances:
            if row.kind == pts_pb.ACCOUNT_KIND_REGULAR and row.municipality_code == LG and not row.event_id:
                return row
        return pts_pb.Balance(kind=pts_pb.ACCOUNT_KIND_REGULAR, municipality_code=LG)

    async def _regular_balance(self, resident) -> int:
        return (await self._balance_row(resident)).balance

    async def _merchant_settlement(self, staff) -> dict[str, tuple[int, int]]:
        owed: dict[str, tuple[int, int]] = {}
        token = ""
        for _ in range(100):
            page = await staff.GetMerchantSettlement(pts_pb.GetMerchantSettlementRequest(
                municipality_code=LG, page_size=100, page_token=token), timeout=CALL_TIMEOUT)
            owed.update({m.merchant_id: (m.owed, m.captures) for m in page.merchants})
            token = page.next_page_token
            if not token:
                break
        return owed


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _in_order(expected: list[str], actual: list[str]) -> bool:
    """`expected` appears in `actual` as a subsequence."""
    it = iter(actual)
    return all(any(a == e for a in it) for e in expected)


STEPS: list[tuple[int, Callable[[Story], Awaitable[None]]]] = [
    (1, Story.apply_from_the_phone),
    (2, Story.correction_and_decision),
    (3, Story.kiosk_certificates),
    (4, Story.points),
]


async def play(endpoints: Endpoints, narrator: Narrator | None = None) -> int:
    """Play every step in order; the first failure stops the story. Returns the process exit status."""
    narrator = narrator or Narrator()
    try:
        story = Story(endpoints, narrator)
    except Exception as error:  # noqa: BLE001 — e.g. no demo card in the PKI directory
        narrator.echo(f"✗ Setup FAILED: {explain(error)}")
        return 1
    try:
        for number, step in STEPS:
            try:
                await step(story)
            except Exception as error:  # noqa: BLE001 — any failure is reported, then the demo exits 1
                narrator.echo("")
                narrator.echo(f"✗ Step {number} FAILED: {explain(error)}")
                return 1
    finally:
        await story.close()
    narrator.echo("")
    narrator.echo(f"All {len(STEPS)} steps passed ({narrator.checks} checks).")
    return 0
