"""Many kiosks at once, slow and jamming printers, dropping lines, one or two server processes on one
database: every document delivered is of the card holder of its own transaction; money adds up."""

from __future__ import annotations

import asyncio

import pytest
from onestop.issuance.v1 import issuance_pb2 as pb

from clients.kiosk import Network, Printer
from server import app
from tests.issuance.kit import CHIYODA, add_resident, kiosk, money, order, pdf_text, staff

KIOSKS = 20


async def run_kiosks(platform, card_pool, servers, rounds: int = 1) -> None:
    people = []
    for person, card in card_pool[:KIOSKS]:
        resident_id, _ = await add_resident(platform, person, CHIYODA, card=card)
        people.append((resident_id, person.name, card))
    kiosks = [kiosk(platform, f"k-{i:02d}", operator=("seven", "lawson", "famima")[i % 3], servers=servers,
                    printer=Printer(failure_probability=0.15, delay=0.02, seed=i),
                    network=Network(drop_probability=0.1, seed=100 + i))
              for i in range(KIOSKS)]

    async def customer(i: int):
        results = []
        for n in range(rounds):  # customers' transactions one after another at each kiosk
            resident_id, name, card = people[i]
            result = await kiosks[i].transact(card, "1234", order(copies=1 + (i + n) % 3),
                                              kiosk_transaction_id=f"t-{i}-{n}")
            results.append((resident_id, name, result))
        return results

    outcomes = [r for batch in await asyncio.wait_for(asyncio.gather(*(customer(i) for i in range(KIOSKS))), 100 * rounds)
                for r in batch]
    everyone = {name for _, name, _ in people}
    printed = 0
    for resident_id, name, result in outcomes:
        assert result.ok, result.refusal
        assert result.resident_id == resident_id
        for doc in result.documents:  # every document handed to this kiosk
            assert doc.subject_resident_id == resident_id
            text = pdf_text(doc.pdf)
            assert name in text
            assert not any(other in text for other in everyone - {name})
        printed += len(result.printed)
        assert result.receipt.copies_printed == len(result.printed)
        assert result.receipt.total_yen == 300 * len(result.printed)
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT d.subject_resident_id, d.holder_resident_id, t.resident_id AS signed_in"
                            " FROM issued_documents d JOIN kiosk_transactions t ON t.txn_id = d.txn_id")
        assert all(r["subject_resident_id"] == r["holder_resident_id"] == r["signed_in"] for r in rows)
        issued = await tx.scalar("SELECT COUNT(*) FROM issued_documents")
    assert issued == sum(len(r.documents) for _, _, r in outcomes)  # nothing issued twice
    stored = await money(platform)
    assert stored["charges"]["posted"] == (printed, 300 * printed)
    assert stored["fee_lines"] == (printed, 123 * printed)
    assert stored["documents"]["printed"] == printed
    settlement = await staff(platform).GetSettlement(pb.GetSettlementRequest(municipality_code=CHIYODA,
                                                                             month="2026-12"))
    assert settlement.total_copies == printed and settlement.total_owed_yen == printed * 123
    assert {line.operator for line in settlement.lines} == {"seven", "lawson", "famima"}
    assert sum(k.reconnects for k in kiosks) > 0
    for k in kiosks:
        await k.close()


async def test_twenty_kiosks_one_server(platform, card_pool):
    await run_kiosks(platform, card_pool, [platform.server])


async def test_twenty_kiosks_two_server_processes_one_database(platform, card_pool):
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    try:
        # each kiosk alternates between the two servers when its line drops
        await run_kiosks(platform, card_pool, [platform.server, second])
    finally:
        await second.stop(grace=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_soak_twenty_kiosks_two_servers_five_rounds(platform, card_pool):
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    try:
        await run_kiosks(platform, card_pool, [platform.server, second], rounds=5)
    finally:
        await second.stop(grace=1)


async def test_a_step_resent_to_another_server_process_gets_the_first_answer(platform):
    from server.testing import holder
    from tests.issuance.kit import Steps, reason

    _, card = await add_resident(platform, holder())
    second = await app.start(platform.settings, clock=platform.clock, port=0)
    try:
        on_first = Steps(kiosk(platform, "k-1"), "t-1")
        on_second = Steps(kiosk(platform, "k-1", servers=[second]), "t-1")
        begun = await on_first.send("b", begin=pb.Begin())
        assert (await on_second.send("b", begin=pb.Begin())).challenge.nonce == begun.challenge.nonce
        sign = pb.CardSignIn(certificate=card.auth_certificate_der,
                             signature=card.sign_with_auth_key(begun.challenge.nonce, "1234"))
        signed = await on_second.send("s", card_sign_in=sign)
        assert reason(signed) == "OK"
        replay = await on_first.send("s", card_sign_in=sign)
        assert replay.replayed and replay.signed_in == signed.signed_in
        await on_second.send("o", order=order(copies=2))
        paid = await on_first.send("p", payment_confirmed=pb.PaymentConfirmed(amount_yen=600))
        again = await on_second.send("p", payment_confirmed=pb.PaymentConfirmed(amount_yen=600))
        assert again.replayed
        assert [d.serial for d in again.documents.documents] == [d.serial for d in paid.documents.documents]
        assert [d.pdf for d in again.documents.documents] == [d.pdf for d in paid.documents.documents]
        for copy_no in (1, 2):
            await on_second.send(f"r{copy_no}", print_result=pb.PrintResult(copy_no=copy_no,
                                                                            outcome=pb.PRINT_OUTCOME_PRINTED))
            await on_first.send(f"r{copy_no}", print_result=pb.PrintResult(copy_no=copy_no,
                                                                           outcome=pb.PRINT_OUTCOME_PRINTED))
        receipt = (await on_first.send("f", finish=pb.Finish())).receipt
        assert receipt.total_yen == 600 and receipt.copies_printed == 2
        assert await money(platform) == {"documents": {"printed": 2}, "charges": {"posted": (2, 600)},
                                         "fee_lines": (2, 246)}
    finally:
        await second.stop(grace=1)


async def test_abandoned_after_order_expires_with_nothing_issued(platform):
    from server.testing import holder
    from tests.issuance.kit import Steps, reason

    _, card = await add_resident(platform, holder())
    walked = await kiosk(platform, "k-1").transact(card, "1234", order(), kiosk_transaction_id="t-1",
                                                  abandon_after="order")
    assert walked.quote.total_yen == 300
    platform.clock.advance(minutes=10)
    answer = await Steps(kiosk(platform, "k-1"), "t-1").send(payment_confirmed=pb.PaymentConfirmed(amount_yen=300))
    assert reason(answer) == "TRANSACTION_EXPIRED"
    assert await money(platform) == {"documents": {}, "charges": {}, "fee_lines": (0, 0)}
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT state FROM kiosk_transactions") == "expired"
