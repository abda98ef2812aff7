"""Applications through the gateway: the whole story, uploads (413/415/cut off), isolation, retries."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from onestop.application.v1 import application_pb2 as apb
from onestop.application.v1 import application_pb2_grpc as apb_grpc

from gateway.app import create_app
from mobile_stub.app import CHILD_ALLOWANCE, GatewayCallError, child_allowance_form
from mobile_stub.photos import gps_of, jpeg_with_gps
from server.ids import new_id
from server.testing import holder
from tests.gateway.conftest import add_resident

MiB = 1024 * 1024
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def stored_files(platform) -> list:
    root = platform.settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def nothing_left(platform, *, rounds: int = 500) -> list:
    """The files under the blob store once a cancelled upload has been cleaned up (bounded wait).

    A cancelled call ends for the gateway before the server has removed its temporary file; what
    matters is that nothing remains. Returns the files still there at the end (expected: none)."""
    for _ in range(rounds):
        files = stored_files(platform)
        if not files:
            return files
        await asyncio.sleep(0.01)
    return stored_files(platform)


async def attachment_rows(platform) -> int:
    async with platform.db.read() as tx:
        row = await tx.one("SELECT COUNT(*) AS n FROM application_attachments")
    return row["n"]


async def quiet(app, *, rounds: int = 1000) -> None:
    """Until the gateway has finished every request it was handling (bounded)."""
    for _ in range(rounds):
        if app.state.stats.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gateway still busy: {app.state.stats.in_flight} request(s)")


@pytest.fixture
async def draft(platform, gateway, resident):
    _, card = resident
    phone = gateway.phone(card)
    await phone.sign_in()
    application = await phone.create_child_allowance_claim()
    yield phone, application
    await phone.client.aclose()


async def test_the_whole_story_phone_gateway_server_staff_phone(platform, served, resident):
    """Over real sockets: search, draft, GPS photo, sign, submit; staff accept and ask a 補正; the
    phone answers it; staff decide; the phone reads the decision. The stored photo has no GPS."""
    resident_id, card = resident
    staff = apb_grpc.ApplicationServiceStub(platform.municipality("131016"))
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        found = await phone.search("児童手当")
        assert CHILD_ALLOWANCE in [p["code"] for p in found]
        application = await phone.create_child_allowance_claim()
        app_id = application["applicationId"]
        assert application["status"] == "APPLICATION_STATUS_DRAFT"
        photo = jpeg_with_gps()
        assert gps_of(photo), "the phone's photo must carry GPS to prove it is removed"
        uploaded = await phone.attach_photo(app_id, "health_insurance", photo)
        sha = uploaded["attachment"]["sha256"]
        submitted = await phone.submit(app_id)
        assert submitted["status"] == "APPLICATION_STATUS_SUBMITTED"

        queue = await staff.ListApplications(apb.ListApplicationsRequest(page_size=10))
        assert [a.application_id for a in queue.applications] == [app_id]
        current = (await staff.GetApplication(apb.GetApplicationRequest(application_id=app_id))).application
        accepted = await staff.AcceptApplication(apb.AcceptApplicationRequest(
            request_id=new_id("rq"), application_id=app_id, version=current.version))
        corrected = await staff.RequestCorrection(apb.RequestCorrectionRequest(
            request_id=new_id("rq"), application_id=app_id, version=accepted.application.version,
            reasons=[apb.CorrectionReason(field_path="form.claimant.phone", reason="つながりません")]))
        assert corrected.application.status == apb.APPLICATION_STATUS_CORRECTION_REQUESTED

        seen = await phone.poll_status(app_id, {"APPLICATION_STATUS_CORRECTION_REQUESTED"}, attempts=1)
        assert seen["corrections"][0]["fieldPath"] == "form.claimant.phone"

        def fix(form, reasons):
            assert [r["fieldPath"] for r in reasons] == ["form.claimant.phone"]
            form["claimant"]["phone"] = "03-9876-5432"
            return form

        resubmitted = await phone.answer_correction(app_id, fix)
        assert resubmitted["status"] == "APPLICATION_STATUS_RESUBMITTED"

        current = (await staff.GetApplication(apb.GetApplicationRequest(application_id=app_id))).application
        assert json.loads(current.form_json)["claimant"]["phone"] == "03-9876-5432"
        accepted = await staff.AcceptApplication(apb.AcceptApplicationRequest(
            request_id=new_id("rq"), application_id=app_id, version=current.version))
        await staff.DecideApplication(apb.DecideApplicationRequest(
            request_id=new_id("rq"), application_id=app_id, version=accepted.application.version,
            decision=apb.DECISION_APPROVED, result_text="月額15,000円"))
        final = await phone.poll_status(app_id, {"APPLICATION_STATUS_DECIDED"}, attempts=1)
        assert final["decision"] == "DECISION_APPROVED"
        assert final["resultText"] == "月額15,000円"
        actions = [h["action"] for h in final["history"]]
        assert actions[:1] == ["created"] and actions[-1] == "decided" and "resubmitted" in actions
        evidence = await phone.request("GET", f"/v1/applications/{app_id}/evidence")
        assert len(evidence["evidence"]) == 2
    stored = [p for p in stored_files(platform) if p.name == sha]
    assert len(stored) == 1
    assert gps_of(stored[0].read_bytes()) == {}
    await served.client.aclose()


async def test_an_11_mib_upload_is_413_before_reading_and_nothing_is_stored(platform, gateway, draft):
    phone, application = draft
    big = b"\xff\xd8\xff" + b"\0" * (11 * MiB)
    with pytest.raises(GatewayCallError) as refused:
        await phone.attach(application["applicationId"], "health_insurance", big)
    assert refused.value.status_code == 413
    assert refused.value.reason == "PAYLOAD_TOO_LARGE"
    assert stored_files(platform) == []
    assert await attachment_rows(platform) == 0


async def test_an_11_mib_body_without_a_length_is_cut_at_the_limit_and_nothing_is_stored(platform, gateway, draft):
    """Chunked transfer: the gateway has already started the gRPC stream when the body outgrows the
    limit; it must cancel that call, not half-close it."""
    phone, application = draft
    boundary = "gwtestboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"slot\"\r\n\r\nhealth_insurance\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{11 * MiB}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    sent = {"bytes": 0}

    async def body():
        yield head
        chunk = b"\xff\xd8\xff" + b"\0" * (256 * 1024 - 3)
        for _ in range(44):  # 11 MiB
            sent["bytes"] += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    reply = await phone.client.post(f"/v1/applications/{application['applicationId']}/attachments",
                                    content=body(), headers={**phone._headers(),
                                                             "content-type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status_code == 413
    # The server's per-file limit (10 MiB) or the gateway's (10 MiB + multipart room), whichever first.
    assert reply.json()["details"][0]["reason"] in ("ATTACHMENT_TOO_LARGE", "PAYLOAD_TOO_LARGE")
    assert await nothing_left(platform) == []
    assert await attachment_rows(platform) == 0
    fresh = await phone.get(application["applicationId"])
    assert fresh["attachments"] == []


async def test_a_pdf_declared_as_jpeg_is_415_and_nothing_is_stored(platform, gateway, draft):
    phone, application = draft
    with pytest.raises(GatewayCallError) as refused:
        await phone.attach(application["applicationId"], "health_insurance", PDF, filename="scan.jpg",
                           content_type="image/jpeg")
    assert refused.value.status_code == 415
    assert refused.value.reason == "CONTENT_TYPE_MISMATCH"
    assert "metadata.declared_content_type" in refused.value.fields
    assert stored_files(platform) == []
    assert await attachment_rows(platform) == 0


async def test_a_photo_arrives_with_every_pixel_and_without_gps(platform, gateway, draft):
    """Lossless: the stored photo decodes to exactly the pixels the phone sent, minus the metadata."""
    import io

    from PIL import Image

    phone, application = draft
    photo = jpeg_with_gps(320, 240, noise=True)
    uploaded = await phone.attach_photo(application["applicationId"], "health_insurance", photo)
    stored = [p for p in stored_files(platform) if p.name == uploaded["attachment"]["sha256"]]
    assert len(stored) == 1 and uploaded["attachment"]["contentType"] == "image/jpeg"
    data = stored[0].read_bytes()
    assert gps_of(data) == {} and b"OnestopPhone" not in data and b"Exif" not in data
    with Image.open(io.BytesIO(data)) as kept, Image.open(io.BytesIO(photo)) as sent:
        assert kept.size == sent.size and kept.tobytes() == sent.tobytes()


async def test_a_pdf_is_stored_without_its_metadata(platform, gateway, draft):
    from pypdf import PdfReader

    from tests.application.support import PDF_AUTHOR, pdf_bytes

    phone, application = draft
    uploaded = await phone.attach(application["applicationId"], "health_insurance", pdf_bytes(metadata=True),
                                  filename="scan.pdf", content_type="application/pdf")
    assert uploaded["attachment"]["contentType"] == "application/pdf"
    stored = [p for p in stored_files(platform) if p.name == uploaded["attachment"]["sha256"]]
    assert len(stored) == 1
    assert b"YAMADA" not in stored[0].read_bytes() and b"xmpmeta" not in stored[0].read_bytes()
    with PdfReader(stored[0]) as pdf:
        assert not pdf.metadata and pdf.xmp_metadata is None and len(pdf.pages) == 1
    assert PDF_AUTHOR.encode() not in stored[0].read_bytes()


async def test_a_malformed_pdf_is_400_naming_the_field_and_nothing_is_stored(platform, gateway, draft):
    phone, application = draft
    with pytest.raises(GatewayCallError) as refused:
        await phone.attach(application["applicationId"], "health_insurance", PDF, filename="scan.pdf",
                           content_type="application/pdf")
    assert refused.value.status_code == 400
    assert refused.value.reason == "PDF_UNREADABLE"
    assert refused.value.fields == ["chunk"]
    assert stored_files(platform) == []
    assert await attachment_rows(platform) == 0


async def test_a_request_that_is_not_multipart_is_415(gateway, draft):
    phone, application = draft
    reply = await phone.client.post(f"/v1/applications/{application['applicationId']}/attachments",
                                    content=jpeg_with_gps(), headers={**phone._headers(), "content-type": "image/jpeg"})
    assert reply.status_code == 415
    assert reply.json()["details"][0]["reason"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_upload_form_fields_are_checked_by_name(gateway, draft):
    phone, application = draft
    path = f"/v1/applications/{application['applicationId']}/attachments"
    no_size = await phone.client.post(path, data={"slot": "health_insurance"},
                                      files={"file": ("a.jpg", jpeg_with_gps(), "image/jpeg")}, headers=phone._headers())
    assert no_size.status_code == 422
    assert [v["field"] for v in no_size.json()["details"][1]["fieldViolations"]] == ["size"]
    no_file = await phone.client.post(path, data={"slot": "health_insurance", "size": "10"},
                                      files={"other": ("", b"", "text/plain")}, headers=phone._headers())
    assert no_file.status_code == 422
    wrong_slot = await phone.client.post(path, data={"slot": "nope", "size": str(len(PDF))},
                                         files={"file": ("a.pdf", PDF, "application/pdf")}, headers=phone._headers())
    assert wrong_slot.status_code == 400
    assert "metadata.slot" in [v["field"] for d in wrong_slot.json()["details"] for v in d.get("fieldViolations", [])]


async def test_a_connection_cut_mid_upload_leaves_nothing(platform, served, resident):
    """A raw socket sends the headers and half the body, then closes: nothing may be stored."""
    _, card = resident
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        application = await phone.create_child_allowance_claim()
        photo = jpeg_with_gps(1600, 1200, noise=True)
        boundary = "cutboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"slot\"\r\n\r\nhealth_insurance\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{len(photo)}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
        host, port = served.base_url.removeprefix("http://").split(":")
        head = (f"POST /v1/applications/{application['applicationId']}/attachments HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {phone.session['accessToken']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        # Let the gateway start forwarding (bounded): it is busy with the upload until we cut it.
        for _ in range(500):
            if served.app.state.stats.in_flight:
                break
            await asyncio.sleep(0.01)
        assert served.app.state.stats.in_flight == 1, "the gateway never started on the upload"
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()
        await quiet(served.app)
        assert await nothing_left(platform) == []
        assert await attachment_rows(platform) == 0
        assert (await phone.get(application["applicationId"]))["attachments"] == []
        # And the same body, whole, is accepted: the cut was the only reason.
        reply = await phone.attach(application["applicationId"], "health_insurance", photo)
        assert reply["attachment"]["sha256"]
    await served.client.aclose()


async def test_resident_b_can_neither_read_nor_change_a_application(platform, gateway, draft):
    phone_a, application = draft
    app_id = application["applicationId"]
    _, card_b = await add_resident(platform, holder("佐藤 一郎", sex="1"))
    async with gateway.phone(card_b) as phone_b:
        await phone_b.sign_in()
        attempts = [
            phone_b.get(app_id),
            phone_b.update(app_id, int(application["version"]), child_allowance_form(card_b)),
            phone_b.attach_photo(app_id),
            phone_b.withdraw(app_id, int(application["version"])),
            phone_b.request("POST", f"/v1/applications/{app_id}/prepare-submission", json_body={}),
        ]
        for attempt in attempts:
            with pytest.raises(GatewayCallError) as refused:
                await attempt
            assert refused.value.status_code == 404
            assert refused.value.reason == "APPLICATION_NOT_FOUND"
        assert (await phone_b.list()).get("applications", []) == []
    unchanged = await phone_a.get(app_id)
    assert unchanged["version"] == application["version"]
    assert unchanged["attachments"] == []


async def test_without_a_token_applications_are_401(gateway, draft):
    _, application = draft
    reply = await gateway.client.get(f"/v1/applications/{application['applicationId']}")
    assert reply.status_code == 401
    assert reply.json()["code"] == 16
    assert reply.json()["details"][0]["reason"] == "AUTHENTICATION_REQUIRED"
    forged = await gateway.client.get(f"/v1/applications/{application['applicationId']}",
                                      headers={"authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    assert forged.json()["details"][0]["reason"] == "TOKEN_INVALID"


async def test_the_gateway_cancels_the_grpc_stream_when_the_body_outgrows_its_limit(platform, draft):
    """A gateway with a 1 MiB upload limit in front of a server that allows 10 MiB: the gRPC stream
    is already open and fed when the body passes the gateway's limit; the call is cancelled (not
    half-closed), so the server stores nothing, and the phone gets the gateway's 413."""
    phone, application = draft
    settings = platform.settings.model_copy(update={"attachment_max_bytes": MiB})
    small = create_app(settings, grpc_target=platform.server.target(machine=True))
    photo = jpeg_with_gps(1600, 1200, noise=True) * 2  # > 1 MiB; a valid JPEG head, then more bytes
    assert len(photo) > 2 * MiB

    async def body():
        boundary = "limitboundary"
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"slot\"\r\n\r\nhealth_insurance\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{len(photo)}\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode()
        for start in range(0, len(photo), 64 * 1024):
            yield photo[start:start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    async with small.router.lifespan_context(small):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small), base_url="http://gw") as client:
            reply = await client.post(f"/v1/applications/{application['applicationId']}/attachments",
                                      content=body(), headers={**phone._headers(),
                                                               "content-type": "multipart/form-data; boundary=limitboundary"})
    assert reply.status_code == 413
    assert reply.json()["details"][0]["reason"] == "PAYLOAD_TOO_LARGE"
    assert await nothing_left(platform) == []
    assert await attachment_rows(platform) == 0


