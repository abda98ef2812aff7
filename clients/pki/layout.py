"""The development PKI directory the server and clients share (by default `var/pki`).

    ca.pem, ca.key          platform CA (mTLS)
    server.pem, server.key  the gRPC server's certificate
    card-ca/                card CA (card-ca.pem, card-ca.key, revoked.json)
    card-crl.der            the card CA's current CRL
    machines/<role>-<id>.pem/.key
    cards/<name>.json       software cards
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from clients.pki._files import utc, write_atomic
from clients.pki.card import CardAuthority, SoftwareCard
from clients.pki.platform import PlatformAuthority
from server.crypto.jpki import CardHolder
from server.crypto.machine import MachineIdentity, identity_from_pem

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


@dataclass
class DevPki:
    """Handle on a development PKI directory; build one with DevPki.ensure."""

    root: Path
    platform: PlatformAuthority
    card_ca: CardAuthority
    now: datetime

    ca_path = property(lambda self: self.root / "ca.pem")
    server_cert_path = property(lambda self: self.root / "server.pem")
    server_key_path = property(lambda self: self.root / "server.key")
    card_ca_dir = property(lambda self: self.root / "card-ca")
    card_ca_path = property(lambda self: self.root / "card-ca" / "card-ca.pem")
    crl_path = property(lambda self: self.root / "card-crl.der")
    machines_dir = property(lambda self: self.root / "machines")
    cards_dir = property(lambda self: self.root / "cards")

    @classmethod
    def ensure(cls, pki_dir: str | Path, *, now: datetime) -> DevPki:
        """Create what is missing under `pki_dir`, reuse the rest; a second call changes nothing.

        The CRL is re-signed only when it is missing or out of date at `now`.
        """
        root = Path(pki_dir)
        now = utc(now)
        root.mkdir(parents=True, exist_ok=True)

        new_platform = not PlatformAuthority.exists(root)
        platform = PlatformAuthority.create(root, now=now) if new_platform else PlatformAuthority.load(root)

        card_dir = root / "card-ca"
        new_card_ca = not CardAuthority.exists(card_dir)
        card_ca = CardAuthority.create(card_dir, now=now) if new_card_ca else CardAuthority.load(card_dir)

        pki = cls(root, platform, card_ca, now)
        pki.machines_dir.mkdir(exist_ok=True)

        if new_platform or not pki._server_cert_usable(now):
            cert, key = platform.issue_server_certificate(now=now)
            write_atomic(pki.server_key_path, key, private=True)
            write_atomic(pki.server_cert_path, cert)

        if new_card_ca or not pki._crl_usable(now):
            pki.refresh_crl(now=now)
        return pki

    def _server_cert_usable(self, now: datetime) -> bool:
        if not (self.server_cert_path.is_file() and self.server_key_path.is_file()):
            return False
        cert = x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
        return self.platform.issued(cert) and now < cert.not_valid_after_utc

    def _crl_usable(self, now: datetime) -> bool:
        if not self.crl_path.is_file():
            return False
        try:
            crl = x509.load_der_x509_crl(self.crl_path.read_bytes())
        except ValueError:
            return False
        return (
            crl.issuer == self.card_ca.certificate.subject
            and crl.is_signature_valid(self.card_ca.certificate.public_key())  # type: ignore[arg-type]
            and crl.next_update_utc is not None
            and crl.next_update_utc > now
        )

    def refresh_crl(self, *, now: datetime | None = None) -> bytes:
        """Re-sign the card CRL (all revocations so far) into card-crl.der; returns its DER."""
        der = self.card_ca.crl(now=utc(now or self.now))
        write_atomic(self.crl_path, der)
        return der

    def machine(self, identity: MachineIdentity, *, now: datetime | None = None) -> tuple[Path, Path]:
        """(cert_path, key_path) for `identity` under machines/, issued on first use, then reused."""
        now = utc(now or self.now)
        stem = f"{identity.role}-{_safe(identity.id)}"
        cert_path, key_path = self.machines_dir / f"{stem}.pem", self.machines_dir / f"{stem}.key"
        if cert_path.is_file() and key_path.is_file():
            pem = cert_path.read_bytes()
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError:
                cert = None
            if (
                cert is not None
                and identity_from_pem(pem) == identity
                and self.platform.issued(cert)
                and now < cert.not_valid_after_utc
            ):
                return cert_path, key_path
        cert_pem, key_pem = self.platform.issue_machine_certificate(identity, now=now)
        self.machines_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(key_path, key_pem, private=True)
        write_atomic(cert_path, cert_pem)
        return cert_path, key_path

    def issue_card(
        self,
        holder: CardHolder,
        pin: str,
        password: str,
        name_for_file: str,
        *,
        now: datetime | None = None,
    ) -> Path:
        """Issue a card for `holder` and save it as cards/<name_for_file>.json."""
        if not _FILE_NAME.fullmatch(name_for_file):
            raise ValueError(f"card file name {name_for_file!r}: use letters, digits, '.', '_', '-'")
        card = self.card_ca.issue_card(holder, now=utc(now or self.now), pin=pin, password=password)
        path = self.cards_dir / f"{name_for_file}.json"
        card.save(path)
        return path

    def revoke_card(self, card: SoftwareCard | str | Path, *, now: datetime | None = None) -> None:
        """Revoke both certificates of `card` (a card or its file) and rewrite card-crl.der."""
        if not isinstance(card, SoftwareCard):
            card = SoftwareCard.load(card)
        now = utc(now or self.now)
        for cert in (card.auth_certificate, card.sign_certificate):
            try:
                cert.verify_directly_issued_by(self.card_ca.certificate)
            except Exception as exc:
                raise ValueError("the card was not issued by this card CA") from exc
            self.card_ca.revoke(cert.serial_number, now=now)
        self.refresh_crl(now=now)
