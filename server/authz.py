"""Who is calling, and the per-RPC rule that says who may.

Every RPC of every service has exactly one rule in `RULES` (a guard test checks this against the
service descriptors); a method without a rule is refused. Rules look only at the kind of caller;
scope checks that depend on the request (own municipality, own application) live in the areas'
rules, which receive the principal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from server.errors import PermissionDenied, Unauthenticated

MACHINE_ROLES = ("municipality", "kiosk", "partner", "shop", "gateway", "operator")


@dataclass(frozen=True)
class Anonymous:
    kind: str = "anonymous"

    @property
    def caller_key(self) -> str:
        return "anonymous"


@dataclass(frozen=True)
class Resident:
    """A card holder signed in with the authentication certificate (carrying a bearer token)."""

    resident_id: str
    session_id: str
    # Where the resident lives as of this call (read with the session, so a move shows at once).
    municipality_code: str = ""
    kind: str = "resident"

    @property
    def caller_key(self) -> str:
        return f"resident:{self.resident_id}"


@dataclass(frozen=True)
class Machine:
    """A system authenticated by its platform client certificate (mTLS)."""

    role: str
    id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    kind: str = "machine"

    @property
    def caller_key(self) -> str:
        return f"{self.role}:{self.id}"

    @property
    def municipality(self) -> str | None:
        """The lgcode a municipal system acts for (its id), or the `lg` attribute of others."""
        return self.id if self.role == "municipality" else self.attributes.get("lg")


Principal = Anonymous | Resident | Machine
ANONYMOUS = Anonymous()  # immutable: one instance serves every anonymous call


@dataclass(frozen=True)
class Rule:
    """Which kinds of caller may call an RPC. `describe` is what the protos' comments say."""

    describe: str
    allows: Callable[[Principal], bool]

    def check(self, principal: Principal) -> None:
        if self.allows(principal):
            return
        if isinstance(principal, Anonymous):
            raise Unauthenticated("AUTHENTICATION_REQUIRED", f"this call needs {self.describe}")
        raise PermissionDenied("CALLER_NOT_ALLOWED", f"this call is for {self.describe}")


ANYONE = Rule("any caller", lambda p: True)
RESIDENT = Rule("a signed-in resident", lambda p: isinstance(p, Resident))


def machine(*roles: str) -> Rule:
    unknown = set(roles) - set(MACHINE_ROLES)
    assert not unknown, unknown
    return Rule(" or ".join(f"a {r} system" for r in roles), lambda p: isinstance(p, Machine) and p.role in roles)


def either(*rules: Rule) -> Rule:
    return Rule(" or ".join(r.describe for r in rules), lambda p: any(r.allows(p) for r in rules))


RULES: dict[str, Rule] = {}


def register(service_full_name: str, rules: Mapping[str, Rule]) -> None:
    """Called by each area's adapter: `register("onestop.auth.v1.AuthService", {"SignIn": ANYONE})`."""
    for method, rule in rules.items():
        RULES[f"/{service_full_name}/{method}"] = rule


def rule_for(method: str) -> Rule | None:
    return RULES.get(method)


def require_resident(principal: Principal) -> Resident:
    if not isinstance(principal, Resident):
        raise PermissionDenied("RESIDENT_ONLY", "only the signed-in resident may do this")
    return principal


def require_municipality(principal: Principal, lgcode: str) -> Machine:
    """Staff act only for their own municipality."""
    if not isinstance(principal, Machine) or principal.role != "municipality":
        raise PermissionDenied("MUNICIPALITY_ONLY", "only a municipal system may do this")
    if principal.id != lgcode:
        raise PermissionDenied("OTHER_MUNICIPALITY", f"a system of {principal.id} cannot act for {lgcode}")
    return principal
