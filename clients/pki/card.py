"""A JPKI-shaped development card CA (like J-LIS) and software cards with PIN/password counters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients.pki._files import cert_pem, key_pem, load_key, utc, write_atomic
from server.crypto.jpki import (
    AUTH_POLICY_OID,
    SIGN_POLICY_OID,
    CardHolder,
    holder_from_certificate,
    holder_other_names,
)

JST = ZoneInfo("Asia/Tokyo")
CARD_CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onestop-dev"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Development JPKI Card CA"),
    ]
)
CA_CERT_FILE = "card-ca.pem"
CA_KEY_FILE = "card-ca.key"
REVOKED_FILE = "revoked.json"

MAX_PIN_TRIES = 3
MAX_PASSWORD_TRIES = 5
_PIN = re.compile(r"[0-9]{4}")
_PASSWORD = re.compile(r"(?=.*[A-Z])(?=.*[0-9])[A-Z0-9]{6,16}")
_CARD_FORMAT = "onestop-software-card/1"

Which = Literal["auth", "sign"]


# --- errors ----------------------------------------------------------------------------------


class CardError(Exception):
    """Base of the software card's refusals."""


class InvalidPinFormat(CardError, ValueError):
    """The PIN (4 digits) or signing password (6-16 of A-Z0-9, both kinds) is badly formed; no try is used."""

    def __init__(self, which: Which, message: str) -> None:
        super().__init__(message)
        self.which = which


class WrongPin(CardError):
    """Wrong PIN or password; `remaining` tries are left before the key locks (0: now locked)."""

    def __init__(self, remaining: int, which: Which = "auth") -> None:
        what = "PIN" if which == "auth" else "password"
        left = f"{remaining} {'try' if remaining == 1 else 'tries'} left"
        super().__init__(f"wrong {what}, {left}" if remaining else f"wrong {what}, the key is now locked")
        self.remaining = remaining
        self.which = which


class CardLocked(CardError):
    """The key is locked after too many wrong tries (a municipality resets it on a real card)."""

    def __init__(self, which: Which) -> None:
        super().__init__(f"the {'authentication' if which == 'auth' else 'signature'} key is locked")
        self.which = which


def check_pin_format(pin: str) -> None:
    """InvalidPinFormat unless `pin` is exactly four ASCII digits."""
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise InvalidPinFormat("auth", "PIN must be exactly 4 digits")


def check_password_format(password: str) -> None:
    """InvalidPinFormat unless 6-16 chars of A-Z and 0-9 with at least one of each."""
    if not isinstance(password, str) or not _PASSWORD.fullmatch(password):
        raise InvalidPinFormat(
            "sign", "password must be 6-16 characters of uppercase letters and digits, with at least one of each"
        )


# --- validity --------------------------------------------------------------------------------


def _birthday_in(year: int, birth: date) -> date:
    try:
        return birth.replace(year=year)
    except ValueError:  # born on 29 February, a common year
        return date(year, 2, 28)


def fifth_birthday_after(birth_date: date, issued_on: date) -> date:
    """The holder's 5th birthday strictly after `issued_on` (the card certificates' last day)."""
    first_year = issued_on.year if _birthday_in(issued_on.year, birth_date) > issued_on else issued_on.year + 1
    return _birthday_in(first_year + 4, birth_date)


def card_not_after(birth_date: date, now: datetime) -> datetime:
    """End of the 5th birthday after issue, Japan time, as an aware UTC datetime."""
    last_day = fifth_birthday_after(birth_date, utc(now).astimezone(JST).date())
    return datetime.combine(last_day, time(23, 59, 59), tzinfo=JST).astimezone(timezone.utc)


def _random_cn() -> str:
    return secrets.token_hex(10).upper()


# --- secrets (PIN, password) -----------------------------------------------------------------

# The private keys sit unencrypted in the same file (a development card), so a costly hash would
# protect nothing and only slow every signature; a real card checks its PIN in hardware.
_SCRYPT = {"n": 2**10, "r": 8, "p": 1}


def _hash_secret(secret: str) -> dict[str, Any]:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return {"scrypt": dict(_SCRYPT), "salt": base64.b64encode(salt).decode(), "hash": base64.b64encode(digest).decode()}


def _secret_matches(stored: dict[str, Any], secret: str) -> bool:
    params = stored["scrypt"]
    digest = hashlib.scrypt(
        secret.encode(),
        salt=base64.b64decode(stored["salt"]),
        dklen=32,
        n=params["n"],
        r=params["r"],
        p=params["p"],
    )
    return hmac.compare_digest(digest, base64.b64decode(stored["hash"]))


