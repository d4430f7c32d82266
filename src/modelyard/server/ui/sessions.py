"""Browser sessions of the web UI: log in with an API key once, then a signed cookie.

The cookie holds a token `PAYLOAD.SIGNATURE`: PAYLOAD is URL-safe base64 of
`{"d": <SHA-256 of the key>, "e": <expiry, unix seconds>, "n": <random nonce>}` and SIGNATURE is
HMAC-SHA256 of it under the server secret (`<home>/server-secret`: 256 random bits, mode 0600,
created once and read by every worker process). The key itself is never in the cookie; the
digest is looked up in the catalog on every request, so revoking the key ends its sessions.

Every form carries a CSRF token derived from the session by HMAC (`csrf_token`); before a
session exists, the login form's token is derived from a nonce in a short-lived cookie.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from modelyard.access import Principal, digest

SECRET_FILENAME = "server-secret"
SECRET_BYTES = 32
SESSION_SECONDS = 12 * 3600
LOGIN_COOKIE = "modelyard_login"
LOGIN_SECONDS = 3600

# Looks a key digest up in the catalog: its principal, or None for an unknown or revoked key.
DigestLookup = Callable[[str], Principal | None]


def load_or_create_secret(home: Path) -> bytes:
    """The server secret in `<home>/server-secret`, created (mode 0600) by the first process that
    needs it. A new file is written aside and linked into place, so a concurrent worker either
    wins the link or reads the complete file the winner linked."""
    path = home / SECRET_FILENAME
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{SECRET_FILENAME}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)  # atomic: fails when another process linked first
        finally:
            temporary.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a secret readable by others is tightened, not trusted as it was
    text = path.read_text(encoding="ascii").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise RuntimeError(f"{path} does not hold a {SECRET_BYTES * 8}-bit hex secret; remove it to make a new one")
    return secret


class Sessions:
    """Opens and checks session tokens; `app.state.sessions` (security.authenticate calls
    `principal(cookie)` for the session cookie)."""

    def __init__(self, secret: bytes, lookup: DigestLookup, *, lifetime: int = SESSION_SECONDS) -> None:
        self._secret = secret
        self._lookup = lookup
        self.lifetime = lifetime

    # -- sessions ---------------------------------------------------------------------------------

    def open(self, key: str, authenticate: Callable[[str], Principal | None]) -> tuple[str, Principal] | None:
        """A new session token for an API key that `authenticate` (Registry.authenticate)
        accepts, with its principal; None for an unknown or revoked key."""
        principal = authenticate(key)
        if principal is None:
            return None
        fields = {"d": digest(key), "e": int(time.time()) + self.lifetime, "n": secrets.token_urlsafe(16)}
        payload = _b64encode(json.dumps(fields, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign('session', payload)}", principal

    def principal(self, token: str) -> Principal | None:
        """Who a session token acts for: None when the signature is wrong, it has expired, or its
        key is unknown or revoked now."""
        payload = self._verified_payload(token)
        if payload is None:
            return None
        try:
            fields = json.loads(_b64decode(payload))
            key_digest, expiry = str(fields["d"]), int(fields["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expiry <= time.time():
            return None
        return self._lookup(key_digest)

    def _verified_payload(self, token: str) -> str | None:
        payload, dot, signature = token.partition(".")
        if not dot or not payload or not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        return payload

    # -- CSRF ----------------------------------------------------------------------------------------

    def csrf_token(self, token: str) -> str:
        """The CSRF token of a session: forms carry it, every POST is checked against it."""
        return self._sign("csrf", token)

    def check_csrf(self, token: str, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(self.csrf_token(token), str(submitted))

    def login_csrf_token(self, nonce: str) -> str:
        """The login form's CSRF token, derived from the nonce in its cookie (no session yet)."""
        return self._sign("login-csrf", nonce)

    def check_login_csrf(self, nonce: str | None, submitted: str | None) -> bool:
        return (
            bool(nonce) and bool(submitted) and hmac.compare_digest(self.login_csrf_token(str(nonce)), str(submitted))
        )

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc
