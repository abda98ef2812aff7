"""Retries, reconnects, jams, cancels, expiry, bad input, wrong callers: nothing issued or charged twice,
nothing charged that was not printed."""

from __future__ import annotations

import grpc
from onestop.issuance.v1 import issuance_pb2 as pb

from clients.kiosk import Network, Printer
from server.crypto.machine import MachineIdentity
from tests.helpers import expect_error
from tests.issuance.kit import (CHIYODA, Steps, add_resident, kiosk, money, order, pdf_text, reason, staff, stub)
from server.testing import holder

PRINTED, FAILED = pb.PRINT_OUTCOME_PRINTED, pb.PRINT_OUTCOME_FAILED


async def test_retried_steps_on_new_streams_return_the_first_answer(platform):
    _, card = await add_resident(platform, holder())
    first = Steps(kiosk(platform, "k-1"), "t-1")
    assert reason(await first.sign_in(card)) == "OK"
    quote = await first.send("order", order=order(copies=2))
    paid = await first.send("pay", payment_confirmed=pb.PaymentConfirmed(amount_yen=quote.quote.total_yen))
    assert len(paid.documents.documents) == 2 and not paid.replayed
    # the line drops; the kiosk reconnects (a new stream) and resends the same step
    again = Steps(kiosk(platform, "k-1"), "t-1")
    replay = await again.send("pay", payment_confirmed=pb.PaymentConfirmed(amount_yen=quote.quote.total_yen))
    assert replay.replayed
    assert [(d.serial, d.verification_code, d.pdf) for d in replay.documents.documents] == \
        [(d.serial, d.verification_code, d.pdf) for d in paid.documents.documents]
    assert await money(platform) == {"documents": {"issued": 2}, "charges": {"pending": (2, 600)}, "fee_lines": (0, 0)}
    for _ in range(2):
        await again.send("p1", print_result=pb.PrintResult(copy_no=1, outcome=PRINTED))
    await again.send("p2", print_result=pb.PrintResult(copy_no=2, outcome=PRINTED))
    # the same copy reported again under a new step is refused, not counted twice
    assert reason(await again.send("p1b", print_result=pb.PrintResult(copy_no=1, outcome=PRINTED))) == \
        "COPY_ALREADY_RESOLVED"
    receipts = [await again.send("fin", finish=pb.Finish()), await first.send("fin", finish=pb.Finish())]
    assert receipts[0].receipt == receipts[1].receipt and receipts[1].replayed
    assert receipts[0].receipt.total_yen == 600
    assert await money(platform) == {"documents": {"printed": 2}, "charges": {"posted": (2, 600)}, "fee_lines": (2, 246)}
    # a step id reused for a different step is refused
    assert reason(await again.send("fin", cancel=pb.Cancel())) == "STEP_ID_REUSED"


async def test_flaky_network_never_issues_or_charges_twice(platform):
    _, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-flaky", network=Network(drop_probability=0.4, seed=11))
    for n in range(4):
        result = await k.transact(card, "1234", order(copies=2), kiosk_transaction_id=f"t-{n}")
        assert result.ok, result.refusal
        assert result.receipt.copies_printed == 2
    assert k.reconnects >= 3
    assert await money(platform) == {"documents": {"printed": 8}, "charges": {"posted": (8, 2400)},
                                     "fee_lines": (8, 8 * 123)}


async def test_jammed_printer_voids_and_charges_nothing(platform):
    _, card = await add_resident(platform, holder())
    result = await kiosk(platform, "k-jam", printer=Printer(failure_probability=1.0)).transact(
        card, "1234", order(copies=2))
    assert result.failed == [1, 2] and result.printed == []
    assert result.receipt.total_yen == 0 and result.receipt.copies_voided == 2
    assert await money(platform) == {"documents": {"voided": 2}, "charges": {"voided": (2, 600)}, "fee_lines": (0, 0)}
    verified = await stub(platform).VerifyCertificate(pb.VerifyCertificateRequest(
        verification_code=result.documents[0].verification_code))
    assert verified.status == pb.VERIFICATION_STATUS_VOIDED
    settlement = await staff(platform).GetSettlement(pb.GetSettlementRequest(municipality_code=CHIYODA,
                                                                             month="2026-12"))
    assert settlement.total_copies == 0 and settlement.total_owed_yen == 0


async def test_one_jam_of_three_copies(platform):
    _, card = await add_resident(platform, holder())
    steps = Steps(kiosk(platform, "k-1"))
    await steps.sign_in(card)
    await steps.send(order=order(copies=3))
    await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=900))
    recorded = [await steps.send(print_result=pb.PrintResult(copy_no=n, outcome=o))
                for n, o in ((1, PRINTED), (2, FAILED), (3, PRINTED))]
    assert [r.print_recorded.charged_yen for r in recorded] == [300, 0, 300]
    receipt = (await steps.send(finish=pb.Finish())).receipt
    assert (receipt.copies_printed, receipt.copies_voided, receipt.total_yen) == (2, 1, 600)
    assert await money(platform) == {"documents": {"printed": 2, "voided": 1},
                                     "charges": {"posted": (2, 600), "voided": (1, 300)}, "fee_lines": (2, 246)}


