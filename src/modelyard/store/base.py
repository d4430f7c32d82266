"""The blob store interface: bytes in, SHA-256 digests out.

A store holds blobs by the SHA-256 of their content. It computes every digest itself from the
bytes it stores; a caller never supplies one. Writes go through a `BlobWriter`, which stages
blobs invisibly and makes them durable and visible together in `publish()`, so a crash leaves
either nothing or whole blobs. A writer also holds the store's shared lock until it is closed,
which keeps `gc` from sweeping while a registration is between storing blobs and committing the
catalog row that references them.

Backends live one per module (`local.py` now, an S3-compatible one later) and are chosen by the
scheme of the store URL in `modelyard.store.open_store`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

ProgressCallback = Callable[[int], None]
# How many leading bytes a writer reports: enough for inspection to tell a pickle, a zip or a
# GGUF from data without opening 20,000 files a second time.
HEAD_BYTES = 16
IngestMethod = Literal["copy", "hardlink", "reflink", "existing"]


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob. `changed_ns` is when the blob last changed in the store (ctime locally)."""

    sha256: str
    size: int
    changed_ns: int


@dataclass(frozen=True)
class StagedBlob:
    """What `BlobWriter.add_*` learned: the digest of the bytes it will store and how."""

    sha256: str
    size: int
    bytes_added: int  # 0 when the store already had the blob
    method: IngestMethod
    head: bytes = b""  # the first bytes of the content (HEAD_BYTES), when the writer read them anyway


@dataclass(frozen=True)
class BlobCheck:
    """The result of re-hashing one stored blob."""

    sha256: str
    status: Literal["ok", "missing", "corrupt"]
    actual_sha256: str | None = None
    size: int | None = None


class BlobWriter(Protocol):
    """Stages blobs; nothing becomes visible until `publish()` returns."""

    def add_stream(self, stream: BinaryIO, on_bytes: ProgressCallback | None = None) -> StagedBlob:
        """Store the bytes read from `stream` until EOF."""
        ...

    def add_file(self, path: str | Path, *, link: bool = False, on_bytes: ProgressCallback | None = None) -> StagedBlob:
        """Store a local file. With `link`, a backend that can share the file's data (a reflink,
        or a hardlink that shares the inode with the user's file) does so instead of copying."""
        ...

    def publish(self) -> None:
        """Make every staged blob durable, then visible. Idempotent."""
        ...

    def open_blob(self, sha256: str) -> BinaryIO:
        """Read a blob this writer staged (not yet visible to others), or one already stored."""
        ...


class BlobStore(Protocol):
    """Content-addressed blob storage."""

    url: str

    def writer(self) -> AbstractContextManager[BlobWriter]:
        """A writer holding the store's shared lock; unpublished blobs are discarded on exit."""
        ...

    def put(self, stream: BinaryIO) -> BlobInfo:
        """Store one stream durably and return its blob."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading; NotFoundError when absent."""
        ...

    def stat(self, sha256: str) -> BlobInfo | None:
        """The blob's size and change time, or None when absent."""
        ...

    def has_all(self, digests: list[str]) -> bool:
        """True when every digest is present (a cheap existence check, no hashing)."""
        ...

    def verify(self, sha256: str, on_bytes: ProgressCallback | None = None) -> BlobCheck:
        """Re-hash the blob and compare it with its name."""
        ...

    def quarantine(self, sha256: str) -> str | None:
        """Move a corrupt blob aside so that it is no longer served or deduplicated against."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove a blob; absent blobs are ignored."""
        ...

    def removal_epoch(self) -> str:
        """A token that changes whenever a blob leaves the store (gc, quarantine).

        "Every blob of this version was present at epoch E" stays true while the epoch is E, so
        an unchanged re-registration need not check thousands of blobs one by one."""
        ...

    def list(self) -> Iterator[BlobInfo]:
        """Every blob in the store, in no particular order."""
        ...

    def stale_temporaries(self, older_than_ns: int) -> builtins.list[tuple[str, int]]:
        """Leftovers of interrupted writes, older than the given time: (name, size)."""
        ...

    def remove_temporary(self, name: str) -> None: ...

    def exclusive(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the store's exclusive lock (no writer active); BusyError after `timeout` seconds."""
        ...
