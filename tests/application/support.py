"""Helpers for the application tests: a signed-in resident, forms that pass, uploads, signing."""

from __future__ import annotations

import asyncio
import functools
import io
import json
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc
from PIL import Image

from server.ids import new_id
from server.testing import PASSWORD, bearer, holder

LG = "131016"          # 千代田区
OTHER_LG = "271004"    # 大阪市
CERT = "child_allowance.certification"


def child_allowance_form(**overrides) -> dict:
    form = {
        "claimant": {"name": "山田 花子", "name_kana": "ヤマダ ハナコ", "birth_date": "1990-04-10",
                     "address": "東京都千代田区千代田1-1", "phone": "03-1234-5678", "pension": "employees",
                     "civil_servant": False},
        "children": [
            {"name": "山田 太郎", "name_kana": "ヤマダ タロウ", "birth_date": "2020-05-01", "relationship": "child",
             "lives_with_claimant": True},
            {"name": "山田 次郎", "birth_date": "2023-08-15", "relationship": "child", "lives_with_claimant": True},
        ],
        "payment_account": {"bank_code": "0001", "branch_code": "123", "account_type": "ordinary",
                            "account_number": "1234567", "holder_kana": "ﾔﾏﾀﾞ ﾊﾅｺ"},
    }
    form.update(overrides)
    return form


def nursery_form(birth: str, wants: bool, **overrides) -> dict:
    form = {
        "child": {"name": "山田 一郎", "name_kana": "やまだ いちろう", "birth_date": birth},
        "guardian": {"name": "山田 花子", "name_kana": "ヤマダ ハナコ", "birth_date": "1990-04-10",
                     "address": "東京都千代田区千代田1-1", "relationship": "mother"},
        "wants_childcare": wants,
        "period": {"start_date": "2027-04-01", "end_date": "2028-03-31"},
        "facility_preferences": [{"facility_name": "千代田保育園"}, {"facility_name": "神田こども園"}],
        "tax_data_consent": True,
    }
    if wants:
        form.update(care_reason="employment", days=["mon", "tue", "wed", "thu", "fri"],
                    hours={"start_time": "08:30", "end_time": "17:30"})
    form.update(overrides)
    return form


def pregnancy_form(**overrides) -> dict:
    form = {
        "pregnant_person": {"name": "山田 花子", "name_kana": "ヤマダ ハナコ", "birth_date": "1990-04-10",
                            "address": "東京都千代田区千代田1-1"},
        "weeks_of_pregnancy": 10, "expected_delivery_date": "2027-06-26", "first_birth": True,
        "diagnosed_by": {"kind": "doctor", "name": "佐藤 医師", "facility_name": "千代田クリニック",
                         "diagnosis_date": "2026-11-30"},
    }
    form.update(overrides)
    return form


