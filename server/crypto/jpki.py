"""Verification of JPKI (公的個人認証) card certificates: chain, validity, usage, revocation, signature.

Pure functions over bytes and an injected `now`; the server only trusts the anchors and CRLs
it is handed, so the development CA and real J-LIS anchors are interchangeable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable, Literal, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID

Usage = Literal["auth", "sign"]

# Certificate policies of the JPKI profile: they, not the key usage alone, tell the two apart.
SIGN_POLICY_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.1.1")
AUTH_POLICY_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.1.3")

# otherName type-ids carrying the holder's basic four facts (基本4情報) in a signature certificate.
NAME_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.5.1")
SEX_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.5.3")
BIRTH_DATE_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.5.4")
ADDRESS_OID = x509.ObjectIdentifier("1.2.392.200149.8.5.5.5")

REASONS = frozenset(
    {
        "UNKNOWN_ISSUER",
        "CERT_EXPIRED",
        "CERT_NOT_YET_VALID",
        "CERT_REVOKED",
        "WRONG_CERTIFICATE_USAGE",
        "BAD_SIGNATURE",
        "MALFORMED_CERTIFICATE",
        "CRL_UNAVAILABLE",
    }
)


class CertificateRejected(Exception):
    """A card certificate (or a signature by it) is not acceptable; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- the holder and the birth-date encoding -------------------------------------------------

# First day of each era (Gregorian); digit per the JPKI birth-date encoding.
_ERAS: tuple[tuple[date, str], ...] = (
    (date(2019, 5, 1), "5"),  # 令和
    (date(1989, 1, 8), "4"),  # 平成
    (date(1926, 12, 25), "3"),  # 昭和
    (date(1912, 7, 30), "2"),  # 大正
)


def era_digit(d: date) -> str:
    """The JPKI era digit of a date: 1 明治, 2 大正, 3 昭和, 4 平成, 5 令和."""
    for start, digit in _ERAS:
        if d >= start:
            return digit
    return "1"


def encode_birth_date(d: date) -> str:
    """`EYYYYMMDD`: era digit, then the Gregorian date."""
    return f"{era_digit(d)}{d.year:04d}{d.month:02d}{d.day:02d}"


def decode_birth_date(text: str) -> date:
    """Inverse of encode_birth_date; ValueError if the text is not `EYYYYMMDD` with a known era."""
    if len(text) != 9 or not text.isascii() or not text.isdigit() or text[0] not in "12345":
        raise ValueError(f"birth date {text!r} is not EYYYYMMDD")
    return date(int(text[1:5]), int(text[5:7]), int(text[7:9]))


SEXES = {"1": "male", "2": "female", "3": "other"}


@dataclass(frozen=True)
class CardHolder:
    """The basic four facts in a signature certificate. `sex` is the JPKI code: "1", "2" or "3"."""

    name: str
    sex: str
    birth_date: date
    address: str

    def __post_init__(self) -> None:
        if not self.name or not self.address:
            raise ValueError("name and address must not be empty")
        if self.sex not in SEXES:
            raise ValueError(f"sex must be one of {sorted(SEXES)}, not {self.sex!r}")
        if isinstance(self.birth_date, datetime) or not isinstance(self.birth_date, date):
            raise ValueError("birth_date must be a datetime.date")


def encode_utf8string(text: str) -> bytes:
    """DER encoding of an ASN.1 UTF8String (tag 12)."""
    body = text.encode("utf-8")
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x0c" + length + body


def decode_utf8string(der: bytes) -> str:
    """Inverse of encode_utf8string; ValueError on anything else (strict DER lengths)."""
    if len(der) < 2 or der[0] != 0x0C:
        raise ValueError("not a UTF8String")
    first = der[1]
    if first < 0x80:
        n, start = first, 2
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or len(der) < 2 + k:
            raise ValueError("bad UTF8String length")
        n, start = int.from_bytes(der[2 : 2 + k], "big"), 2 + k
        if n < 0x80 or der[2] == 0:
            raise ValueError("non-minimal UTF8String length")
    if len(der) != start + n:
        raise ValueError("UTF8String length mismatch")
    return der[start:].decode("utf-8")