async def test_a_retried_create_with_the_same_idempotency_key_returns_the_first_draft(platform, gateway, resident):
    _, card = resident
    async with gateway.phone(card) as phone:
        await phone.sign_in()
        body = {"procedureCode": CHILD_ALLOWANCE, "formJson": json.dumps(child_allowance_form(card))}
        key = {"idempotency-key": "draft-once-1"}
        first, second = await asyncio.gather(
            phone.request("POST", "/v1/applications", json_body=body, headers=key),
            phone.request("POST", "/v1/applications", json_body=body, headers=key),
        )
        third = await phone.request("POST", "/v1/applications", json_body=body, headers=key)
        listed = await phone.list()
    ids = {r["application"]["applicationId"] for r in (first, second, third)}
    assert len(ids) == 1
    assert [a["applicationId"] for a in listed["applications"]] == list(ids)


async def test_a_bad_form_names_the_field_and_a_stale_version_is_409(gateway, draft):
    phone, application = draft
    form = child_allowance_form(phone.card)
    form["children"][0]["birth_date"] = "2026-02-30"
    with pytest.raises(GatewayCallError) as refused:
        await phone.update(application["applicationId"], int(application["version"]), form)
    assert refused.value.status_code == 400
    assert refused.value.reason == "FORM_INVALID"
    assert "form.children[0].birth_date" in refused.value.fields
    await phone.update(application["applicationId"], int(application["version"]), child_allowance_form(phone.card))
    with pytest.raises(GatewayCallError) as stale:
        await phone.update(application["applicationId"], int(application["version"]), child_allowance_form(phone.card))
    assert stale.value.status_code == 409
    assert stale.value.reason == "VERSION_CONFLICT"


