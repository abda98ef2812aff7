"""The whole kiosk transaction over real gRPC + TLS: documents, money, receipts, verification."""

from __future__ import annotations

from onestop.issuance.v1 import issuance_pb2 as pb

from clients.kiosk import Printer
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