def holder_other_names(holder: CardHolder) -> list[x509.OtherName]:
    """The subjectAltName otherName entries a signature certificate carries for `holder`."""
    return [
        x509.OtherName(NAME_OID, encode_utf8string(holder.name)),
        x509.OtherName(SEX_OID, encode_utf8string(holder.sex)),
        x509.OtherName(BIRTH_DATE_OID, encode_utf8string(encode_birth_date(holder.birth_date))),
        x509.OtherName(ADDRESS_OID, encode_utf8string(holder.address)),
    ]


def holder_from_certificate(cert: x509.Certificate) -> CardHolder | None:
    """The holder from a signature certificate's otherName SANs; None if it carries none.

    ValueError if the entries are present but incomplete or badly encoded.
    """
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return None
    wanted = {NAME_OID, SEX_OID, BIRTH_DATE_OID, ADDRESS_OID}
    values: dict[x509.ObjectIdentifier, str] = {}
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id in wanted:
            if other.type_id in values:
                raise ValueError(f"duplicate otherName {other.type_id.dotted_string}")
            values[other.type_id] = decode_utf8string(other.value)
    if not values:
        return None
    if set(values) != wanted:
        raise ValueError("signature certificate lacks some of name, sex, birth date, address")
    return CardHolder(
        name=values[NAME_OID],
        sex=values[SEX_OID],
        birth_date=decode_birth_date(values[BIRTH_DATE_OID]),
        address=values[ADDRESS_OID],
    )


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedCard:
    """A card certificate that passed CardTrust.verify. Bind residents by (issuer, serial)."""

    issuer: str
    serial: int
    not_after: datetime
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    usage: Usage
    holder: CardHolder | None = None
    subject: str = ""
    fingerprint: str = field(default="", repr=False)  # hex SHA-256 of the certificate DER

    @property
    def serial_hex(self) -> str:
        """Serial as lowercase hex, even length, no prefix (the form card_links stores)."""
        return serial_text(self.serial)


def serial_text(serial: int) -> str:
    """A certificate serial as stored and compared everywhere: lowercase hex, even length."""
    text = format(serial, "x")
    return text if len(text) % 2 == 0 else "0" + text


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(timezone.utc)


def _anchor_key(anchor: x509.Certificate) -> bytes:
    return anchor.fingerprint(hashes.SHA256())


def _crl_rank(crl: x509.CertificateRevocationList) -> tuple[datetime, int]:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = -1
    return (crl.last_update_utc, number)