# --- the card --------------------------------------------------------------------------------


class SoftwareCard:
    """Both key pairs and certificates of a card, guarded by PIN (auth) and password (sign).

    Once saved or loaded, every change to a retry counter is written back to that file, so a
    lock survives a reload, as on a real card.
    """

    def __init__(
        self,
        *,
        auth_key: rsa.RSAPrivateKey,
        auth_certificate: x509.Certificate,
        sign_key: rsa.RSAPrivateKey,
        sign_certificate: x509.Certificate,
        pin_hash: dict[str, Any],
        password_hash: dict[str, Any],
        pin_failures: int = 0,
        password_failures: int = 0,
    ) -> None:
        self._keys = {"auth": auth_key, "sign": sign_key}
        self._certs = {"auth": auth_certificate, "sign": sign_certificate}
        self._secrets = {"auth": pin_hash, "sign": password_hash}
        self._failures = {"auth": pin_failures, "sign": password_failures}
        self.path: Path | None = None

    @classmethod
    def new(
        cls,
        *,
        auth_key: rsa.RSAPrivateKey,
        auth_certificate: x509.Certificate,
        sign_key: rsa.RSAPrivateKey,
        sign_certificate: x509.Certificate,
        pin: str,
        password: str,
    ) -> SoftwareCard:
        """A fresh card with untouched counters; PIN and password are kept only as scrypt hashes."""
        check_pin_format(pin)
        check_password_format(password)
        return cls(
            auth_key=auth_key,
            auth_certificate=auth_certificate,
            sign_key=sign_key,
            sign_certificate=sign_certificate,
            pin_hash=_hash_secret(pin),
            password_hash=_hash_secret(password),
        )

    # certificates

    @property
    def auth_certificate(self) -> x509.Certificate:
        return self._certs["auth"]

    @property
    def sign_certificate(self) -> x509.Certificate:
        return self._certs["sign"]

    @property
    def auth_certificate_der(self) -> bytes:
        return self._certs["auth"].public_bytes(serialization.Encoding.DER)

    @property
    def sign_certificate_der(self) -> bytes:
        return self._certs["sign"].public_bytes(serialization.Encoding.DER)

    @property
    def holder(self) -> CardHolder | None:
        """The holder as written in the signature certificate."""
        return holder_from_certificate(self._certs["sign"])

    # counters

    @property
    def pin_tries_left(self) -> int:
        return MAX_PIN_TRIES - self._failures["auth"]

    @property
    def password_tries_left(self) -> int:
        return MAX_PASSWORD_TRIES - self._failures["sign"]

    def is_locked(self, which: Which) -> bool:
        return self._failures[which] >= (MAX_PIN_TRIES if which == "auth" else MAX_PASSWORD_TRIES)

    # signing

    def sign_with_auth_key(self, data: bytes, pin: str) -> bytes:
        """Sign `data` (e.g. a sign-in nonce) with the authentication key: RSA PKCS#1 v1.5, SHA-256."""
        self._unlock("auth", pin)
        return self._keys["auth"].sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sign_with_signature_key(self, data: bytes, password: str) -> bytes:
        """Sign `data` (e.g. an application's canonical bytes) with the signature key."""
        self._unlock("sign", password)
        return self._keys["sign"].sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _unlock(self, which: Which, secret: str) -> None:
        limit = MAX_PIN_TRIES if which == "auth" else MAX_PASSWORD_TRIES
        if self._failures[which] >= limit:
            raise CardLocked(which)
        (check_pin_format if which == "auth" else check_password_format)(secret)
        if _secret_matches(self._secrets[which], secret):
            if self._failures[which]:
                self._failures[which] = 0
                self._persist()
            return
        self._failures[which] += 1
        self._persist()
        raise WrongPin(limit - self._failures[which], which)

    # files

    def _persist(self) -> None:
        if self.path is not None:
            self.save(self.path)

    def to_json(self) -> dict[str, Any]:
        def part(which: Which) -> dict[str, Any]:
            return {
                "key": key_pem(self._keys[which]).decode(),
                "certificate": cert_pem(self._certs[which]).decode(),
                "secret": self._secrets[which],
                "failures": self._failures[which],
            }

        return {"format": _CARD_FORMAT, "auth": part("auth"), "sign": part("sign")}

    def save(self, path: str | Path) -> None:
        """Write the card as JSON (mode 0600) and remember the file for counter updates."""
        path = Path(path)
        write_atomic(path, json.dumps(self.to_json(), indent=2).encode(), private=True)
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> SoftwareCard:
        """Read a card saved by save(); later counter changes are written back to `path`."""
        path = Path(path)
        doc = json.loads(path.read_text())
        if doc.get("format") != _CARD_FORMAT:
            raise ValueError(f"{path} is not a software card")
        a, s = doc["auth"], doc["sign"]
        card = cls(
            auth_key=serialization.load_pem_private_key(a["key"].encode(), None),  # type: ignore[arg-type]
            auth_certificate=x509.load_pem_x509_certificate(a["certificate"].encode()),
            sign_key=serialization.load_pem_private_key(s["key"].encode(), None),  # type: ignore[arg-type]
            sign_certificate=x509.load_pem_x509_certificate(s["certificate"].encode()),
            pin_hash=a["secret"],
            password_hash=s["secret"],
            pin_failures=int(a["failures"]),
            password_failures=int(s["failures"]),
        )
        card.path = path
        return card


