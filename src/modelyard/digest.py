"""SHA-256 digests: of files (streamed), and of JSON values in RFC 8785 canonical form.

modelyard uses exactly one content hash, SHA-256, as lowercase hex. hashlib's SHA-256 is
OpenSSL's, which uses the CPU's SHA instructions and releases the GIL on large updates, so
several files hash in parallel threads.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError

CHUNK_SIZE = 1024 * 1024
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str) -> bool:
    return bool(SHA256_HEX.match(value))


def sha256_file(path: Path) -> tuple[str, int]:
    """Hash a file in fixed-size chunks (flat memory); return (hex digest, size)."""
    hasher = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    size = 0
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
            size += count
    return hasher.hexdigest(), size


def canonical_json(value: Any, field: str | None = None) -> bytes:
    """RFC 8785 (JCS) canonical bytes: sorted keys, no whitespace, ECMAScript number spelling.

    So `{"lr": 1e-4}` and `{ "lr" : 0.0001 }` give the same bytes, and the same hash.
    """
    import rfc8785

    try:
        return bytes(rfc8785.dumps(value))
    except rfc8785.IntegerDomainError as exc:
        raise InvalidInputError(
            f"an integer is outside the range JSON numbers hold exactly (±2^53): {exc}; write it as a string",
            field=field,
        ) from None
    except (rfc8785.FloatDomainError, rfc8785.CanonicalizationError, TypeError) as exc:
        raise InvalidInputError(f"cannot be written as canonical JSON: {exc}", field=field) from None


def canonical_sha256(value: Any, field: str | None = None) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 canonical form of a JSON value."""
    return hashlib.sha256(canonical_json(value, field)).hexdigest()


def training_config_hash(training_config: dict[str, Any]) -> str:
    """Seed 000 section 4: JSON normalisation (RFC 8785) then SHA-256."""
    return canonical_sha256(training_config, field="training_config")
