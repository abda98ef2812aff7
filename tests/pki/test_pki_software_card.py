"""Software card: PIN and password rules, lock-outs, persistence."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from clients.pki import (
    CardAuthority,
    CardHolder,
    CardLocked,
    InvalidPinFormat,
    SoftwareCard,
    WrongPin,
    check_password_format,
    check_pin_format,
)

NOW = datetime(2026, 12, 3, 3, 0, tzinfo=timezone.utc)
PIN, PASSWORD = "4821", "SECRET2026"
HOLDER = CardHolder(name="佐藤 一郎", sex="1", birth_date=date(1985, 6, 15), address="北海道札幌市中央区北1条西2丁目")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CardAuthority:
    return CardAuthority.create(tmp_path_factory.mktemp("card-ca"), now=NOW)


@pytest.fixture(scope="module")
def card_file(ca: CardAuthority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cards") / "original.json"
    ca.issue_card(HOLDER, now=NOW, pin=PIN, password=PASSWORD).save(path)
    return path


@pytest.fixture
def card(card_file: Path, tmp_path: Path) -> SoftwareCard:
    """A fresh copy per test so counters start at zero without new RSA keys."""
    copy = tmp_path / "card.json"
    copy.write_bytes(card_file.read_bytes())
    return SoftwareCard.load(copy)


def _verifies(card: SoftwareCard, data: bytes, sig: bytes) -> bool:
    card.auth_certificate.public_key().verify(sig, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    return True


def test_pin_locks_after_three_wrong_tries(card: SoftwareCard) -> None:
    remaining = []
    for wrong in ("0000", "1111", "2222"):
        with pytest.raises(WrongPin) as e:
            card.sign_with_auth_key(b"nonce", wrong)
        remaining.append(e.value.remaining)
    assert remaining == [2, 1, 0]
    with pytest.raises(CardLocked) as locked:
        card.sign_with_auth_key(b"nonce", PIN)  # even the right PIN no longer works
    assert locked.value.which == "auth"
    # The signature key has its own counter.
    card.sign_with_signature_key(b"doc", PASSWORD)


def test_success_resets_the_pin_counter(card: SoftwareCard) -> None:
    for _ in range(2):
        with pytest.raises(WrongPin):
            card.sign_with_auth_key(b"n", "9999")
    assert _verifies(card, b"n", card.sign_with_auth_key(b"n", PIN))
    assert card.pin_tries_left == 3
    for expected in (2, 1):
        with pytest.raises(WrongPin) as e:
            card.sign_with_auth_key(b"n", "9999")
        assert e.value.remaining == expected
    card.sign_with_auth_key(b"n", PIN)  # still unlocked: the counter had been reset


def test_password_locks_after_five_wrong_tries(card: SoftwareCard) -> None:
    for expected in (4, 3, 2, 1, 0):
        with pytest.raises(WrongPin) as e:
            card.sign_with_signature_key(b"doc", "WRONG1")
        assert (e.value.remaining, e.value.which) == (expected, "sign")
    with pytest.raises(CardLocked) as locked:
        card.sign_with_signature_key(b"doc", PASSWORD)
    assert locked.value.which == "sign"
    card.sign_with_auth_key(b"n", PIN)  # the authentication key is unaffected


def test_lock_survives_reload(card: SoftwareCard) -> None:
    assert card.path is not None
    for _ in range(3):
        with pytest.raises(WrongPin):
            card.sign_with_auth_key(b"n", "0000")
    again = SoftwareCard.load(card.path)
    with pytest.raises(CardLocked):
        again.sign_with_auth_key(b"n", PIN)


def test_partial_failures_survive_reload(card: SoftwareCard) -> None:
    with pytest.raises(WrongPin):
        card.sign_with_signature_key(b"d", "NOPE12")
    assert card.path is not None
    assert SoftwareCard.load(card.path).password_tries_left == 4


@pytest.mark.parametrize("pin", ["123", "12345", "abcd", "12a4", "", " 123", "１２３４"])
def test_pin_format(card: SoftwareCard, pin: str) -> None:
    with pytest.raises(InvalidPinFormat):
        check_pin_format(pin)
    with pytest.raises(InvalidPinFormat):
        card.sign_with_auth_key(b"n", pin)
    assert card.pin_tries_left == 3  # a malformed PIN does not use up a try


@pytest.mark.parametrize(
    "password",
    ["ABC12", "A" * 16 + "1", "ABCDEF", "123456", "abc123", "ABC-123", "ABC 123", "ＡＢＣ１２３"],
)
def test_password_format_rejects(card: SoftwareCard, password: str) -> None:
    with pytest.raises(InvalidPinFormat):
        check_password_format(password)
    with pytest.raises(InvalidPinFormat):
        card.sign_with_signature_key(b"d", password)
    assert card.password_tries_left == 5


@pytest.mark.parametrize("password", ["ABC123", "A1B2C3D4E5F6G7H8", "1AAAAA", "Z99999"])
def test_password_format_accepts(password: str) -> None:
    check_password_format(password)


def test_issue_refuses_bad_pin_or_password(ca: CardAuthority) -> None:
    with pytest.raises(InvalidPinFormat):
        ca.issue_card(HOLDER, now=NOW, pin="12345", password=PASSWORD)
    with pytest.raises(InvalidPinFormat):
        ca.issue_card(HOLDER, now=NOW, pin=PIN, password="abc123")


def test_file_holds_no_plaintext_secret(card_file: Path) -> None:
    text = card_file.read_text()
    assert PIN not in text and PASSWORD not in text
    doc = json.loads(text)
    # Salted scrypt; the work factor is modest on purpose (the keys beside it are not encrypted).
    assert doc["auth"]["secret"]["scrypt"]["n"] >= 2**10
    assert doc["auth"]["secret"]["hash"] and doc["sign"]["secret"]["hash"]
    assert doc["auth"]["secret"]["salt"] != doc["sign"]["secret"]["salt"]
    assert card_file.stat().st_mode & 0o077 == 0


def test_reloaded_card_signs_with_same_keys(card: SoftwareCard, card_file: Path) -> None:
    original = SoftwareCard.load(card_file)
    assert original.auth_certificate_der == card.auth_certificate_der
    assert original.sign_certificate_der == card.sign_certificate_der
    assert card.holder == HOLDER
    assert _verifies(card, b"challenge", card.sign_with_auth_key(b"challenge", PIN))