async def test_abandoned_transaction_expires_and_leaves_nothing_charged(platform):
    _, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-away")
    walked = await k.transact(card, "1234", order(copies=1), kiosk_transaction_id="t-a", abandon_after="payment")
    assert len(walked.documents) == 1
    platform.clock.advance(minutes=9)  # still alive after 9 idle minutes
    desk = platform.server.platform.services["kiosk_desk"]
    assert await desk.sweep_expired() == 0
    walked2 = await k.transact(card, "1234", order(copies=1), kiosk_transaction_id="t-b", abandon_after="payment")
    platform.clock.advance(minutes=5)
    assert await desk.sweep_expired() == 1  # t-a (idle 14 minutes); t-b has been idle 5
    assert await money(platform) == {"documents": {"voided": 1, "issued": 1},
                                     "charges": {"voided": (1, 300), "pending": (1, 300)}, "fee_lines": (0, 0)}
    # t-b is expired on access even before a sweep
    platform.clock.advance(minutes=6)
    late = Steps(kiosk(platform, "k-away"), "t-b")
    answer = await late.send(print_result=pb.PrintResult(copy_no=1, outcome=PRINTED))
    assert reason(answer) == "TRANSACTION_EXPIRED"
    assert reason(await late.send(finish=pb.Finish())) == "TRANSACTION_CLOSED"
    assert await money(platform) == {"documents": {"voided": 2}, "charges": {"voided": (2, 600)}, "fee_lines": (0, 0)}
    verified = await stub(platform).VerifyCertificate(pb.VerifyCertificateRequest(
        verification_code=walked2.documents[0].verification_code))
    assert verified.status == pb.VERIFICATION_STATUS_VOIDED


ONE_OF_TWO_VOIDED = {"documents": {"printed": 1, "voided": 1},
                     "charges": {"posted": (1, 300), "voided": (1, 300)}, "fee_lines": (1, 123)}


async def _two_paid_one_printed(platform) -> Steps:
    """A transaction with two copies paid for, of which only the first was reported printed."""
    _, card = await add_resident(platform, holder())
    steps = Steps(kiosk(platform, "k-1"))
    await steps.sign_in(card)
    await steps.send(order=order(copies=2))
    await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=600))
    await steps.send(print_result=pb.PrintResult(copy_no=1, outcome=PRINTED))
    return steps


async def test_finish_voids_copies_never_reported_printed(platform):
    steps = await _two_paid_one_printed(platform)
    receipt = (await steps.send("fin", finish=pb.Finish())).receipt
    assert (receipt.copies_printed, receipt.copies_voided, receipt.total_yen) == (1, 1, 300)
    assert await money(platform) == ONE_OF_TWO_VOIDED
    again = await steps.send("fin", finish=pb.Finish())
    assert again.replayed and again.receipt == receipt


async def test_cancel_voids_unprinted_copies(platform):
    steps = await _two_paid_one_printed(platform)
    voided = await steps.send(cancel=pb.Cancel())
    assert voided.voided.copies_voided == 1
    assert await money(platform) == ONE_OF_TWO_VOIDED


async def test_bad_input_and_wrong_order_of_steps(platform):
    _, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-1")
    bare = await k.step(pb.KioskSessionRequest(step_id="s", begin=pb.Begin()))
    assert reason(bare) == "INVALID_FIELD" and list(bare.refusal.fields) == ["kiosk_transaction_id"]
    no_step = await k.step(pb.KioskSessionRequest(kiosk_transaction_id="t", step_id="s"))
    assert list(no_step.refusal.fields) == ["step"]
    steps = Steps(k, "t-1")
    assert reason(await steps.send(menu=pb.MenuRequest())) == "UNKNOWN_TRANSACTION"
    begun = await steps.send(begin=pb.Begin())
    assert reason(await steps.send(begin=pb.Begin())) == "TRANSACTION_EXISTS"
    assert reason(await steps.send(order=order())) == "WRONG_STATE"  # not signed in
    empty = await steps.send(card_sign_in=pb.CardSignIn())
    assert reason(empty) == "INVALID_FIELD" and list(empty.refusal.fields) == ["card_sign_in.certificate"]
    await steps.send(card_sign_in=pb.CardSignIn(certificate=card.auth_certificate_der,
                                                signature=card.sign_with_auth_key(begun.challenge.nonce, "1234")))
    bad = await steps.send(order=pb.Order(copies=0))
    assert reason(bad) == "INVALID_FIELD"
    assert set(bad.refusal.fields) == {"order.certificate_type", "order.copies"}
    assert reason(await steps.send(order=order(copies=11))) == "INVALID_FIELD"
    assert reason(await steps.send(order=order(options=pb.OrderOptions(fiscal_year=2020)))) == "INVALID_FIELD"
    quote = await steps.send(order=order(copies=1))
    assert reason(await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=100))) == "AMOUNT_MISMATCH"
    paid = await steps.send(payment_confirmed=pb.PaymentConfirmed(amount_yen=quote.quote.total_yen))
    assert len(paid.documents.documents) == 1
    assert reason(await steps.send(print_result=pb.PrintResult(copy_no=5, outcome=PRINTED))) == "UNKNOWN_COPY"
    assert reason(await steps.send(print_result=pb.PrintResult(copy_no=1))) == "INVALID_FIELD"


