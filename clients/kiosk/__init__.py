"""A kiosk simulator (コンビニのマルチコピー機): card reader, printer, flaky network.

    kiosk = Kiosk("k-001", channels, printer=Printer(failure_probability=0.1, delay=0.01, seed=7))
    result = await kiosk.transact(card, "1234", Order(certificate_type=1, copies=2))

The printer can jam (seeded probability) or be slow; the network can drop the stream after a step
was sent, before its answer arrives: the kiosk reconnects (to the next server in `channels`, if
several) and resends the same step with the same step_id, as a real kiosk must. A document whose
PDF does not match its sha256 is not printed: the kiosk reports that copy as failed (voided, not
charged).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from typing import Sequence

import grpc
from grpc import aio

from clients.pki.card import CardLocked, SoftwareCard, WrongPin
from onestop.issuance.v1 import issuance_pb2 as pb
from onestop.issuance.v1 import issuance_pb2_grpc

__all__ = ["Kiosk", "Network", "Printer", "TransactionResult", "pb"]


@dataclass
class Printer:
    """Prints a PDF, or jams with `failure_probability`; each copy takes `delay` seconds."""

    failure_probability: float = 0.0
    delay: float = 0.0
    seed: int = 0
    printed: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def print(self, pdf: bytes) -> bool:
        if self.delay:
            await asyncio.sleep(self.delay * (0.5 + self._rng.random()))
        if self._rng.random() < self.failure_probability:
            return False
        self.printed.append(pdf)
        return True


@dataclass
class Network:
    """Drops the stream after sending a step with `drop_probability` (at most `max_drops` in all)."""

    drop_probability: float = 0.0
    seed: int = 0
    max_drops: int = 1000
    drops: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def drop_now(self) -> bool:
        if self.drops < self.max_drops and self._rng.random() < self.drop_probability:
            self.drops += 1
            return True
        return False


@dataclass
class TransactionResult:
    kiosk_transaction_id: str
    resident_id: str = ""
    quote: pb.Quote | None = None
    documents: list[pb.Document] = field(default_factory=list)
    printed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)  # copies not printed: the PDF did not match its sha256
    receipt: pb.Receipt | None = None
    refusal: pb.Refusal | None = None
    responses: list[pb.KioskSessionResponse] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.refusal is None and self.receipt is not None


class KioskClosed(Exception):
    pass


class Kiosk:
    """One terminal. `channels` are channels to server processes carrying this kiosk's client
    certificate; a reconnect goes to the next one."""

    def __init__(self, kiosk_id: str, channels: Sequence[aio.Channel], *, printer: Printer | None = None,
                 network: Network | None = None, max_attempts: int = 8) -> None:
        self.kiosk_id = kiosk_id
        self._channels = list(channels)
        self._next = 0
        self.printer = printer or Printer()
        self.network = network or Network()
        self._call: aio.StreamStreamCall | None = None
        self._max_attempts = max_attempts
        self._counter = 0
        self.reconnects = 0

    async def close(self) -> None:
        if self._call is not None:
            await self._call.done_writing()
            self._call.cancel()
            self._call = None

    def _open(self) -> aio.StreamStreamCall:
        channel = self._channels[self._next % len(self._channels)]
        self._next += 1
        self._call = issuance_pb2_grpc.IssuanceServiceStub(channel).KioskSession()
        return self._call

    async def step(self, request: pb.KioskSessionRequest) -> pb.KioskSessionResponse:
        """Send one step and read its answer, reconnecting and resending on a drop."""
        for attempt in range(self._max_attempts):
            call = self._call or self._open()
            try:
                await call.write(request)
                if self.network.drop_now():
                    call.cancel()  # the line goes dead after the step left the kiosk
                    self._call = None
                    self.reconnects += 1
                    continue
                response = await call.read()
                if response is aio.EOF:
                    raise KioskClosed("stream ended")
                if response.step_id != request.step_id:
                    raise KioskClosed("answer to another step")
                return response
            except (aio.AioRpcError, KioskClosed, asyncio.InvalidStateError):
                call.cancel()
                self._call = None
                self.reconnects += 1
                if attempt == self._max_attempts - 1:
                    raise
        raise KioskClosed("no answer after reconnects")

    def _request(self, ktid: str, **step) -> pb.KioskSessionRequest:
        self._counter += 1
        return pb.KioskSessionRequest(kiosk_transaction_id=ktid, step_id=f"s{self._counter}", **step)

    async def transact(self, card: SoftwareCard, pin: str, order: pb.Order, *,
                       kiosk_transaction_id: str | None = None, abandon_after: str | None = None) -> TransactionResult:
        """One customer: card, menu, order, pay, print each copy, finish. Refusals cancel.

        `abandon_after` ("sign_in", "order", "payment") walks away after that step (for expiry tests).
        """
        ktid = kiosk_transaction_id or f"{self.kiosk_id}-t{random.getrandbits(48):012x}"
        self._counter = 0
        result = TransactionResult(ktid)

        async def ask(**step) -> pb.KioskSessionResponse | None:
            response = await self.step(self._request(ktid, **step))
            result.responses.append(response)
            if response.WhichOneof("result") == "refusal":
                result.refusal = response.refusal
                return None
            return response

        begun = await ask(begin=pb.Begin())
        if begun is None:
            return result
        try:
            signature = card.sign_with_auth_key(begun.challenge.nonce, pin)
            sign = pb.CardSignIn(certificate=card.auth_certificate_der, signature=signature)
        except CardLocked:
            sign = pb.CardSignIn(card_locked=True)
        except WrongPin:
            result.refusal = pb.Refusal(reason="WRONG_PIN", message="the PIN was wrong")
            await ask(cancel=pb.Cancel())
            result.refusal = pb.Refusal(reason="WRONG_PIN", message="the PIN was wrong")
            return result
        signed = await ask(card_sign_in=sign)
        if signed is None:
            return result
        result.resident_id = signed.signed_in.resident_id
        if abandon_after == "sign_in":
            return result
        if await ask(menu=pb.MenuRequest()) is None:
            return await self._cancel(ktid, result, ask)
        quoted = await ask(order=order)
        if quoted is None:
            return await self._cancel(ktid, result, ask)
        result.quote = quoted.quote
        if abandon_after == "order":
            return result
        paid = await ask(payment_confirmed=pb.PaymentConfirmed(amount_yen=quoted.quote.total_yen))
        if paid is None:
            return await self._cancel(ktid, result, ask)
        result.documents = list(paid.documents.documents)
        if abandon_after == "payment":
            return result
        for doc in result.documents:
            intact = hashlib.sha256(doc.pdf).hexdigest() == doc.pdf_sha256
            if not intact:
                result.corrupt.append(doc.copy_no)
            ok = intact and await self.printer.print(doc.pdf)
            outcome = pb.PRINT_OUTCOME_PRINTED if ok else pb.PRINT_OUTCOME_FAILED
            recorded = await ask(print_result=pb.PrintResult(copy_no=doc.copy_no, outcome=outcome))
            if recorded is None:
                return await self._cancel(ktid, result, ask)
            (result.printed if ok else result.failed).append(doc.copy_no)
        finished = await ask(finish=pb.Finish())
        if finished is not None:
            result.receipt = finished.receipt
        return result

    @staticmethod
    async def _cancel(ktid: str, result: TransactionResult, ask) -> TransactionResult:
        refusal = result.refusal
        await ask(cancel=pb.Cancel())
        result.refusal = refusal
        return result


def status_of(error: grpc.RpcError) -> str:
    return error.code().name if hasattr(error, "code") else str(error)