class CardTrust:
    """Trust anchors for card certificates plus, per anchor, the newest CRL it signed.

    Immutable: with_crl returns a new instance, so a reload can swap it atomically.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        crls: Iterable[bytes] = (),
    ) -> None:
        """Raises CertificateRejected("UNKNOWN_ISSUER") for a CRL that no anchor signed."""
        self._anchors: tuple[x509.Certificate, ...] = tuple(anchors)
        self._keys: tuple[bytes, ...] = tuple(_anchor_key(a) for a in self._anchors)
        self._crls: dict[bytes, x509.CertificateRevocationList] = {}
        # Shared by every copy (with_crl keeps the anchors, so what it holds stays true for all).
        self._parsed: dict[bytes, _ParsedCard] = {}
        for der in crls:
            self._add_crl(der)

    @classmethod
    def from_files(
        cls, anchor_paths: Iterable[str | Path], crl_paths: Iterable[str | Path] = ()
    ) -> CardTrust:
        """Load anchors (PEM, possibly several per file, or DER) and CRLs (DER or PEM)."""
        anchors: list[x509.Certificate] = []
        for p in anchor_paths:
            data = Path(p).read_bytes()
            if b"-----BEGIN" in data:
                anchors.extend(x509.load_pem_x509_certificates(data))
            else:
                anchors.append(x509.load_der_x509_certificate(data))
        crls: list[bytes] = []
        for p in crl_paths:
            data = Path(p).read_bytes()
            if b"-----BEGIN" in data:
                data = x509.load_pem_x509_crl(data).public_bytes(serialization.Encoding.DER)
            crls.append(data)
        return cls(anchors, crls)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._anchors

    def crl_for(self, anchor: x509.Certificate) -> x509.CertificateRevocationList | None:
        """The CRL currently held for `anchor`, if any."""
        for candidate, key in zip(self._anchors, self._keys):
            if candidate is anchor:
                return self._crls.get(key)
        return self._crls.get(_anchor_key(anchor))

    def with_crl(self, der: bytes) -> CardTrust:
        """A copy that also holds CRL `der`, keeping the newer of two CRLs from one issuer."""
        clone = CardTrust.__new__(CardTrust)
        clone._anchors = self._anchors
        clone._keys = self._keys
        clone._crls = dict(self._crls)
        clone._parsed = self._parsed
        clone._add_crl(der)
        return clone

    def _add_crl(self, der: bytes) -> None:
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError as exc:
            raise CertificateRejected("CRL_UNAVAILABLE", f"CRL does not parse: {exc}") from exc
        for anchor, key in zip(self._anchors, self._keys):
            if anchor.subject != crl.issuer:
                continue
            try:
                ok = crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError):
                ok = False
            if ok:
                held = self._crls.get(key)
                if held is None or _crl_rank(crl) > _crl_rank(held):
                    self._crls[key] = crl
                return
        raise CertificateRejected("UNKNOWN_ISSUER", f"CRL from {crl.issuer.rfc4514_string()} is not signed by an anchor")

    def verify(self, cert_der: bytes, *, usage: Usage, now: datetime) -> VerifiedCard:
        """Check a card certificate for `usage` at `now`; raise CertificateRejected if unfit.

        Order: parse, issuer, validity period, usage (policy + key usage), revocation.

        What a certificate's bytes alone decide (it parses, an anchor signed it, its usage, its
        holder) is worked out once per certificate and kept (`warm`); the validity period and the
        revocation list in force are checked on every call.
        """
        if usage not in ("auth", "sign"):
            raise ValueError(f"usage must be 'auth' or 'sign', not {usage!r}")
        now = _aware(now)
        parsed = self._parsed.get(cert_der) if type(cert_der) is bytes else None
        if parsed is None:
            parsed = self._parse(bytes(cert_der))

        if now < parsed.not_before:
            raise CertificateRejected("CERT_NOT_YET_VALID", parsed.not_before.isoformat())
        if now > parsed.not_after:
            raise CertificateRejected("CERT_EXPIRED", parsed.not_after.isoformat())

        refusal = parsed.usage_refusal(usage)
        if refusal is not None:
            raise CertificateRejected(*refusal)

        crl = self._crls.get(parsed.anchor_key)
        if crl is None:
            raise CertificateRejected("CRL_UNAVAILABLE", "no CRL from the issuer")
        next_update = crl.next_update_utc
        if next_update is None or next_update < now:
            raise CertificateRejected("CRL_UNAVAILABLE", "the issuer's CRL is out of date")
        if crl.get_revoked_certificate_by_serial_number(parsed.serial) is not None:
            raise CertificateRejected("CERT_REVOKED", format(parsed.serial, "x"))

        return parsed.card(usage)

    def warm(self, cert_der: bytes) -> None:
        """Do the checks that need only the certificate (parse, chain) now, outside any lock, so
        that a later `verify` finds them done. A certificate that fails them is left for `verify`
        to refuse."""
        if type(cert_der) is not bytes or cert_der not in self._parsed:
            try:
                self._parse(bytes(cert_der))
            except CertificateRejected:
                pass

    def _parse(self, der: bytes) -> _ParsedCard:
        """Parse `der` and find the anchor that signed it; remembered only when one did."""
        try:
            cert = x509.load_der_x509_certificate(der)
            # Extensions parse lazily; force it here so a bad one is MALFORMED, not a crash later.
            cert.extensions
            issuer_name = cert.issuer
        except (ValueError, TypeError) as exc:
            raise CertificateRejected("MALFORMED_CERTIFICATE", str(exc)) from exc

        anchor_key = self._issuing_anchor_key(cert)
        if anchor_key is None:
            raise CertificateRejected("UNKNOWN_ISSUER", issuer_name.rfc4514_string())
        parsed = _ParsedCard(der, cert, anchor_key)
        if len(self._parsed) >= MAX_REMEMBERED_CERTIFICATES:
            del self._parsed[next(iter(self._parsed))]  # the oldest
        self._parsed[der] = parsed
        return parsed

    def _issuing_anchor_key(self, cert: x509.Certificate) -> bytes | None:
        for anchor, key in zip(self._anchors, self._keys):
            if anchor.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return key
        return None


# Certificates whose chain was checked, kept per trust (a card signs in again and again). Bounded:
# only certificates an anchor signed get in, and the oldest goes first.
MAX_REMEMBERED_CERTIFICATES = 1024


class _ParsedCard:
    """What one certificate's bytes decide, worked out once: never a verdict on revocation or time."""

    __slots__ = ("cert", "anchor_key", "serial", "not_before", "not_after", "_der", "_usage", "_cards")

    def __init__(self, der: bytes, cert: x509.Certificate, anchor_key: bytes) -> None:
        self._der = der
        self.cert = cert
        self.anchor_key = anchor_key
        self.serial = cert.serial_number
        self.not_before = cert.not_valid_before_utc
        self.not_after = cert.not_valid_after_utc
        self._usage: dict[str, tuple[str, str] | None] = {}
        self._cards: dict[str, VerifiedCard | tuple[str, str]] = {}

    def usage_refusal(self, usage: Usage) -> tuple[str, str] | None:
        """(reason, detail) when the certificate is not for `usage`, else None."""
        if usage not in self._usage:
            try:
                _check_usage(self.cert.extensions, usage)
                self._usage[usage] = None
            except CertificateRejected as rejected:
                self._usage[usage] = (rejected.reason, rejected.detail)
        return self._usage[usage]

    def card(self, usage: Usage) -> VerifiedCard:
        """The verified card for `usage` (its holder read from a signature certificate)."""
        found = self._cards.get(usage)
        if found is None:
            found = self._cards[usage] = self._make_card(usage)
        if isinstance(found, tuple):
            raise CertificateRejected(*found)
        return found

    def _make_card(self, usage: Usage) -> VerifiedCard | tuple[str, str]:
        cert = self.cert
        holder = None
        if usage == "sign":
            try:
                holder = holder_from_certificate(cert)
            except (ValueError, UnicodeDecodeError) as exc:
                return ("MALFORMED_CERTIFICATE", f"holder attributes: {exc}")
        return VerifiedCard(
            issuer=cert.issuer.rfc4514_string(),
            serial=self.serial,
            not_after=self.not_after,
            public_key=cert.public_key(),  # type: ignore[arg-type]
            usage=usage,
            holder=holder,
            subject=cert.subject.rfc4514_string(),
            fingerprint=hashlib.sha256(self._der).hexdigest(),
        )


