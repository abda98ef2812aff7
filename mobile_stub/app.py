"""A scripted smartphone app: a software My Number Card, httpx, and the gateway's JSON routes.

    async with MobileApp("http://127.0.0.1:8080", card, pin="1234", password="ABC123") as phone:
        await phone.sign_in()
        procedure = (await phone.search("児童手当"))[0]
        application = await phone.create_child_allowance_claim()
        await phone.attach_photo(application["applicationId"], "health_insurance")
        await phone.submit(application["applicationId"])

Every step goes through the gateway exactly as a phone's would: JSON (protobuf JSON mapping:
lowerCamelCase, bytes as base64), multipart for photos, `Authorization: Bearer` after sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from clients.pki import SoftwareCard
from mobile_stub.photos import jpeg_with_gps

CHILD_ALLOWANCE = "child_allowance.certification"


class GatewayCallError(Exception):
    """A refusal from the gateway: the HTTP status and the google.rpc.Status JSON body."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(f"HTTP {status_code} {self.reason}: {body.get('message', '')}")

    @property
    def reason(self) -> str:
        return next((d.get("reason", "") for d in self.body.get("details", []) if "reason" in d), "")

    @property
    def fields(self) -> list[str]:
        return [v["field"] for d in self.body.get("details", []) for v in d.get("fieldViolations", [])]


def child_allowance_form(card: SoftwareCard, *, children: int = 1) -> dict[str, Any]:
    """児童手当 認定請求: the claimant from the card's signature certificate, a newborn, an account."""
    holder = card.holder
    claimant = {
        "name": holder.name if holder else "山田 花子",
        "name_kana": "ヤマダ ハナコ",
        "birth_date": (holder.birth_date.isoformat() if holder else "1990-04-10"),
        "address": holder.address if holder else "東京都千代田区千代田1-1",
        "phone": "03-1234-5678",
        "pension": "employees",
        "civil_servant": False,
    }
    kids = [{"name": f"山田 {name}", "name_kana": f"ヤマダ {kana}", "birth_date": born, "relationship": "child",
             "lives_with_claimant": True}
            for name, kana, born in [("太郎", "タロウ", "2026-10-01"), ("次郎", "ジロウ", "2024-05-05")][:children]]
    return {
        "claimant": claimant,
        "children": kids,
        "payment_account": {"bank_code": "0001", "branch_code": "001", "account_type": "ordinary",
                            "account_number": "1234567", "holder_kana": "ヤマダ ハナコ"},
    }