def error_details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest field paths) of a refused call."""
    status = rpc_status.from_call(err)
    reason, fields = "", []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def refused(awaitable) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    reason, fields = error_details(caught.value)
    return caught.value.code(), reason, fields


def jpeg_bytes(*, gps: bool = False, size=(64, 48), color=(200, 30, 30)) -> bytes:
    image = Image.new("RGB", size, color)
    out = io.BytesIO()
    if gps:
        exif = Image.Exif()
        exif[0x010F] = "PhoneMaker"      # Make
        exif[0x0110] = "PhoneModel"      # Model
        exif[0x0131] = "CameraApp 1.0"   # Software
        gps_ifd = {1: "N", 2: (35.0, 41.0, 22.0), 3: "E", 4: (139.0, 45.0, 10.0)}
        exif[0x8825] = gps_ifd           # GPSInfo
        image.save(out, format="JPEG", exif=exif.tobytes())
    else:
        image.save(out, format="JPEG")
    return out.getvalue()


PDF_AUTHOR = "YAMADA Hanako (author)"
PDF_XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
           b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
           b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator><rdf:Seq><rdf:li>XMP-YAMADA-HANAKO</rdf:li>'
           b'</rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
PDF_CONTENT = b"0 0 1 rg 100 100 200 200 re f\n"


@functools.cache
def pdf_bytes(padding: int = 0, *, metadata: bool = False) -> bytes:
    """A real one-page PDF (a blue square) whose content stream is `padding` bytes longer; with
    `metadata`, an Info dictionary (author, creator, producer, dates) and XMP on the document and page."""
    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    writer = PdfWriter()
    page = writer.add_blank_page(595, 842)
    content = DecodedStreamObject()
    content.set_data(PDF_CONTENT + (b"%" + b"x" * (padding - 2) + b"\n" if padding >= 2 else b""))
    page[NameObject("/Contents")] = writer._add_object(content)
    if metadata:
        writer.add_metadata({"/Author": PDF_AUTHOR, "/Creator": "ScanApp-Creator 2.1",
                             "/Producer": "PhoneScanner-Producer 3", "/Title": "保険証の写し (山田 花子)",
                             "/CreationDate": "D:20261203100000+09'00'", "/ModDate": "D:20261203100500+09'00'"})
        writer.xmp_metadata = PDF_XMP
        page_xmp = DecodedStreamObject()
        page_xmp.set_data(PDF_XMP.replace(b"XMP-YAMADA-HANAKO", b"PAGE-XMP-YAMADA"))
        page_xmp[NameObject("/Type")] = NameObject("/Metadata")
        page_xmp[NameObject("/Subtype")] = NameObject("/XML")
        page[NameObject("/Metadata")] = writer._add_object(page_xmp)
        # A form XObject (as an edited picture would be) with its own XMP, drawn by the page.
        form_xmp = DecodedStreamObject()
        form_xmp.set_data(PDF_XMP.replace(b"XMP-YAMADA-HANAKO", b"FORM-XMP-YAMADA"))
        form = DecodedStreamObject()
        form.set_data(b"1 0 0 rg 0 0 10 10 re f\n")
        form.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Form"),
                     NameObject("/BBox"): ArrayObject([NumberObject(0), NumberObject(0), NumberObject(10),
                                                       NumberObject(10)]),
                     NameObject("/Metadata"): writer._add_object(form_xmp)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): DictionaryObject(
            {NameObject("/Fm1"): writer._add_object(form)})})
        content.set_data(content.get_data() + b"/Fm1 Do\n")
    else:
        writer.metadata = None
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def upload_messages(application_id: str, data: bytes, *, slot: str = "health_insurance",
                    content_type: str = "image/jpeg", declared_size: int | None = None, chunk: int = 256 * 1024,
                    request_id: str | None = None, filename: str = "photo.jpg"):
    yield pb.UploadAttachmentRequest(metadata=pb.UploadAttachmentMetadata(
        request_id=request_id or new_id("rq"), application_id=application_id, slot=slot,
        declared_content_type=content_type, declared_size=len(data) if declared_size is None else declared_size,
        filename=filename))
    for start in range(0, len(data), chunk):
        yield pb.UploadAttachmentRequest(chunk=data[start:start + chunk])


async def stream_upload(stub, messages, *, metadata=()) -> pb.UploadAttachmentResponse:
    """Write the messages one by one; when the server refuses early, stop writing and read its status.

    (With a request iterator, grpc.aio reports a refusal that arrives mid-send as INTERNAL "Internal
    error from Core"; writing through the call object surfaces the server's real status.)
    """
    call = stub.UploadAttachment(metadata=metadata)
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        pass
    return await call


@dataclass
class Applicant:
    """A signed-in resident with a stub that carries their bearer token."""

    resident_id: str
    card: object
    token: str
    stub: pb_grpc.ApplicationServiceStub

    async def sign_in_again(self, platform) -> None:
        """A fresh session (after the test clock moved past the old one's life)."""
        self.token = await platform.sign_in(self.card)

    @property
    def md(self):
        return bearer(self.token)

    async def draft(self, form: dict | None = None, procedure: str = CERT) -> pb.Application:
        reply = await self.stub.CreateDraft(pb.CreateDraftRequest(
            request_id=new_id("rq"), procedure_code=procedure,
            form_json=json.dumps(child_allowance_form() if form is None else form, ensure_ascii=False)),
            metadata=self.md)
        return reply.application

    async def upload(self, application_id: str, data: bytes | None = None, **kw) -> pb.UploadAttachmentResponse:
        return await stream_upload(self.stub, upload_messages(application_id, data or jpeg_bytes(), **kw),
                                   metadata=self.md)

    async def get(self, application_id: str) -> pb.Application:
        return (await self.stub.GetApplication(pb.GetApplicationRequest(application_id=application_id),
                                               metadata=self.md)).application

    async def sign_and_submit(self, application_id: str, *, card=None, request_id: str | None = None):
        prepared = await self.stub.PrepareSubmission(pb.PrepareSubmissionRequest(application_id=application_id),
                                                     metadata=self.md)
        card = card or self.card
        signature = card.sign_with_signature_key(prepared.canonical_bytes, PASSWORD)
        return await self.stub.SubmitApplication(pb.SubmitApplicationRequest(
            request_id=request_id or new_id("rq"), application_id=application_id, signature=signature,
            signature_certificate=card.sign_certificate_der), metadata=self.md)

    async def submitted(self, form: dict | None = None) -> pb.Application:
        """A draft with its required photo, signed and submitted."""
        draft = await self.draft(form)
        await self.upload(draft.application_id)
        return (await self.sign_and_submit(draft.application_id)).application


async def make_applicant(platform, name: str = "山田 花子", lgcode: str = LG) -> Applicant:
    resident_id, card = await platform.add_resident(holder(name), lgcode)
    token = await platform.sign_in(card)
    return Applicant(resident_id, card, token, pb_grpc.ApplicationServiceStub(platform.channel()))


