"""The platform's own CA: the gRPC server's TLS certificate and machine principals' client certificates."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients.pki._files import cert_pem, key_pem, load_key, utc, write_atomic
from server.crypto.machine import MachineIdentity

PLATFORM_CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onestop-dev"),
        x509.NameAttribute(NameOID.COMMON_NAME, "onestop Development Platform CA"),
    ]
)
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _ku(*, leaf: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=leaf,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not leaf,
        crl_sign=not leaf,
        encipher_only=False,
        decipher_only=False,
    )


class PlatformAuthority:
    """EC P-256 CA (ECDSA-SHA256) whose certificates the server trusts for mTLS."""

    def __init__(self, directory: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = Path(directory)
        self.certificate = certificate
        self._key = key

    @property
    def certificate_pem(self) -> bytes:
        return cert_pem(self.certificate)

    @classmethod
    def create(cls, directory: str | Path, *, now: datetime, years: int = 10) -> PlatformAuthority:
        """A new CA written to `directory`/ca.pem and ca.key; overwrites an existing one."""
        directory = Path(directory)
        now = utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(PLATFORM_CA_NAME)
            .issuer_name(PLATFORM_CA_NAME)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ku(leaf=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / CA_KEY_FILE, key_pem(key), private=True)
        write_atomic(directory / CA_CERT_FILE, cert_pem(cert))
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: str | Path) -> PlatformAuthority:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        key = load_key(directory / CA_KEY_FILE)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / CA_KEY_FILE} is not an EC key")
        return cls(directory, cert, key)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / CA_CERT_FILE).is_file() and (Path(directory) / CA_KEY_FILE).is_file()

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether `cert` was signed by this CA."""
        try:
            cert.verify_directly_issued_by(self.certificate)
        except Exception:
            return False
        return True

    def issue_server_certificate(
        self, hosts: Iterable[str] = DEFAULT_HOSTS, *, now: datetime, days: int = 365
    ) -> tuple[bytes, bytes]:
        """(cert_pem, key_pem) for a TLS server answering on `hosts` (names or IP literals)."""
        hosts = list(hosts)
        if not hosts:
            raise ValueError("at least one host is needed")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
            names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            now,
            days,
        )

    def issue_machine_certificate(
        self, identity: MachineIdentity, *, now: datetime, days: int = 365
    ) -> tuple[bytes, bytes]:
        """(cert_pem, key_pem) for a machine principal; the identity is the URI SAN."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onestop-dev"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.id[:64]),
            ]
        )
        return self._issue(
            subject,
            [x509.UniformResourceIdentifier(identity.to_uri())],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            now,
            days,
        )

    def _issue(
        self,
        subject: x509.Name,
        names: list[x509.GeneralName],
        eku: x509.ObjectIdentifier,
        now: datetime,
        days: int,
    ) -> tuple[bytes, bytes]:
        now = utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # A little slack so a peer whose clock is slightly behind still accepts a fresh cert.
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ku(leaf=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert_pem(cert), key_pem(key)