class MobileApp:
    """One phone with one card. `say` is told each step (the CLI prints them)."""

    def __init__(self, base_url: str, card: SoftwareCard, pin: str, password: str, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 60.0,
                 say: Callable[[str], None] | None = None) -> None:
        self.card = card
        self._pin = pin
        self._password = password
        self.client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)
        self.session: dict[str, Any] = {}
        self.say = say or (lambda line: None)
        self.last_request_id = ""

    async def __aenter__(self) -> "MobileApp":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    # ---- plumbing ---------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.session.get("accessToken"):
            headers["authorization"] = f"Bearer {self.session['accessToken']}"
        return headers

    async def request(self, method: str, path: str, *, json_body: dict | None = None,
                      params: dict | None = None, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, json=json_body, params=params,
                                             headers=self._headers(headers), **kwargs)
        self.last_request_id = response.headers.get("x-request-id", "")
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            raise GatewayCallError(response.status_code, body)
        return body

    # ---- sign-in ----------------------------------------------------------------------------

    async def sign_in(self) -> dict[str, Any]:
        """Challenge -> the card signs the nonce with its authentication key (PIN) -> session."""
        challenge = await self.request("POST", "/v1/auth/challenge", json_body={})
        nonce = base64.b64decode(challenge["nonce"])
        signature = self.card.sign_with_auth_key(nonce, self._pin)
        reply = await self.request("POST", "/v1/auth/sign-in", json_body={
            "challengeId": challenge["challengeId"],
            "certificate": base64.b64encode(self.card.auth_certificate_der).decode(),
            "signature": base64.b64encode(signature).decode(),
        })
        self.session = reply["session"]
        self.say(f"signed in as {self.session['residentId']}")
        return self.session

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/me")

    async def sign_out(self) -> None:
        await self.request("POST", "/v1/auth/sign-out", json_body={})
        self.session = {}
        self.say("signed out")

    # ---- procedures and applications ----------------------------------------------------------

    async def search(self, keyword: str = "", **filters: Any) -> list[dict[str, Any]]:
        params = {"keyword": keyword, **filters} if keyword else dict(filters)
        reply = await self.request("GET", "/v1/procedures", params=params)
        found = reply.get("procedures", [])
        self.say(f"search {keyword!r}: {len(found)} procedure(s)"
                 + (f", first: {found[0]['title']}" if found else ""))
        return found

    async def create_draft(self, procedure_code: str, form: dict[str, Any]) -> dict[str, Any]:
        reply = await self.request("POST", "/v1/applications", json_body={
            "procedureCode": procedure_code, "formJson": json.dumps(form, ensure_ascii=False)})
        application = reply["application"]
        self.say(f"draft {application['applicationId']} for {procedure_code}")
        return application

    async def create_child_allowance_claim(self, form: dict[str, Any] | None = None) -> dict[str, Any]:
        """児童手当 認定請求, filled from the card holder."""
        return await self.create_draft(CHILD_ALLOWANCE, form or child_allowance_form(self.card))

    async def update(self, application_id: str, version: int, form: dict[str, Any]) -> dict[str, Any]:
        reply = await self.request("PATCH", f"/v1/applications/{application_id}", json_body={
            "version": str(version), "formJson": json.dumps(form, ensure_ascii=False)})
        self.say(f"updated {application_id} -> version {reply['application']['version']}")
        return reply["application"]

    async def get(self, application_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v1/applications/{application_id}"))["application"]

    async def list(self, **params: Any) -> dict[str, Any]:
        return await self.request("GET", "/v1/applications", params=params)

    async def attach(self, application_id: str, slot: str, data: bytes, *, filename: str = "photo.jpg",
                     content_type: str = "image/jpeg") -> dict[str, Any]:
        reply = await self.request(
            "POST", f"/v1/applications/{application_id}/attachments",
            data={"slot": slot, "size": str(len(data))},
            files={"file": (filename, data, content_type)},
        )
        self.say(f"attached {filename} ({len(data)} bytes) to {slot}: stored as "
                 f"{reply['attachment']['contentType']}, {reply['attachment']['size']} bytes")
        return reply

    async def attach_photo(self, application_id: str, slot: str = "health_insurance",
                           photo: bytes | None = None) -> dict[str, Any]:
        """Photograph a document (a real JPEG with GPS EXIF) and upload it."""
        return await self.attach(application_id, slot, photo or jpeg_with_gps())

    async def submit(self, application_id: str, *, resubmit: bool = False) -> dict[str, Any]:
        """Prepare -> the card signs the canonical bytes with its signature key (password) -> submit."""
        prepared = await self.request("POST", f"/v1/applications/{application_id}/prepare-submission",
                                      json_body={})
        canonical = base64.b64decode(prepared["canonicalBytes"])
        signature = self.card.sign_with_signature_key(canonical, self._password)
        action = "resubmit" if resubmit else "submit"
        reply = await self.request("POST", f"/v1/applications/{application_id}/{action}", json_body={
            "signature": base64.b64encode(signature).decode(),
            "signatureCertificate": base64.b64encode(self.card.sign_certificate_der).decode(),
        })
        self.say(f"{action}ted {application_id}: {reply['application']['status']}")
        return reply["application"]

    async def status(self, application_id: str) -> str:
        application = await self.get(application_id)
        self.say(f"status of {application_id}: {application['status']}")
        return application["status"]

    async def poll_status(self, application_id: str, until: set[str], *, attempts: int = 10,
                          wait: Callable[[], Any] | None = None) -> dict[str, Any]:
        """Read the application until its status is one of `until` (bounded; `wait` between reads)."""
        for _ in range(attempts):
            application = await self.get(application_id)
            if application["status"] in until:
                self.say(f"status of {application_id}: {application['status']}")
                return application
            if wait is not None:
                await wait()
        raise TimeoutError(f"{application_id} did not reach {sorted(until)} in {attempts} reads")

    async def answer_correction(self, application_id: str, fix: Callable[[dict[str, Any], list[dict]], dict]
                                ) -> dict[str, Any]:
        """Read the 補正 reasons, let `fix(form, reasons)` return the corrected form, save, re-sign, resubmit."""
        application = await self.get(application_id)
        reasons = application.get("corrections", [])
        self.say("correction requested: " + "; ".join(
            f"{r.get('fieldPath') or r.get('attachmentSlot')}: {r.get('reason')}" for r in reasons))
        form = fix(json.loads(application["formJson"] or "{}"), reasons)
        updated = await self.update(application_id, int(application["version"]), form)
        return await self.submit(updated["applicationId"], resubmit=True)

    async def notices(self, **params: Any) -> dict[str, Any]:
        """The inbox (newest first) with unreadCount and latestCursor."""
        return await self.request("GET", "/v1/notices", params=params)

    async def follow_notices(self, count: int, *, after: int | str | None = None,
                             timeout: float = 60.0) -> AsyncIterator[dict[str, Any]]:
        """Live notices from the SSE stream, resuming after cursor `after` (Last-Event-ID); stops
        after `count` notices (bounded: each wait is at most `timeout` seconds)."""
        headers = self._headers({"last-event-id": str(after)} if after is not None else None)
        async with self.client.stream("GET", "/v1/notices/stream", headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise GatewayCallError(response.status_code, response.json())
            lines = response.aiter_lines()
            received, event = 0, {}
            while received < count:
                line = await asyncio.wait_for(lines.__anext__(), timeout)
                if line == "":
                    if event.get("event") == "notice":
                        notice = json.loads(event["data"])
                        self.say(f"notice {event.get('id')}: {notice['title']}")
                        received += 1
                        yield notice
                    elif event.get("event") == "error":
                        raise GatewayCallError(500, json.loads(event["data"]))
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    event[key] = value.removeprefix(" ")

    async def withdraw(self, application_id: str, version: int, reason: str = "") -> dict[str, Any]:
        reply = await self.request("POST", f"/v1/applications/{application_id}/withdraw",
                                   json_body={"version": str(version), "reason": reason})
        self.say(f"withdrew {application_id}")
        return reply["application"]
