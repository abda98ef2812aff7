"""The whole kiosk transaction over real gRPC + TLS: documents, money, receipts, verification."""

from __future__ import annotations

from onestop.issuance.v1 import issuance_pb2 as pb

from server.testing import holder
from tests.issuance.kit import add_resident, CHIYODA, kiosk, money, order, pdf_text, staff, stub


async def test_whole_transaction_issues_prints_charges_and_verifies(platform):
    resident_id, card = await add_resident(platform, holder("山田 花子"), CHIYODA)
    k = kiosk(platform, "k-1", operator="seven")
    result = await k.transact(card, "1234", order(copies=2))
    assert result.refusal is None, result.refusal
    assert result.resident_id == resident_id
    assert result.quote.total_yen == 600 and result.quote.fee_per_copy_yen == 300
    assert [d.copy_no for d in result.documents] == [1, 2]
    assert len({d.serial for d in result.documents}) == 2
    for doc in result.documents:
        assert doc.subject_resident_id == resident_id
        text = pdf_text(doc.pdf)
        assert "テスト市" in text  # the municipality's name
        assert doc.serial in text
        assert doc.verification_code in text
        assert "山田 花子" in text and "住民票の写し" in text
        assert "住民票コード" in text and "記載省略" in text
    assert result.receipt.copies_printed == 2 and result.receipt.total_yen == 600
    assert sorted(result.receipt.serials) == sorted(d.serial for d in result.documents)
    stored = await money(platform)
    assert stored == {"documents": {"printed": 2}, "charges": {"posted": (2, 600)}, "fee_lines": (2, 246)}
    public = stub(platform)
    verified = await public.VerifyCertificate(pb.VerifyCertificateRequest(
        verification_code=result.documents[0].verification_code.lower().replace("-", "")))
    assert verified.status == pb.VERIFICATION_STATUS_GENUINE
    assert verified.certificate_type == pb.CERTIFICATE_TYPE_RESIDENT_RECORD
    assert verified.municipality_code == CHIYODA and verified.serial == result.documents[0].serial
    settlement = await staff(platform).GetSettlement(pb.GetSettlementRequest(municipality_code=CHIYODA,
                                                                             month="2026-12"))
    assert settlement.total_copies == 2 and settlement.total_owed_yen == 2 * 123
    assert [(l.operator, l.copies, l.fees_collected_yen) for l in settlement.lines] == [("seven", 2, 600)]


async def test_pdf_carries_the_qr_code_of_its_verification_code(platform):
    import io

    import segno
    from pypdf import PdfReader

    from server.issuance.pdf import verification_url

    _, card = await add_resident(platform, holder())
    result = await kiosk(platform).transact(card, "1234", order())
    doc = result.documents[0]
    images = PdfReader(io.BytesIO(doc.pdf)).pages[0].images
    assert len(images) == 1
    picture = images[0].image.convert("L")
    expected = [list(row) for row in segno.make_qr(verification_url(doc.verification_code), error="m").matrix]
    size = len(expected)
    quiet = (picture.width - size) // 2
    got = [[picture.getpixel((quiet + c, quiet + r)) < 128 for c in range(size)] for r in range(size)]
    # Same symbol as segno makes for the URL (the mask may differ: compare the version and the
    # finder patterns, then decode-equivalence via segno with the same mask).
    fixed = [list(row) for row in segno.make_qr(verification_url(doc.verification_code), error="m", mask=2,
                                               boost_error=False).matrix]
    assert got == [[bool(v) for v in row] for row in fixed]
    assert len(fixed) == len(expected)