async def test_a_signature_over_changed_bytes_is_refused(gateway, draft):
    phone, application = draft
    app_id = application["applicationId"]
    await phone.attach_photo(app_id)
    import base64

    prepared = await phone.request("POST", f"/v1/applications/{app_id}/prepare-submission", json_body={})
    signature = phone.card.sign_with_signature_key(base64.b64decode(prepared["canonicalBytes"]), "ABC123")
    current = await phone.get(app_id)
    form = json.loads(current["formJson"])
    form["claimant"]["phone"] = "03-0000-0000"
    await phone.update(app_id, int(current["version"]), form)
    with pytest.raises(GatewayCallError) as refused:
        await phone.request("POST", f"/v1/applications/{app_id}/submit", json_body={
            "signature": base64.b64encode(signature).decode(),
            "signatureCertificate": base64.b64encode(phone.card.sign_certificate_der).decode()})
    assert refused.value.status_code == 400
    assert refused.value.reason == "SIGNATURE_MISMATCH"
    assert (await phone.get(app_id))["status"] == "APPLICATION_STATUS_DRAFT"


async def test_procedure_search_filters_and_pages(gateway):
    first = await gateway.client.get("/v1/procedures", params={"category": "PROCEDURE_CATEGORY_CHILD_ALLOWANCE",
                                                               "pageSize": 2})
    assert first.status_code == 200
    page = first.json()
    assert len(page["procedures"]) == 2 and page["nextPageToken"]
    assert {p["category"] for p in page["procedures"]} == {"PROCEDURE_CATEGORY_CHILD_ALLOWANCE"}
    second = await gateway.client.get("/v1/procedures", params={"category": "PROCEDURE_CATEGORY_CHILD_ALLOWANCE",
                                                                "pageSize": 2, "pageToken": page["nextPageToken"]})
    assert not {p["code"] for p in second.json()["procedures"]} & {p["code"] for p in page["procedures"]}
    bad = await gateway.client.get("/v1/procedures", params={"pageSize": "many"})
    assert bad.status_code == 400
    assert bad.json()["details"][1]["fieldViolations"][0]["field"] == "pageSize"
    unknown = await gateway.client.get("/v1/procedures", params={"colour": "blue"})
    assert unknown.status_code == 400
    one = await gateway.client.get(f"/v1/procedures/{CHILD_ALLOWANCE}")
    assert one.status_code == 200
    assert {s["slot"] for s in one.json()["procedure"]["attachmentSlots"]} >= {"health_insurance"}
    missing = await gateway.client.get("/v1/procedures/nothing.here")
    assert missing.status_code == 404


