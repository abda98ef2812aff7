"""Test helpers of the issuance area: kiosk channels, registry records, reading stored money."""

from __future__ import annotations


from onestop.issuance.v1 import issuance_pb2 as pb
from onestop.issuance.v1 import issuance_pb2_grpc

from clients.kiosk import Kiosk, Network, Printer
from server.clock import to_epoch_ms
from server.crypto.machine import MachineIdentity
from server.ids import new_id
from server.testing import open_channel

CHIYODA = "131016"


async def add_resident(platform, *args, **kwargs):
    """platform.add_resident, then the card link's serials checked in the even-length hex form that
    sign-in looks up (an earlier enrol_resident wrote odd-length hex for about one card in sixteen)."""
    resident_id, card = await platform.add_resident(*args, **kwargs)

    def even(n: int) -> str:
        h = format(n, "x")
        return h if len(h) % 2 == 0 else "0" + h

    async with platform.db.read() as tx:
        row = await tx.one("SELECT auth_serial, sign_serial FROM card_links WHERE resident_id = ?", (resident_id,))
    assert (row["auth_serial"], row["sign_serial"]) == (even(card.auth_certificate.serial_number),
                                                        even(card.sign_certificate.serial_number))
    return resident_id, card


def kiosk_identity(kiosk_id: str, *, operator: str = "seven", kind: str = "convenience_store",
                   lg: str | None = None) -> MachineIdentity:
    attributes = {"operator": operator, "kind": kind, **({"lg": lg} if lg else {})}
    return MachineIdentity("kiosk", kiosk_id, attributes)


def kiosk(platform, kiosk_id: str = "k-1", *, printer: Printer | None = None, network: Network | None = None,
          servers: list | None = None, **identity) -> Kiosk:
    ident = kiosk_identity(kiosk_id, **identity)
    if servers:
        channels = [open_channel(running, platform.pki, ident) for running in servers]
        platform._channels.extend(channels)
    else:
        channels = [platform.channel(ident)]
    return Kiosk(kiosk_id, channels, printer=printer, network=network)


def stub(platform, identity: MachineIdentity | None = None) -> issuance_pb2_grpc.IssuanceServiceStub:
    return issuance_pb2_grpc.IssuanceServiceStub(platform.channel(identity))


def staff(platform, lgcode: str = CHIYODA) -> issuance_pb2_grpc.IssuanceServiceStub:
    return issuance_pb2_grpc.IssuanceServiceStub(platform.municipality(lgcode))


def order(certificate_type: int = pb.CERTIFICATE_TYPE_RESIDENT_RECORD, copies: int = 1, **kw) -> pb.Order:
    options = kw.pop("options", None)
    return pb.Order(certificate_type=certificate_type, copies=copies, options=options, **kw)


async def add_seal(platform, resident_id: str, *, number: str = "S-0001") -> str:
    registration_id = new_id("seal")
    async with platform.db.write() as tx:
        await tx.execute(
            "INSERT INTO seal_registrations (registration_id, resident_id, registration_number, registered_on,"
            " updated_at_ms) VALUES (?, ?, ?, ?, ?)",
            (registration_id, resident_id, number, "2020-05-01", to_epoch_ms(platform.clock.now())))
    return registration_id


async def abolish_seal(platform, registration_id: str) -> None:
    async with platform.db.write() as tx:
        await tx.execute("UPDATE seal_registrations SET abolished_at_ms = ? WHERE registration_id = ?",
                         (to_epoch_ms(platform.clock.now()), registration_id))


async def add_tax(platform, resident_id: str, fiscal_year: int = 2026) -> None:
    async with platform.db.write() as tx:
        await tx.execute(
            "INSERT INTO tax_records (resident_id, fiscal_year, total_income, taxable_income, municipal_tax,"
            " prefectural_tax, dependents, updated_at_ms) VALUES (?, ?, 4200000, 2900000, 174000, 116000, 1, ?)",
            (resident_id, fiscal_year, to_epoch_ms(platform.clock.now())))


async def add_register(platform, honseki_code: str, members: list[tuple[str | None, str, str]], *,
                       pending: bool = False, head: str = "山田 太郎") -> str:
    """members: (resident_id, name, relationship). Links the residents to the register."""
    await platform.add_municipality(honseki_code, name="本籍市")
    register_id = new_id("reg")
    async with platform.db.write() as tx:
        await tx.execute(
            "INSERT INTO family_registers (register_id, honseki_code, honseki_address, head_name,"
            " pending_notification, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (register_id, honseki_code, "東京都千代田区千代田一番", head, int(pending), to_epoch_ms(platform.clock.now())))
        for no, (resident_id, name, relationship) in enumerate(members, start=1):
            await tx.execute(
                "INSERT INTO family_register_members (register_id, member_no, resident_id, name, birth_date, sex,"
                " relationship) VALUES (?, ?, ?, ?, '1988-01-02', '1', ?)",
                (register_id, no, resident_id, name, relationship))
            if resident_id:
                await tx.execute("UPDATE residents SET family_register_id = ?, honseki_code = ? WHERE resident_id = ?",
                                 (register_id, honseki_code, resident_id))
    return register_id


async def set_resident(platform, resident_id: str, **columns) -> None:
    sets = ", ".join(f"{k} = ?" for k in columns)
    async with platform.db.write() as tx:
        await tx.execute(f"UPDATE residents SET {sets} WHERE resident_id = ?", (*columns.values(), resident_id))


async def money(platform) -> dict:
    """What is stored: documents by status, charges by status (count, yen), operator fee lines."""
    async with platform.db.read() as tx:
        docs = {r[0]: r[1] for r in await tx.all("SELECT status, COUNT(*) FROM issued_documents GROUP BY status")}
        charges = {r[0]: (r[1], r[2]) for r in await tx.all(
            "SELECT status, COUNT(*), SUM(amount_yen) FROM issuance_charges GROUP BY status")}
        lines = await tx.all("SELECT COUNT(*), COALESCE(SUM(amount_yen), 0) FROM operator_fee_lines")
    return {"documents": docs, "charges": charges, "fee_lines": (lines[0][0], lines[0][1])}


def pdf_text(data: bytes) -> str:
    import io

    from pypdf import PdfReader

    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


class Steps:
    """Drive one transaction step by step (explicit step ids) through a Kiosk's stream."""

    def __init__(self, k: Kiosk, ktid: str = "t-1") -> None:
        self.kiosk, self.ktid, self.n = k, ktid, 0

    async def send(self, step_id: str | None = None, **step) -> pb.KioskSessionResponse:
        self.n += 1
        request = pb.KioskSessionRequest(kiosk_transaction_id=self.ktid, step_id=step_id or f"x{self.n}", **step)
        return await self.kiosk.step(request)

    async def sign_in(self, card, pin: str = "1234") -> pb.KioskSessionResponse:
        begun = await self.send(begin=pb.Begin())
        assert begun.WhichOneof("result") == "challenge", begun
        signature = card.sign_with_auth_key(begun.challenge.nonce, pin)
        signed = await self.send(card_sign_in=pb.CardSignIn(certificate=card.auth_certificate_der,
                                                            signature=signature))
        return signed


def reason(response: pb.KioskSessionResponse) -> str:
    return response.refusal.reason if response.WhichOneof("result") == "refusal" else "OK"


async def jump(platform, when) -> None:
    """Move the clock far ahead and keep the card CRL current (a stale CRL refuses every card)."""
    from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

    platform.clock.set(when)
    der = platform.pki.refresh_crl(now=platform.clock.now())
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(request_id=new_id("crl"), crl=der))
