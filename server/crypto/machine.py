"""Machine principals (municipal systems, kiosks, partners, shops, ...) named in mTLS client certificates.

The identity travels as a URI SAN `onestop://<role>/<id>?k=v&k=v` (keys sorted, urlencoded).
identity_from_pem only reads it: chain verification is the TLS layer's job.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

ROLES = frozenset({"municipality", "kiosk", "partner", "shop", "gateway", "operator"})
SCHEME = "onestop"
_LGCODE = re.compile(r"[0-9]{6}")


@dataclass(frozen=True)
class MachineIdentity:
    """Who a client certificate speaks for.

    municipality: id is the 6-digit local-government code. kiosk: attributes "operator", "kind"
    (convenience_store | post_office | city_hall) and "lg" for a city hall. shop: attribute "lg".
    """

    role: str
    id: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {self.role!r}")
        if not self.id:
            raise ValueError("id must not be empty")
        if self.role == "municipality" and not _LGCODE.fullmatch(self.id):
            raise ValueError(f"municipality id must be a 6-digit code, not {self.id!r}")
        for k, v in self.attributes.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise ValueError("attributes must map non-empty str keys to str values")
        attrs = dict(sorted(self.attributes.items()))
        object.__setattr__(self, "attributes", MappingProxyType(attrs))

    def __hash__(self) -> int:
        return hash((self.role, self.id, tuple(self.attributes.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MachineIdentity):
            return NotImplemented
        return (self.role, self.id, dict(self.attributes)) == (other.role, other.id, dict(other.attributes))

    def __repr__(self) -> str:
        return f"MachineIdentity(role={self.role!r}, id={self.id!r}, attributes={dict(self.attributes)!r})"

    def to_uri(self) -> str:
        """`onestop://<role>/<id>?k=v&...` with keys sorted."""
        query = urlencode(sorted(self.attributes.items()))
        uri = f"{SCHEME}://{self.role}/{quote(self.id, safe='')}"
        return f"{uri}?{query}" if query else uri

    @classmethod
    def from_uri(cls, uri: str) -> MachineIdentity:
        """Parse to_uri's output; ValueError on anything else."""
        parts = urlsplit(uri)
        if parts.scheme != SCHEME or parts.fragment:
            raise ValueError(f"not an {SCHEME}:// identity URI: {uri!r}")
        path = parts.path
        if not path.startswith("/") or "/" in path[1:]:
            raise ValueError(f"identity URI needs exactly one path segment: {uri!r}")
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate attribute in {uri!r}")
        return cls(role=parts.netloc, id=unquote(path[1:]), attributes=dict(pairs))


def identity_from_pem(pem: bytes | str) -> MachineIdentity | None:
    """The identity in a PEM client certificate's URI SAN; None if absent or unparseable. Cached."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    return _identity_from_pem_bytes(bytes(pem))


@functools.lru_cache(maxsize=4096)
def _identity_from_pem_bytes(pem: bytes) -> MachineIdentity | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    found = None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(f"{SCHEME}://"):
            if found is not None:
                return None  # two identities in one certificate: trust neither
            try:
                found = MachineIdentity.from_uri(uri)
            except ValueError:
                return None
    return found