def _check_usage(extensions: x509.Extensions, usage: Usage) -> None:
    wanted, other = (AUTH_POLICY_OID, SIGN_POLICY_OID) if usage == "auth" else (SIGN_POLICY_OID, AUTH_POLICY_OID)
    try:
        policies = {p.policy_identifier for p in extensions.get_extension_for_class(x509.CertificatePolicies).value}
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateRejected("WRONG_CERTIFICATE_USAGE", f"missing {exc.oid.dotted_string}") from exc
    try:
        ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if ca:
        raise CertificateRejected("WRONG_CERTIFICATE_USAGE", "a CA certificate is not a card")
    if wanted not in policies or other in policies:
        raise CertificateRejected("WRONG_CERTIFICATE_USAGE", f"policy {wanted.dotted_string} required for {usage}")
    if not key_usage.digital_signature:
        raise CertificateRejected("WRONG_CERTIFICATE_USAGE", "digitalSignature not allowed")
    if usage == "sign" and not key_usage.content_commitment:
        raise CertificateRejected("WRONG_CERTIFICATE_USAGE", "nonRepudiation required for sign")


def verify_signature(verified: VerifiedCard, data: bytes, signature: bytes) -> None:
    """Check `signature` over `data` (PKCS#1 v1.5 / SHA-256; ECDSA-SHA256 for EC keys)."""
    key = verified.public_key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise CertificateRejected("BAD_SIGNATURE", "unsupported key type")
    except InvalidSignature as exc:
        raise CertificateRejected("BAD_SIGNATURE") from exc
