"""server.crypto.jpki against real certificates from the development card CA."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clients.pki import CardAuthority, CardHolder, SoftwareCard, card_not_after, fifth_birthday_after
from server.crypto.jpki import (
    CardTrust,
    CertificateRejected,
    decode_birth_date,
    encode_birth_date,
    era_digit,
    verify_signature,
)

NOW = datetime(2026, 12, 3, 3, 0, tzinfo=timezone.utc)
PIN, PASSWORD = "1234", "ABC123"
HOLDER = CardHolder(
    name="山田 花子",
    sex="2",
    birth_date=date(1990, 4, 10),
    address="東京都千代田区霞が関二丁目1番2号 ワンストップマンション101号室",
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CardAuthority:
    return CardAuthority.create(tmp_path_factory.mktemp("card-ca"), now=NOW - timedelta(days=30))


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> CardAuthority:
    # Same subject name as the trusted CA: only the signature tells them apart.
    return CardAuthority.create(tmp_path_factory.mktemp("foreign-ca"), now=NOW - timedelta(days=30))


@pytest.fixture(scope="module")
def card(ca: CardAuthority) -> SoftwareCard:
    return ca.issue_card(HOLDER, now=NOW - timedelta(days=1), pin=PIN, password=PASSWORD)


@pytest.fixture(scope="module")
def revoked_card(ca: CardAuthority) -> SoftwareCard:
    c = ca.issue_card(HOLDER, now=NOW - timedelta(days=1), pin=PIN, password=PASSWORD)
    ca.revoke(c.auth_certificate.serial_number, now=NOW)
    ca.revoke(c.sign_certificate.serial_number, now=NOW)
    return c


@pytest.fixture(scope="module")
def trust(ca: CardAuthority, revoked_card: SoftwareCard) -> CardTrust:
    return CardTrust([ca.certificate], [ca.crl(now=NOW)])


def reason(exc_info: pytest.ExceptionInfo[CertificateRejected]) -> str:
    return exc_info.value.reason


def test_auth_certificate_verifies_and_signature_checks(trust: CardTrust, card: SoftwareCard) -> None:
    nonce = secrets.token_bytes(32)
    verified = trust.verify(card.auth_certificate_der, usage="auth", now=NOW)
    verify_signature(verified, nonce, card.sign_with_auth_key(nonce, PIN))
    assert verified.usage == "auth"
    assert verified.holder is None
    assert verified.serial == card.auth_certificate.serial_number
    assert int(verified.serial_hex, 16) == verified.serial
    assert verified.issuer == "CN=Development JPKI Card CA,O=onestop-dev,C=JP"


def test_auth_certificate_carries_no_personal_data(card: SoftwareCard) -> None:
    cert = card.auth_certificate
    assert [a.oid for a in cert.subject] == [x509.NameOID.COMMON_NAME]
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert len(cn) == 20 and int(cn, 16) >= 0
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    der = card.auth_certificate_der
    for fact in (HOLDER.name, HOLDER.address, "19900410"):
        assert fact.encode() not in der
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.content_commitment


def test_holder_round_trips_through_signature_certificate(trust: CardTrust, card: SoftwareCard) -> None:
    verified = trust.verify(card.sign_certificate_der, usage="sign", now=NOW)
    assert verified.holder == HOLDER
    data = "申請 canonical bytes".encode()
    verify_signature(verified, data, card.sign_with_signature_key(data, PASSWORD))
    ku = card.sign_certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    # The name is a UTF-8 string inside the DER, not an escaped form.
    assert HOLDER.name.encode("utf-8") in card.sign_certificate_der


@pytest.mark.parametrize(
    ("born", "digit"),
    [
        (date(1911, 5, 1), "1"),
        (date(1912, 7, 30), "2"),
        (date(1926, 12, 24), "2"),
        (date(1926, 12, 25), "3"),
        (date(1985, 6, 15), "3"),
        (date(1989, 1, 7), "3"),
        (date(1989, 1, 8), "4"),
        (date(1995, 3, 20), "4"),
        (date(2019, 4, 30), "4"),
        (date(2019, 5, 1), "5"),
        (date(2020, 2, 29), "5"),
    ],
)
def test_era_digit_and_birth_date_encoding(born: date, digit: str) -> None:
    assert era_digit(born) == digit
    text = encode_birth_date(born)
    assert text == f"{digit}{born:%Y%m%d}"
    assert decode_birth_date(text) == born


def test_era_digit_in_a_real_certificate(ca: CardAuthority, trust: CardTrust) -> None:
    holder = CardHolder(name="令和 太郎", sex="1", birth_date=date(2020, 1, 15), address="大阪府大阪市北区1-1")
    c = ca.issue_card(holder, now=NOW, pin=PIN, password=PASSWORD)
    assert b"\x0c\x09520200115" in c.sign_certificate_der
    assert trust.verify(c.sign_certificate_der, usage="sign", now=NOW).holder == holder


@pytest.mark.parametrize(
    ("born", "issued", "expires"),
    [
        (date(1990, 4, 10), date(2026, 12, 3), date(2031, 4, 10)),
        (date(1990, 12, 31), date(2026, 12, 3), date(2030, 12, 31)),
        (date(1990, 12, 3), date(2026, 12, 3), date(2031, 12, 3)),  # issued on the birthday: it does not count
        (date(2000, 2, 29), date(2026, 12, 3), date(2031, 2, 28)),
        (date(2000, 2, 29), date(2027, 3, 1), date(2032, 2, 29)),
    ],
)
def test_fifth_birthday_after_issue(born: date, issued: date, expires: date) -> None:
    assert fifth_birthday_after(born, issued) == expires


def test_certificates_end_on_fifth_birthday(card: SoftwareCard) -> None:
    issued_jst = (NOW - timedelta(days=1)).astimezone(timezone(timedelta(hours=9))).date()
    for cert in (card.auth_certificate, card.sign_certificate):
        assert cert.not_valid_before_utc == NOW - timedelta(days=1)
        end_jst = cert.not_valid_after_utc.astimezone(timezone(timedelta(hours=9)))
        assert end_jst.date() == date(2031, 4, 10)
        assert end_jst.date() == fifth_birthday_after(HOLDER.birth_date, issued_jst)
    assert card.auth_certificate.not_valid_after_utc == card_not_after(HOLDER.birth_date, NOW - timedelta(days=1))


# --- every rejection reason from a real certificate ------------------------------------------


def test_foreign_ca_card_is_unknown_issuer(trust: CardTrust, foreign_ca: CardAuthority) -> None:
    foreign = foreign_ca.issue_card(HOLDER, now=NOW, pin=PIN, password=PASSWORD)
    assert foreign.auth_certificate.issuer == trust.anchors[0].subject  # same name, other key
    with pytest.raises(CertificateRejected) as e:
        trust.verify(foreign.auth_certificate_der, usage="auth", now=NOW)
    assert reason(e) == "UNKNOWN_ISSUER"


def test_tampered_certificate_is_unknown_issuer(trust: CardTrust, card: SoftwareCard) -> None:
    der = bytearray(card.auth_certificate_der)
    der[-1] ^= 0x01  # flip a bit of the signature
    with pytest.raises(CertificateRejected) as e:
        trust.verify(bytes(der), usage="auth", now=NOW)
    assert reason(e) == "UNKNOWN_ISSUER"


def test_expired(trust: CardTrust, ca: CardAuthority, card: SoftwareCard) -> None:
    after = card.auth_certificate.not_valid_after_utc + timedelta(seconds=1)
    fresh = trust.with_crl(ca.crl(now=after))  # a current CRL, so only the card's own expiry can fail it
    fresh.verify(card.auth_certificate_der, usage="auth", now=after - timedelta(seconds=2))
    with pytest.raises(CertificateRejected) as e:
        fresh.verify(card.auth_certificate_der, usage="auth", now=after)
    assert reason(e) == "CERT_EXPIRED"


def test_not_yet_valid(trust: CardTrust, card: SoftwareCard) -> None:
    with pytest.raises(CertificateRejected) as e:
        trust.verify(card.auth_certificate_der, usage="auth", now=NOW - timedelta(days=2))
    assert reason(e) == "CERT_NOT_YET_VALID"


def test_revoked(trust: CardTrust, revoked_card: SoftwareCard) -> None:
    for der, usage in ((revoked_card.auth_certificate_der, "auth"), (revoked_card.sign_certificate_der, "sign")):
        with pytest.raises(CertificateRejected) as e:
            trust.verify(der, usage=usage, now=NOW)  # type: ignore[arg-type]
        assert reason(e) == "CERT_REVOKED"


def test_revocation_needs_a_crl_that_lists_it(ca: CardAuthority, tmp_path: Path) -> None:
    c = ca.issue_card(HOLDER, now=NOW, pin=PIN, password=PASSWORD)
    before = CardTrust([ca.certificate], [ca.crl(now=NOW)])
    before.verify(c.auth_certificate_der, usage="auth", now=NOW)
    ca.revoke(c.auth_certificate.serial_number, now=NOW)
    after = before.with_crl(ca.crl(now=NOW + timedelta(minutes=1)))
    with pytest.raises(CertificateRejected) as e:
        after.verify(c.auth_certificate_der, usage="auth", now=NOW + timedelta(minutes=2))
    assert reason(e) == "CERT_REVOKED"
    before.verify(c.auth_certificate_der, usage="auth", now=NOW)  # with_crl left the original alone


def test_sign_certificate_used_to_sign_in(trust: CardTrust, card: SoftwareCard) -> None:
    with pytest.raises(CertificateRejected) as e:
        trust.verify(card.sign_certificate_der, usage="auth", now=NOW)
    assert reason(e) == "WRONG_CERTIFICATE_USAGE"


def test_auth_certificate_used_to_sign(trust: CardTrust, card: SoftwareCard) -> None:
    with pytest.raises(CertificateRejected) as e:
        trust.verify(card.auth_certificate_der, usage="sign", now=NOW)
    assert reason(e) == "WRONG_CERTIFICATE_USAGE"


def test_ca_certificate_is_not_a_card(trust: CardTrust, ca: CardAuthority) -> None:
    with pytest.raises(CertificateRejected) as e:
        trust.verify(ca.certificate.public_bytes(serialization.Encoding.DER), usage="auth", now=NOW)
    assert reason(e) == "WRONG_CERTIFICATE_USAGE"


def test_bad_signature_over_nonce(trust: CardTrust, card: SoftwareCard) -> None:
    nonce = secrets.token_bytes(32)
    verified = trust.verify(card.auth_certificate_der, usage="auth", now=NOW)
    good = card.sign_with_auth_key(nonce, PIN)
    with pytest.raises(CertificateRejected) as e:
        verify_signature(verified, secrets.token_bytes(32), good)  # signature over another nonce
    assert reason(e) == "BAD_SIGNATURE"
    # The signature key's signature does not pass for the authentication certificate either.
    with pytest.raises(CertificateRejected) as e:
        verify_signature(verified, nonce, card.sign_with_signature_key(nonce, PASSWORD))
    assert reason(e) == "BAD_SIGNATURE"


@pytest.mark.parametrize("junk", [b"", b"\x30\x03\x02\x01", b"not a certificate", "truncated"])
def test_malformed(trust: CardTrust, card: SoftwareCard, junk: bytes | str) -> None:
    der = card.auth_certificate_der[:200] if junk == "truncated" else junk
    with pytest.raises(CertificateRejected) as e:
        trust.verify(der, usage="auth", now=NOW)  # type: ignore[arg-type]
    assert reason(e) == "MALFORMED_CERTIFICATE"


def test_stale_crl(trust: CardTrust, card: SoftwareCard) -> None:
    # The card itself is fine two days on; only the CRL (next update after one day) is stale.
    with pytest.raises(CertificateRejected) as e:
        trust.verify(card.auth_certificate_der, usage="auth", now=NOW + timedelta(days=2))
    assert reason(e) == "CRL_UNAVAILABLE"


def test_no_crl_at_all(ca: CardAuthority, card: SoftwareCard) -> None:
    with pytest.raises(CertificateRejected) as e:
        CardTrust([ca.certificate]).verify(card.auth_certificate_der, usage="auth", now=NOW)
    assert reason(e) == "CRL_UNAVAILABLE"


def test_crl_from_a_foreign_ca_is_refused(trust: CardTrust, foreign_ca: CardAuthority) -> None:
    with pytest.raises(CertificateRejected) as e:
        trust.with_crl(foreign_ca.crl(now=NOW))
    assert reason(e) == "UNKNOWN_ISSUER"
    with pytest.raises(CertificateRejected) as e:
        CardTrust([trust.anchors[0]], [foreign_ca.crl(now=NOW)])
    assert reason(e) == "UNKNOWN_ISSUER"


def test_newer_crl_is_kept(ca: CardAuthority) -> None:
    c = ca.issue_card(HOLDER, now=NOW, pin=PIN, password=PASSWORD)
    old = ca.crl(now=NOW)
    ca.revoke(c.auth_certificate.serial_number, now=NOW)
    new = ca.crl(now=NOW + timedelta(hours=1))
    for order in ((old, new), (new, old)):
        t = CardTrust([ca.certificate], order)
        with pytest.raises(CertificateRejected) as e:
            t.verify(c.auth_certificate_der, usage="auth", now=NOW + timedelta(hours=2))
        assert reason(e) == "CERT_REVOKED"
    t = CardTrust([ca.certificate], [new]).with_crl(old)
    with pytest.raises(CertificateRejected) as e:
        t.verify(c.auth_certificate_der, usage="auth", now=NOW + timedelta(hours=2))
    assert reason(e) == "CERT_REVOKED"


def test_from_files(ca: CardAuthority, card: SoftwareCard, tmp_path: Path) -> None:
    crl = tmp_path / "crl.der"
    crl.write_bytes(ca.crl(now=NOW))
    t = CardTrust.from_files([ca.directory / "card-ca.pem"], [crl])
    assert t.verify(card.sign_certificate_der, usage="sign", now=NOW).holder == HOLDER


def test_naive_now_is_refused(trust: CardTrust, card: SoftwareCard) -> None:
    with pytest.raises(ValueError):
        trust.verify(card.auth_certificate_der, usage="auth", now=NOW.replace(tzinfo=None))