async def test_resident_applies_for_honseki_usage_over_rpc(platform):
    from onestop.issuance.v1 import issuance_pb2_grpc

    from server.testing import bearer
    from tests.issuance.kit import add_register

    resident_id, card = await add_resident(platform, holder())
    await add_register(platform, "271004", [(resident_id, "山田 花子", "妻")])
    token = await platform.sign_in(card)
    resident = issuance_pb2_grpc.IssuanceServiceStub(platform.channel())
    applied = await resident.ApplyHonsekiUsage(pb.ApplyHonsekiUsageRequest(request_id="h1"), metadata=bearer(token))
    assert applied.usage.status == pb.HONSEKI_USAGE_STATUS_PENDING and applied.usage.resident_id == resident_id
    again = await resident.ApplyHonsekiUsage(pb.ApplyHonsekiUsageRequest(request_id="h2"), metadata=bearer(token))
    assert again.usage.usage_id == applied.usage.usage_id  # one registration per 本籍地
    import grpc

    from tests.helpers import expect_error
    await expect_error(stub(platform).ApplyHonsekiUsage(pb.ApplyHonsekiUsageRequest(request_id="h3")),
                       grpc.StatusCode.UNAUTHENTICATED)
    other_id, other_card = await add_resident(platform, holder("鈴木 一郎", sex="1"))
    other_token = await platform.sign_in(other_card)
    await expect_error(resident.ApplyHonsekiUsage(pb.ApplyHonsekiUsageRequest(request_id="h4"),
                                                  metadata=bearer(other_token)),
                       grpc.StatusCode.FAILED_PRECONDITION, "NO_FAMILY_REGISTER")


async def test_delivery_guard_stops_a_document_of_someone_else(platform):
    """The guard that runs before documents leave the server, fed a document of another person."""
    import pytest

    from server.issuance.kiosk import DeliveryGuardError
    from tests.issuance.kit import Steps

    holder_id, card = await add_resident(platform, holder())
    stranger_id, _ = await add_resident(platform, holder("佐藤 次郎", sex="1"))
    steps = Steps(kiosk(platform))
    await steps.sign_in(card)
    await steps.send(order=order())
    paid = await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=300))
    desk = platform.server.platform.services["kiosk_desk"]
    async with platform.db.write() as tx:
        txn = await tx.one("SELECT * FROM kiosk_transactions")
        await desk.guard_delivery(tx, txn, paid.documents)  # the real one passes
        await tx.execute("UPDATE issued_documents SET subject_resident_id = ?", (stranger_id,))
        forged = pb.Documents()
        forged.CopyFrom(paid.documents)
        forged.documents[0].subject_resident_id = stranger_id
        with pytest.raises(DeliveryGuardError):
            await desk.guard_delivery(tx, txn, forged)
        await tx.execute("UPDATE issued_documents SET subject_resident_id = ?", (holder_id,))


async def _changed_before_payment(platform, change, the_order=None):
    """Sign in and order, apply `change` to the registry, then pay: returns the payment's answer.
    Rendering inline, the PDFs are rendered in the issuing write transaction, from the records as
    they stand then."""
    from tests.issuance.kit import Steps

    resident_id, card = await add_resident(platform, holder())
    await change.setup(platform, resident_id) if hasattr(change, "setup") else None
    steps = Steps(kiosk(platform, "k-1"), "t-1")
    await steps.sign_in(card)
    quote = await steps.send(order=the_order or order())
    await change(platform, resident_id)
    return await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=quote.quote.total_yen))


async def test_record_changed_after_the_order_is_printed_as_it_stands_at_payment(platform):
    from tests.issuance.kit import set_resident

    async def moves_within_the_city(platform, resident_id):
        await set_resident(platform, resident_id, address="東京都千代田区丸の内2-2")

    response = await _changed_before_payment(platform, moves_within_the_city)
    doc = response.documents.documents[0]
    text = pdf_text(doc.pdf)
    assert "丸の内2-2" in text and "千代田1-1" not in text
    assert doc.serial in text and doc.verification_code in text


def _seal_abolisher():
    """A change for `_changed_before_payment` / `_prepared_then`: the holder's seal registration,
    made at setup, is abolished."""
    from tests.issuance.kit import abolish_seal, add_seal

    registrations = {}

    async def abolish(platform, resident_id):
        await abolish_seal(platform, registrations[resident_id])

    async def setup(platform, resident_id):
        registrations[resident_id] = await add_seal(platform, resident_id)

    abolish.setup = setup
    return abolish


async def test_seal_abolished_after_the_order_yields_nothing(platform):
    response = await _changed_before_payment(platform, _seal_abolisher(),
                                             order(pb.CERTIFICATE_TYPE_SEAL_REGISTRATION))
    assert response.refusal.reason == "NO_ACTIVE_SEAL"
    assert await money(platform) == {"documents": {}, "charges": {}, "fee_lines": (0, 0)}


