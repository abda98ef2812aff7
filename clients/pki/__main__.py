"""`python -m clients.pki`: create the development PKI, machine certificates and software cards."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date, datetime, timezone
from pathlib import Path

import click

from clients.pki.card import CardError, CardLocked, InvalidPinFormat, SoftwareCard, WrongPin
from clients.pki.layout import DevPki
from server.crypto.jpki import SEXES, CardHolder
from server.crypto.machine import ROLES, MachineIdentity


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _load_card(path: Path) -> SoftwareCard:
    try:
        return SoftwareCard.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot read card {path}: {exc}") from exc


@click.group()
def cli() -> None:
    """Development PKI: platform CA, machine certificates, JPKI-like card CA and software cards."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create (or reuse) the PKI layout in DIRECTORY."""
    pki = DevPki.ensure(directory, now=_now())
    click.echo(f"platform CA   {pki.ca_path}")
    click.echo(f"server cert   {pki.server_cert_path}")
    click.echo(f"card CA       {pki.card_ca_path}")
    click.echo(f"card CRL      {pki.crl_path}")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--role", required=True, type=click.Choice(sorted(ROLES)))
@click.option("--id", "id_", required=True, help="municipality: 6-digit code; others: any id")
@click.option("--attr", "attrs", multiple=True, metavar="K=V", help="identity attribute, repeatable")
def machine(directory: Path, role: str, id_: str, attrs: tuple[str, ...]) -> None:
    """Issue (or reuse) a machine client certificate."""
    attributes: dict[str, str] = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--attr")
        attributes[key] = value
    try:
        identity = MachineIdentity(role=role, id=id_, attributes=attributes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    cert_path, key_path = DevPki.ensure(directory, now=_now()).machine(identity)
    click.echo(f"{identity.to_uri()}\ncert {cert_path}\nkey  {key_path}")


@cli.group()
def card() -> None:
    """Software My Number cards."""


@card.command("issue")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True)
@click.option("--sex", required=True, type=click.Choice(sorted(SEXES)), help="1 male, 2 female, 3 other")
@click.option("--birth-date", required=True, help="YYYY-MM-DD")
@click.option("--address", required=True)
@click.option("--pin", required=True, help="4 digits")
@click.option("--password", required=True, help="6-16 of A-Z and 0-9, at least one of each")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="default: DIRECTORY/cards/<serial>.json")
def card_issue(
    directory: Path, name: str, sex: str, birth_date: str, address: str, pin: str, password: str, out: Path | None
) -> None:
    """Issue a card from the card CA in DIRECTORY."""
    try:
        holder = CardHolder(name=name, sex=sex, birth_date=date.fromisoformat(birth_date), address=address)
    except ValueError as exc:
        raise click.UsageError(f"holder: {exc}") from exc
    pki = DevPki.ensure(directory, now=_now())
    try:
        new = pki.card_ca.issue_card(holder, now=_now(), pin=pin, password=password)
    except InvalidPinFormat as exc:
        raise click.UsageError(str(exc)) from exc
    path = out or pki.cards_dir / f"{new.auth_certificate.serial_number:x}.json"
    new.save(path)
    click.echo(f"card {path} (auth serial {new.auth_certificate.serial_number:x}, "
               f"valid until {new.auth_certificate.not_valid_after_utc:%Y-%m-%d})")


@card.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pin", help="sign with the authentication key (sign-in challenge)")
@click.option("--password", help="sign with the signature key instead")
@click.option("--data-hex", required=True, help="bytes to sign, hex")
def card_sign(file: Path, pin: str | None, password: str | None, data_hex: str) -> None:
    """Sign DATA-HEX with the card and print the signature in base64."""
    if (pin is None) == (password is None):
        raise click.UsageError("give exactly one of --pin and --password")
    try:
        data = binascii.unhexlify(data_hex.strip())
    except (binascii.Error, ValueError) as exc:
        raise click.BadParameter(f"not hex: {exc}", param_hint="--data-hex") from exc
    c = _load_card(file)
    try:
        sig = c.sign_with_auth_key(data, pin) if pin is not None else c.sign_with_signature_key(data, password or "")
    except WrongPin as exc:
        raise click.ClickException(
            f"wrong {'PIN' if exc.which == 'auth' else 'password'}: "
            + (f"{exc.remaining} {'try' if exc.remaining == 1 else 'tries'} left" if exc.remaining else "the key is now locked")
        ) from exc
    except (CardLocked, InvalidPinFormat, CardError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(base64.b64encode(sig).decode())


@card.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def card_show(file: Path) -> None:
    """Print a card's certificates, holder and counters as JSON (no keys, no secrets)."""
    c = _load_card(file)
    holder = c.holder
    out = {
        "auth": {
            "subject": c.auth_certificate.subject.rfc4514_string(),
            "serial": f"{c.auth_certificate.serial_number:x}",
            "not_after": c.auth_certificate.not_valid_after_utc.isoformat(),
            "pin_tries_left": c.pin_tries_left,
            "certificate_der_b64": base64.b64encode(c.auth_certificate_der).decode(),
        },
        "sign": {
            "subject": c.sign_certificate.subject.rfc4514_string(),
            "serial": f"{c.sign_certificate.serial_number:x}",
            "not_after": c.sign_certificate.not_valid_after_utc.isoformat(),
            "password_tries_left": c.password_tries_left,
        },
        "holder": None
        if holder is None
        else {
            "name": holder.name,
            "sex": holder.sex,
            "birth_date": holder.birth_date.isoformat(),
            "address": holder.address,
        },
    }
    click.echo(json.dumps(out, ensure_ascii=False, indent=2))


@card.command("revoke")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def card_revoke(directory: Path, file: Path) -> None:
    """Revoke both certificates of card FILE and rewrite DIRECTORY/card-crl.der."""
    pki = DevPki.ensure(directory, now=_now())
    try:
        pki.revoke_card(_load_card(file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked; CRL {pki.crl_path}")


if __name__ == "__main__":
    cli()
