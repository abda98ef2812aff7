"""DevPki layout, platform certificates, machine identities and the CLI."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID

from clients.pki import CardHolder, DevPki, MachineIdentity, PlatformAuthority, SoftwareCard
from clients.pki.__main__ import cli
from server.crypto.jpki import CardTrust, CertificateRejected
from server.crypto.machine import identity_from_pem

NOW = datetime(2026, 12, 3, 3, 0, tzinfo=timezone.utc)
KIOSK = MachineIdentity(
    role="kiosk", id="7-11-000123", attributes={"operator": "seven-eleven", "kind": "convenience_store"}
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return DevPki.ensure(tmp_path_factory.mktemp("pki"), now=NOW)


def test_ensure_creates_the_layout(pki: DevPki) -> None:
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "card-ca/card-ca.pem", "card-crl.der"):
        assert (pki.root / name).is_file(), name
    assert (pki.root / "machines").is_dir()
    assert (pki.root / "ca.key").stat().st_mode & 0o077 == 0
    ca = x509.load_pem_x509_certificate((pki.root / "ca.pem").read_bytes())
    assert ca.subject.rfc4514_string() == "CN=onestop Development Platform CA,O=onestop-dev"
    crl = x509.load_der_x509_crl(pki.crl_path.read_bytes())
    assert len(crl) == 0 and crl.is_signature_valid(pki.card_ca.certificate.public_key())  # type: ignore[arg-type]


def test_ensure_twice_reuses_everything(pki: DevPki) -> None:
    files = ("ca.pem", "ca.key", "server.pem", "server.key", "card-ca/card-ca.pem", "card-ca/card-ca.key", "card-crl.der")
    before = {n: (pki.root / n).read_bytes() for n in files}
    again = DevPki.ensure(pki.root, now=NOW + timedelta(hours=1))
    assert {n: (pki.root / n).read_bytes() for n in files} == before
    assert again.card_ca.certificate == pki.card_ca.certificate
    assert again.platform.certificate == pki.platform.certificate


def test_server_certificate(pki: DevPki) -> None:
    cert = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    cert.verify_directly_issued_by(pki.platform.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    "identity",
    [
        KIOSK,
        MachineIdentity(role="municipality", id="131016"),
        MachineIdentity(role="kiosk", id="hall 1", attributes={"kind": "city_hall", "lg": "131016", "operator": "千代田区"}),
        MachineIdentity(role="shop", id="shop/42&x=1", attributes={"lg": "011002"}),
        MachineIdentity(role="partner", id="airline-a", attributes={"a": "x=y&z"}),
    ],
)
def test_identity_uri_round_trip(identity: MachineIdentity) -> None:
    uri = identity.to_uri()
    assert uri.startswith(f"onestop://{identity.role}/")
    assert MachineIdentity.from_uri(uri) == identity
    assert hash(MachineIdentity.from_uri(uri)) == hash(identity)


def test_uri_format_sorted_keys() -> None:
    assert KIOSK.to_uri() == "onestop://kiosk/7-11-000123?kind=convenience_store&operator=seven-eleven"


@pytest.mark.parametrize(
    "uri",
    ["https://kiosk/1", "onestop://robot/1", "onestop://kiosk/", "onestop://kiosk/a/b", "onestop://municipality/12"],
)
def test_bad_identity_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        MachineIdentity.from_uri(uri)


def test_machine_certificate_carries_identity(pki: DevPki) -> None:
    cert_path, key_path = pki.machine(KIOSK)
    assert cert_path.name == "kiosk-7-11-000123.pem" and key_path.is_file()
    pem = cert_path.read_bytes()
    assert identity_from_pem(pem) == KIOSK
    assert identity_from_pem(pem.decode()) == KIOSK
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(pki.platform.certificate)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Reused on the next call, reissued when the identity's attributes change.
    assert pki.machine(KIOSK) == (cert_path, key_path) and cert_path.read_bytes() == pem
    moved = MachineIdentity(role="kiosk", id=KIOSK.id, attributes={"operator": "lawson", "kind": "convenience_store"})
    pki.machine(moved)
    assert identity_from_pem(cert_path.read_bytes()) == moved


def test_identity_from_pem_without_identity(pki: DevPki) -> None:
    assert identity_from_pem(pki.server_cert_path.read_bytes()) is None
    assert identity_from_pem(b"garbage") is None
    assert identity_from_pem(pki.ca_path.read_text()) is None


def test_platform_authority_reload(pki: DevPki) -> None:
    loaded = PlatformAuthority.load(pki.root)
    cert_pem, _ = loaded.issue_machine_certificate(MachineIdentity(role="operator", id="ops-1"), now=NOW)
    x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(pki.platform.certificate)


def test_issue_and_revoke_card(pki: DevPki) -> None:
    holder = CardHolder(name="鈴木 次郎", sex="3", birth_date=date(1995, 3, 20), address="福岡県福岡市中央区天神1-1")
    path = pki.issue_card(holder, "1234", "PASS1234", "suzuki")
    assert path == pki.root / "cards" / "suzuki.json"
    card = SoftwareCard.load(path)
    trust = CardTrust.from_files([pki.card_ca_path], [pki.crl_path])
    assert trust.verify(card.sign_certificate_der, usage="sign", now=NOW).holder == holder
    pki.revoke_card(card)
    trust = CardTrust.from_files([pki.card_ca_path], [pki.crl_path])
    with pytest.raises(CertificateRejected) as e:
        trust.verify(card.auth_certificate_der, usage="auth", now=NOW)
    assert e.value.reason == "CERT_REVOKED"
    with pytest.raises(ValueError):
        pki.issue_card(holder, "1234", "PASS1234", "../escape")


def test_cli_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    d = tmp_path / "pki"
    r = runner.invoke(cli, ["init", str(d)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["machine", str(d), "--role", "municipality", "--id", "131016", "--attr", "name=chiyoda"])
    assert r.exit_code == 0, r.output
    assert identity_from_pem((d / "machines" / "municipality-131016.pem").read_bytes()) == MachineIdentity(
        role="municipality", id="131016", attributes={"name": "chiyoda"}
    )
    card_path = tmp_path / "card.json"
    r = runner.invoke(
        cli,
        ["card", "issue", str(d), "--name", "田中 三郎", "--sex", "1", "--birth-date", "1985-06-15",
         "--address", "東京都千代田区1-1", "--pin", "1234", "--password", "ABC123", "--out", str(card_path)],
    )
    assert r.exit_code == 0, r.output
    shown = json.loads(runner.invoke(cli, ["card", "show", str(card_path)]).output)
    assert shown["holder"]["name"] == "田中 三郎" and shown["auth"]["pin_tries_left"] == 3

    r = runner.invoke(cli, ["card", "sign", str(card_path), "--pin", "1234", "--data-hex", "00ff10"])
    assert r.exit_code == 0, r.output
    card = SoftwareCard.load(card_path)
    card.auth_certificate.public_key().verify(  # type: ignore[union-attr,call-arg]
        base64.b64decode(r.output.strip()), bytes.fromhex("00ff10"), padding.PKCS1v15(), hashes.SHA256()
    )
    r = runner.invoke(cli, ["card", "sign", str(card_path), "--pin", "9999", "--data-hex", "00"])
    assert r.exit_code != 0 and "2 tries left" in r.output
    r = runner.invoke(cli, ["card", "sign", str(card_path), "--pin", "12", "--data-hex", "00"])
    assert r.exit_code != 0 and "4 digits" in r.output

    r = runner.invoke(cli, ["card", "revoke", str(d), str(card_path)])
    assert r.exit_code == 0, r.output
    crl = x509.load_der_x509_crl((d / "card-crl.der").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(card.auth_certificate.serial_number) is not None