# --- the CA ----------------------------------------------------------------------------------


class CardAuthority:
    """Self-signed RSA root issuing cards, keeping revocations in `revoked.json` beside its key."""

    def __init__(self, directory: Path, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.directory = Path(directory)
        self.certificate = certificate
        self._key = key

    @property
    def certificate_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @classmethod
    def create(cls, directory: str | Path, *, now: datetime, years: int = 20) -> CardAuthority:
        """A new CA in `directory` (card-ca.pem, card-ca.key); overwrites an existing one."""
        directory = Path(directory)
        now = utc(now)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(CARD_CA_NAME)
            .issuer_name(CARD_CA_NAME)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / CA_KEY_FILE, key_pem(key), private=True)
        write_atomic(directory / CA_CERT_FILE, cert_pem(cert))
        write_atomic(directory / REVOKED_FILE, json.dumps({"crl_number": 0, "revoked": {}}).encode())
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: str | Path) -> CardAuthority:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        key = load_key(directory / CA_KEY_FILE)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{directory / CA_KEY_FILE} is not an RSA key")
        return cls(directory, cert, key)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / CA_CERT_FILE).is_file() and (Path(directory) / CA_KEY_FILE).is_file()

    def issue_card(self, holder: CardHolder, *, now: datetime, pin: str, password: str) -> SoftwareCard:
        """A new card for `holder`: two RSA-2048 keys, valid until the 5th birthday after issue."""
        check_pin_format(pin)
        check_password_format(password)
        now = utc(now)
        not_after = card_not_after(holder.birth_date, now)
        auth_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        auth_cert = self._issue(
            auth_key,
            now,
            not_after,
            AUTH_POLICY_OID,
            _key_usage(digital_signature=True),
            [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
        )
        sign_cert = self._issue(
            sign_key,
            now,
            not_after,
            SIGN_POLICY_OID,
            _key_usage(digital_signature=True, content_commitment=True),
            [(x509.SubjectAlternativeName(holder_other_names(holder)), False)],
        )
        return SoftwareCard.new(
            auth_key=auth_key,
            auth_certificate=auth_cert,
            sign_key=sign_key,
            sign_certificate=sign_cert,
            pin=pin,
            password=password,
        )

    def _issue(
        self,
        key: rsa.RSAPrivateKey,
        now: datetime,
        not_after: datetime,
        policy: x509.ObjectIdentifier,
        key_usage: x509.KeyUsage,
        extra: list[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _random_cn())]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        for ext, critical in extra:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(self._key, hashes.SHA256())

    # revocation

    def _state(self) -> dict[str, Any]:
        path = self.directory / REVOKED_FILE
        if not path.exists():
            return {"crl_number": 0, "revoked": {}}
        return json.loads(path.read_text())

    def revoked(self) -> dict[int, datetime]:
        """Revoked serial -> revocation time."""
        return {int(k, 16): datetime.fromisoformat(v) for k, v in self._state()["revoked"].items()}

    def revoke(self, serial: int, *, now: datetime) -> None:
        """Record `serial` as revoked (first revocation time wins)."""
        state = self._state()
        state["revoked"].setdefault(format(serial, "x"), utc(now).isoformat())
        write_atomic(self.directory / REVOKED_FILE, json.dumps(state, indent=2).encode())

    def crl(self, *, now: datetime, next_update_in: timedelta = timedelta(days=1)) -> bytes:
        """A DER CRL of every revoked serial, signed by this CA, with an increasing CRL number."""
        now = utc(now)
        state = self._state()
        state["crl_number"] = int(state.get("crl_number", 0)) + 1
        write_atomic(self.directory / REVOKED_FILE, json.dumps(state, indent=2).encode())
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + next_update_in)
            .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        for serial_hex, when in sorted(state["revoked"].items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial_hex, 16))
                .revocation_date(datetime.fromisoformat(when))
                .build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
