"""Step 3 of the flow: bytes in, digests out. `open_store(url)` picks the backend by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelyard.errors import InvalidInputError
from modelyard.store.base import BlobCheck, BlobInfo, BlobStore, BlobWriter, StagedBlob

__all__ = ["BlobCheck", "BlobInfo", "BlobStore", "BlobWriter", "StagedBlob", "open_store"]


def _open_local(url: str) -> BlobStore:
    from modelyard.store.local import LocalBlobStore

    parsed = urlparse(url)
    return LocalBlobStore(Path(unquote(parsed.path)))


# One entry per backend; each builder imports its module lazily.
BACKENDS: dict[str, Callable[[str], BlobStore]] = {"file": _open_local}


def open_store(url: str) -> BlobStore:
    """Open the blob store a URL names (`file:///path`)."""
    scheme = urlparse(url).scheme or "file"
    builder = BACKENDS.get(scheme)
    if builder is None:
        known = ", ".join(f"{name}://" for name in BACKENDS)
        raise InvalidInputError(f"unknown store URL scheme {scheme!r}; known: {known}", field="store_url")
    return builder(url if "://" in url else f"file://{Path(url).absolute()}")
