"""Every error modelyard raises on purpose, under one root.

Each class carries its CLI exit code and HTTP status, so the CLI and the server map errors in
exactly one place (here). Messages are one line: they name the file or field and the cause, and
where there is an obvious next step they say it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ModelyardError(Exception):
    """Root of all modelyard errors."""

    code = "error"
    exit_code = 1
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.details = details or {}
        super().__init__(self.render())

    def render(self) -> str:
        """The one-line message: `<path>: field '<field>': <message>`."""
        parts = []
        if self.path:
            parts.append(self.path)
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.message)
        return ": ".join(parts)


class InvalidInputError(ModelyardError):
    """Something the user gave (a path, name, flag, manifest or config) is not acceptable."""

    code = "invalid_input"
    exit_code = 3
    http_status = 422


class InvalidModelFileError(InvalidInputError):
    """A model file whose bytes break its format: truncated, inconsistent or absurd. The message
    names the file and, where there is one, the field or key."""

    code = "invalid_model_file"


class NotFoundError(ModelyardError):
    """An artifact, version, reference or blob that does not exist."""

    code = "not_found"
    exit_code = 4
    http_status = 404


class PermissionDeniedError(ModelyardError):
    """The caller's role does not allow this operation (an admin-only --force, ...)."""

    code = "forbidden"
    exit_code = 11
    http_status = 403


class ConflictError(ModelyardError):
    """The request contradicts what the registry already holds."""

    code = "conflict"
    exit_code = 5
    http_status = 409


class GateFailedError(ConflictError):
    """A promotion refused by the lifecycle: a validation gate failed, or an approval is missing."""

    code = "gate_failed"


class CorruptionError(ModelyardError):
    """Stored bytes that no longer match their digest, or a blob that went missing."""

    code = "corrupt"
    exit_code = 6
    http_status = 500


class StorageError(ModelyardError):
    """The store or the disk failed: no space left, an I/O error, a read-only filesystem."""

    code = "storage"
    exit_code = 7
    http_status = 507


class BusyError(ModelyardError):
    """Another process holds a lock this operation needs; retrying later will work."""

    code = "busy"
    exit_code = 8
    http_status = 503


class CatalogError(ModelyardError):
    """The catalog database is unreachable, or its schema is newer than this modelyard."""

    code = "catalog"
    exit_code = 9
    http_status = 503


class RemoteError(ModelyardError):
    """A remote service (the Hugging Face Hub, CivitAI, a fleet node) failed or is out of reach."""

    code = "remote"
    exit_code = 10
    http_status = 502


class AuthenticationError(ModelyardError):
    """No API key, or one the server does not know (unknown or revoked)."""

    code = "unauthenticated"
    exit_code = 11
    http_status = 401


class PayloadTooLargeError(InvalidInputError):
    """A request or upload larger than the server accepts."""

    code = "too_large"
    http_status = 413
