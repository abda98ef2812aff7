"""CardTrust remembers what a certificate's bytes decide (parse, chain, usage, holder), never a
verdict on time or revocation: those are checked on every call."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from clients.pki import CardAuthority, CardHolder
from server.crypto import jpki
from server.crypto.jpki import CardTrust, CertificateRejected

NOW = datetime(2026, 12, 3, 3, 0, tzinfo=timezone.utc)
PIN, PASSWORD = "1234", "ABC123"
HOLDER = CardHolder(name="山田 花子", sex="2", birth_date=date(1990, 4, 10), address="東京都千代田区霞が関二丁目1番2号")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CardAuthority:
    return CardAuthority.create(tmp_path_factory.mktemp("card-ca"), now=NOW - timedelta(days=30))


def _card(ca: CardAuthority):
    return ca.issue_card(HOLDER, now=NOW - timedelta(days=1), pin=PIN, password=PASSWORD)


def _reason(call) -> str:
    with pytest.raises(CertificateRejected) as error:
        call()
    return error.value.reason


def test_a_remembered_card_is_still_refused_once_revoked_expired_or_misused(ca: CardAuthority) -> None:
    card = _card(ca)
    der = card.auth_certificate_der
    trust = CardTrust([ca.certificate], [ca.crl(now=NOW)])
    first = trust.verify(der, usage="auth", now=NOW)
    assert trust.verify(der, usage="auth", now=NOW) == first
    assert first.serial == card.auth_certificate.serial_number and first.usage == "auth"

    ca.revoke(card.auth_certificate.serial_number, now=NOW)
    revoked = trust.with_crl(ca.crl(now=NOW + timedelta(minutes=1)))
    assert _reason(lambda: revoked.verify(der, usage="auth", now=NOW + timedelta(minutes=2))) == "CERT_REVOKED"
    assert trust.verify(der, usage="auth", now=NOW) == first  # the older trust holds the older CRL

    after = card.auth_certificate.not_valid_after_utc + timedelta(seconds=1)
    assert _reason(lambda: trust.verify(der, usage="auth", now=after)) == "CERT_EXPIRED"
    assert _reason(lambda: trust.verify(der, usage="auth", now=NOW - timedelta(days=2))) == "CERT_NOT_YET_VALID"
    for _ in range(2):  # a remembered usage refusal is raised afresh each time
        assert _reason(lambda: trust.verify(der, usage="sign", now=NOW)) == "WRONG_CERTIFICATE_USAGE"


def test_signature_certificate_keeps_its_holder(ca: CardAuthority) -> None:
    card = _card(ca)
    trust = CardTrust([ca.certificate], [ca.crl(now=NOW)])
    for _ in range(2):
        assert trust.verify(card.sign_certificate_der, usage="sign", now=NOW).holder == HOLDER


def test_only_certificates_an_anchor_signed_are_remembered(ca: CardAuthority, tmp_path) -> None:
    foreign = CardAuthority.create(tmp_path / "foreign", now=NOW - timedelta(days=30))
    stranger = foreign.issue_card(HOLDER, now=NOW - timedelta(days=1), pin=PIN, password=PASSWORD)
    trust = CardTrust([ca.certificate], [ca.crl(now=NOW)])
    for _ in range(2):
        assert _reason(lambda: trust.verify(stranger.auth_certificate_der, usage="auth", now=NOW)) == "UNKNOWN_ISSUER"
    assert _reason(lambda: trust.verify(b"\x30\x03junk", usage="auth", now=NOW)) == "MALFORMED_CERTIFICATE"
    trust.warm(b"\x30\x03junk")  # never raises: verify refuses
    trust.warm(stranger.auth_certificate_der)
    assert trust._parsed == {}


def test_memory_is_bounded_oldest_first(ca: CardAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jpki, "MAX_REMEMBERED_CERTIFICATES", 2)
    cards = [_card(ca) for _ in range(3)]
    trust = CardTrust([ca.certificate], [ca.crl(now=NOW)])
    for card in cards:
        trust.warm(card.auth_certificate_der)
    assert list(trust._parsed) == [cards[1].auth_certificate_der, cards[2].auth_certificate_der]
    # shared by the copies a new CRL makes, and a forgotten card still verifies
    fresh = trust.with_crl(ca.crl(now=NOW))
    assert fresh.verify(cards[0].auth_certificate_der, usage="auth", now=NOW).serial == \
        cards[0].auth_certificate.serial_number
    assert list(trust._parsed) == [cards[2].auth_certificate_der, cards[0].auth_certificate_der]