async def test_sign_in_is_bound_to_its_own_transaction(platform):
    holder_id, card = await add_resident(platform, holder())
    k = kiosk(platform, "k-1")
    a, b = Steps(k, "t-a"), Steps(k, "t-b")
    challenge_a = await a.send(begin=pb.Begin())
    await b.send(begin=pb.Begin())
    # the card's answer to A's challenge does not sign anyone in on B
    signature = card.sign_with_auth_key(challenge_a.challenge.nonce, "1234")
    answer_b = await b.send(card_sign_in=pb.CardSignIn(certificate=card.auth_certificate_der, signature=signature))
    assert reason(answer_b) == "BAD_SIGNATURE"
    assert reason(await b.send(menu=pb.MenuRequest())) == "WRONG_STATE"
    # another kiosk cannot continue this kiosk's transaction
    other = Steps(kiosk(platform, "k-2"), "t-a")
    assert reason(await other.send(card_sign_in=pb.CardSignIn(certificate=card.auth_certificate_der,
                                                             signature=signature))) == "UNKNOWN_TRANSACTION"
    signed = await a.send(card_sign_in=pb.CardSignIn(certificate=card.auth_certificate_der, signature=signature))
    assert signed.signed_in.resident_id == holder_id
    menu = await a.send(menu=pb.MenuRequest())
    offered = {i.certificate_type: (i.available, i.unavailable_reason, i.fee_yen) for i in menu.menu.items}
    assert offered[pb.CERTIFICATE_TYPE_RESIDENT_RECORD] == (True, "", 300)
    assert offered[pb.CERTIFICATE_TYPE_SEAL_REGISTRATION] == (False, "NO_ACTIVE_SEAL", 300)


async def _one_step(call):
    await call.write(pb.KioskSessionRequest(kiosk_transaction_id="t", step_id="s", begin=pb.Begin()))
    return await call.read()


async def test_only_kiosks_open_a_session(platform):
    await expect_error(_one_step(stub(platform).KioskSession()), grpc.StatusCode.UNAUTHENTICATED,
                       "AUTHENTICATION_REQUIRED")
    city = stub(platform, MachineIdentity("municipality", CHIYODA, {})).KioskSession()
    await expect_error(_one_step(city), grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT COUNT(*) FROM kiosk_transactions") == 0


async def test_household_options_and_no_resident_code(platform):
    holder_id, card = await add_resident(platform, holder("山田 花子"), household_id="hh-1", relationship="世帯主")
    async with platform.db.write() as tx:
        await tx.execute("UPDATE households SET head_resident_id = ? WHERE household_id = 'hh-1'", (holder_id,))
    result = await kiosk(platform, "k-1").transact(card, "1234", order(options=pb.OrderOptions(
        include_household=True, include_individual_number=True)))
    text = pdf_text(result.documents[0].pdf)
    assert "世帯主" in text and "続柄" in text
    assert "個人番号" in text and "記載省略" in text  # the municipality does not allow it by default


async def test_kiosk_certificate_must_name_its_kind(platform):
    no_lg = Steps(kiosk(platform, "k-hall", kind="city_hall"), "t-1")
    assert reason(await no_lg.send(begin=pb.Begin())) == "KIOSK_CERTIFICATE_INCOMPLETE"
    odd = Steps(kiosk(platform, "k-odd", kind="vending_machine"), "t-1")
    assert reason(await odd.send(begin=pb.Begin())) == "KIOSK_CERTIFICATE_INCOMPLETE"
    again = await no_lg.send("x1", begin=pb.Begin())  # resent: its stored refusal, no transaction begun
    assert reason(again) == "KIOSK_CERTIFICATE_INCOMPLETE" and again.replayed
    post = Steps(kiosk(platform, "k-post", kind="post_office"), "t-1")
    assert (await post.send(begin=pb.Begin())).WhichOneof("result") == "challenge"
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT kiosk_id, kiosk_kind FROM kiosk_transactions")
    assert [tuple(r) for r in rows] == [("k-post", "post_office")]
