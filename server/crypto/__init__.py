"""Certificate checks the server does itself: JPKI card certificates and machine identities."""

from server.crypto.jpki import (
    AUTH_POLICY_OID,
    SIGN_POLICY_OID,
    CardHolder,
    CardTrust,
    CertificateRejected,
    VerifiedCard,
    decode_birth_date,
    encode_birth_date,
    era_digit,
    verify_signature,
)
from server.crypto.machine import ROLES, MachineIdentity, identity_from_pem

__all__ = [
    "AUTH_POLICY_OID",
    "SIGN_POLICY_OID",
    "ROLES",
    "CardHolder",
    "CardTrust",
    "CertificateRejected",
    "MachineIdentity",
    "VerifiedCard",
    "decode_birth_date",
    "encode_birth_date",
    "era_digit",
    "identity_from_pem",
    "verify_signature",
]
