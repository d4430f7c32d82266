"""Who is calling: a Bearer API key, a browser session, or (when switched on) anonymous reads.

Every endpoint declares the permission it needs with `Depends(require("..."))`; the table of
which roles hold which permission is `modelyard.access.PERMISSIONS`, the only one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from modelyard.access import Principal
from modelyard.errors import AuthenticationError, PermissionDeniedError
from modelyard.registry import Registry

ANONYMOUS = Principal("anonymous", "viewer")
SESSION_COOKIE = "modelyard_session"


async def get_registry(request: Request) -> Registry:  # async: no thread hand-off for an attribute read
    registry: Registry = request.app.state.registry
    return registry


def authenticate(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer KEY`, else the UI's session cookie."""
    registry: Registry = request.app.state.registry
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("the Authorization header must read: Bearer KEY")
        principal = registry.authenticate(secret.strip())
        if principal is None:
            raise AuthenticationError("unknown or revoked API key")
        return principal
    sessions = getattr(request.app.state, "sessions", None)
    cookie = request.cookies.get(SESSION_COOKIE)
    if sessions is not None and cookie:
        session_principal: Principal | None = sessions.principal(cookie)
        if session_principal is not None:
            return session_principal
    if request.app.state.anonymous_read:
        return ANONYMOUS
    raise AuthenticationError("missing API key: send Authorization: Bearer KEY (modelyard keys create)")


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold `permission`."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        return check_permission(principal, permission)

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency


def check_permission(principal: Principal, permission: str) -> Principal:
    """The principal, if it holds `permission`; otherwise the 401/403 error (see `refusal`)."""
    if not principal.can(permission):
        raise refusal(principal, f"the '{permission}' permission")
    return principal


def refusal(principal: Principal, needed: str) -> AuthenticationError | PermissionDeniedError:
    """The error for a caller who lacks `needed`: 401 when no key was sent (one would help), else 403."""
    if principal is ANONYMOUS:
        return AuthenticationError(f"this needs {needed}: send Authorization: Bearer KEY (modelyard keys create)")
    return PermissionDeniedError(f"{principal.name} ({principal.role}) may not do this: it needs {needed}")


RegistryDep = Annotated[Registry, Depends(get_registry)]
