"""Who may do what: API keys, roles and the one permission table (seed 000's auth-service).

A key is 256 random bits, shown once when it is created; the catalog keeps only its SHA-256, so
checking a key is one hash and one indexed lookup (microseconds), not a password hash per request.
Roles are not a ladder: each permission lists the roles that hold it, and every endpoint of the
server names the permission it needs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

ROLES = ("viewer", "trainer", "deployer", "approver", "admin")
KEY_PREFIX = "myd_"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")

# permission -> the roles that hold it. The server enforces it on every endpoint.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "register": frozenset({"trainer", "admin"}),
    "validate": frozenset({"trainer", "approver", "admin"}),
    "promote.validated": frozenset({"trainer", "admin"}),  # only when every gate passes
    "promote.production": frozenset({"approver", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "alias": frozenset({"approver", "admin"}),
    "status": frozenset({"approver", "admin"}),  # deprecate, demote, restore
    "deploy": frozenset({"deployer", "admin"}),
    "jobs.submit": frozenset({"trainer", "admin"}),
    "jobs.cancel.any": frozenset({"admin"}),
    "force": frozenset({"admin"}),
    "prune": frozenset({"admin"}),
    "keys": frozenset({"admin"}),
    "fleet": frozenset({"admin"}),
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a key's owner and role."""

    name: str
    role: str

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never the secret."""

    name: str
    role: str
    prefix: str  # the first characters of the secret, to tell keys apart
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_secret() -> str:
    """`myd_` and 256 random bits in URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_key_name(name: str) -> str:
    from modelyard.errors import InvalidInputError

    if not _KEY_NAME.match(name):
        raise InvalidInputError(
            f"key name {name!r} must be letters, digits, '.', '_', '@' or '-' (at most 100)", field="--name"
        )
    return name


def check_role(role: str) -> str:
    from modelyard.errors import InvalidInputError

    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}", field="--role")
    return role


# The principal a Registry call acts for, when a server request makes it (else the OS user).
current_principal: ContextVar[Principal | None] = ContextVar("modelyard_principal", default=None)
