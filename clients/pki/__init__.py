"""Development PKI tooling: the platform CA (mTLS), a JPKI-shaped card CA and software cards.

CardHolder and MachineIdentity are defined once, in server.crypto, and re-exported here.
"""

from clients.pki.card import (
    MAX_PASSWORD_TRIES,
    MAX_PIN_TRIES,
    CardAuthority,
    CardError,
    CardLocked,
    InvalidPinFormat,
    SoftwareCard,
    WrongPin,
    card_not_after,
    check_password_format,
    check_pin_format,
    fifth_birthday_after,
)
from clients.pki.layout import DevPki
from clients.pki.platform import PlatformAuthority
from server.crypto.jpki import CardHolder
from server.crypto.machine import MachineIdentity

__all__ = [
    "MAX_PASSWORD_TRIES",
    "MAX_PIN_TRIES",
    "CardAuthority",
    "CardError",
    "CardHolder",
    "CardLocked",
    "DevPki",
    "InvalidPinFormat",
    "MachineIdentity",
    "PlatformAuthority",
    "SoftwareCard",
    "WrongPin",
    "card_not_after",
    "check_password_format",
    "check_pin_format",
    "fifth_birthday_after",
]
