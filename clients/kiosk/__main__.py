"""`python -m clients.kiosk transact ...`: one customer at a simulated kiosk, against a running server.

Example (development PKI under var/pki, a card file made with `python -m clients.pki`):

    python -m clients.kiosk transact --card var/pki/cards/yamada-hanako.json --pin 1234 \
        --type resident_record --copies 2 --out /tmp/certs
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import grpc
import uvloop
from grpc import aio

from clients.connect import describe
from clients.kiosk import Kiosk, Network, Printer, pb
from clients.pki.card import SoftwareCard

TYPES = {name.removeprefix("CERTIFICATE_TYPE_").lower(): value
         for name, value in pb.CertificateType.items() if value}


def _credentials(pki_dir: Path, kiosk_id: str, operator: str, kind: str, lg: str | None) -> grpc.ChannelCredentials:

    from clients.connect import machine_credentials
    from server.crypto.machine import MachineIdentity

    attributes = {"operator": operator, "kind": kind, **({"lg": lg} if lg else {})}
    return machine_credentials(pki_dir, MachineIdentity("kiosk", kiosk_id, attributes))


@click.group()
def main() -> None:
    """Kiosk simulator."""


@main.command()
@click.option("--target", default="127.0.0.1:50052", show_default=True,
              help="the mTLS listener(s), comma-separated (a kiosk is a machine principal)")
@click.option("--pki", "--pki-dir", "pki_dir", type=click.Path(path_type=Path), default=Path("var/pki"),
              show_default=True)
@click.option("--kiosk-id", default="kiosk-cli", show_default=True)
@click.option("--operator", default="seven", show_default=True, help="store operator")
@click.option("--kind", type=click.Choice(["convenience_store", "post_office", "city_hall"]),
              default="convenience_store", show_default=True)
@click.option("--lg", default=None, help="lgcode of the hall, for city_hall kiosks")
@click.option("--card", "card_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--pin", prompt=True, hide_input=True)
@click.option("--type", "certificate_type", type=click.Choice(sorted(TYPES)), default="resident_record",
              show_default=True)
@click.option("--copies", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--subject", default="", help="resident id of a household member (住民票 only)")
@click.option("--jam", type=click.FloatRange(0, 1), default=0.0, help="printer failure probability")
@click.option("--printer-delay", type=float, default=0.0, help="seconds per copy")
@click.option("--drop", type=click.FloatRange(0, 1), default=0.0, help="network drop probability per step")
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write printed PDFs here")
def transact(target, pki_dir, kiosk_id, operator, kind, lg, card_path, pin, certificate_type, copies, subject,
             jam, printer_delay, drop, seed, out) -> None:
    """Run one transaction and print a JSON summary (no personal data)."""

    async def run() -> dict:
        credentials = _credentials(pki_dir, kiosk_id, operator, kind, lg)
        channels = [aio.secure_channel(t.strip(), credentials) for t in target.split(",")]
        kiosk = Kiosk(kiosk_id, channels, printer=Printer(jam, printer_delay, seed), network=Network(drop, seed))
        try:
            order = pb.Order(certificate_type=TYPES[certificate_type], copies=copies, subject_resident_id=subject)
            result = await kiosk.transact(SoftwareCard.load(card_path), pin, order)
        finally:
            await kiosk.close()
            for channel in channels:
                await channel.close()
        if out:
            out.mkdir(parents=True, exist_ok=True)
            for doc in result.documents:
                if doc.copy_no in result.printed:
                    (out / f"{doc.serial}.pdf").write_bytes(doc.pdf)
        return {
            "kiosk_transaction_id": result.kiosk_transaction_id,
            "refusal": result.refusal.reason if result.refusal else None,
            "serials": [d.serial for d in result.documents],
            "verification_codes": [d.verification_code for d in result.documents],
            "printed": result.printed, "failed": result.failed,
            "total_yen": result.receipt.total_yen if result.receipt else 0,
            "reconnects": kiosk.reconnects,
        }

    try:
        summary = uvloop.run(run())
    except grpc.RpcError as error:  # a refusal as one readable line, not a traceback
        raise click.ClickException(describe(error)) from None
    click.echo(json.dumps(summary, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