async def test_serials_run_on_without_gaps_and_each_pdf_is_stored_for_replay(platform):
    """Rendering inline (no PDF worker), serial numbers are taken in the issuing transaction (no
    reservation left unused), and the blob store holds each copy's PDF under its sha256, as a
    replayed payment step reads it."""
    _, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-1")
    first = await k.transact(card, "1234", order(copies=2))
    second = await k.transact(card, "1234", order(copies=1))
    serials = [d.serial for d in first.documents + second.documents]
    assert [int(s.rsplit("-", 1)[1]) for s in serials] == [1, 2, 3]
    desk = platform.server.platform.services["kiosk_desk"]
    for doc in first.documents + second.documents:
        assert desk.blobs.get(doc.pdf_sha256) == doc.pdf


async def _prepared_then(platform, change, the_order=None):
    """Render a payment's copies ahead (as the server does with a PDF worker, before the issuing
    transaction), apply `change` to the registry, then run the issuing step: (prepared, response)."""
    import functools
    import hashlib

    from server.authz import Machine
    from tests.issuance.kit import Steps

    resident_id, card = await add_resident(platform, holder())
    await change.setup(platform, resident_id) if hasattr(change, "setup") else None
    steps = Steps(kiosk(platform, "k-1"), "t-1")
    await steps.sign_in(card)
    quote = await steps.send(order=the_order or order())
    request = pb.KioskSessionRequest(kiosk_transaction_id="t-1", step_id="pay", payment_confirmed=pb.PaymentConfirmed(
        amount_yen=quote.quote.total_yen))
    machine = Machine("kiosk", "k-1", {"operator": "seven", "kind": "convenience_store"})
    desk = platform.server.platform.services["kiosk_desk"]
    prepared = await desk._prepare_documents(machine, request)
    assert prepared is not None and len(prepared.copies) == 1
    await change(platform, resident_id)
    digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    response = await desk._step(machine, request, digest, functools.partial(desk._pay, prepared=prepared))
    return prepared, response


async def test_prepared_pdf_used_when_the_record_is_unchanged(platform):
    async def nothing(platform, resident_id):
        pass

    prepared, response = await _prepared_then(platform, nothing)
    doc = response.documents.documents[0]
    assert (doc.serial, doc.verification_code, doc.pdf) == prepared.copies[0][:3]


async def test_record_changed_after_rendering_is_rendered_anew(platform):
    from tests.issuance.kit import set_resident

    async def moves_within_the_city(platform, resident_id):
        await set_resident(platform, resident_id, address="東京都千代田区丸の内2-2")

    prepared, response = await _prepared_then(platform, moves_within_the_city)
    doc = response.documents.documents[0]
    assert doc.serial != prepared.copies[0][0]
    text = pdf_text(doc.pdf)
    assert "丸の内2-2" in text and "千代田1-1" not in text


async def test_seal_abolished_after_rendering_yields_nothing(platform):
    _, response = await _prepared_then(platform, _seal_abolisher(), order(pb.CERTIFICATE_TYPE_SEAL_REGISTRATION))
    assert response.refusal.reason == "NO_ACTIVE_SEAL"
    assert await money(platform) == {"documents": {}, "charges": {}, "fee_lines": (0, 0)}


async def test_kiosk_does_not_print_a_pdf_that_fails_its_checksum(platform):
    """The simulator checks each PDF against its sha256 before printing; a damaged one is reported
    as a failed print: voided, not charged."""
    _, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-1")
    sent = k.step

    async def damaging(request):
        response = await sent(request)
        if response.WhichOneof("result") == "documents":
            response.documents.documents[0].pdf = response.documents.documents[0].pdf[:-10]
        return response

    k.step = damaging
    result = await k.transact(card, "1234", order(copies=2))
    assert result.ok
    assert (result.corrupt, result.failed, result.printed) == ([1], [1], [2])
    assert len(k.printer.printed) == 1
    assert result.receipt.copies_printed == 1 and result.receipt.total_yen == 300
    assert await money(platform) == {"documents": {"printed": 1, "voided": 1},
                                     "charges": {"posted": (1, 300), "voided": (1, 300)}, "fee_lines": (1, 123)}