async def test_a_declared_length_over_the_limit_is_refused_without_waiting_for_the_body(platform, served, resident):
    """Only the headers are sent: the 413 comes back at once, no byte of the body is awaited."""
    _, card = resident
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        application = await phone.create_child_allowance_claim()
        host, port = served.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST /v1/applications/{application['applicationId']}/attachments HTTP/1.1\r\n"
                      f"Host: {host}\r\nAuthorization: Bearer {phone.session['accessToken']}\r\n"
                      f"X-Request-Id: too-big-1\r\n"
                      f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {11 * MiB}\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        writer.close()
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b"x-request-id: too-big-1" in head.lower()
        assert stored_files(platform) == []
    await served.client.aclose()


async def test_a_retried_upload_with_the_same_key_stores_one_attachment(platform, gateway, draft):
    phone, application = draft
    photo = jpeg_with_gps()
    path = f"/v1/applications/{application['applicationId']}/attachments"
    replies = []
    for _ in range(2):
        replies.append(await phone.client.post(path, data={"slot": "health_insurance", "size": str(len(photo))},
                                               files={"file": ("p.jpg", photo, "image/jpeg")},
                                               headers={**phone._headers(), "idempotency-key": "upload-once"}))
    assert [r.status_code for r in replies] == [201, 201]
    assert replies[0].json()["attachment"]["attachmentId"] == replies[1].json()["attachment"]["attachmentId"]
    assert len((await phone.get(application["applicationId"]))["attachments"]) == 1
    assert await attachment_rows(platform) == 1
