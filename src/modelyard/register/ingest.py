"""Put a source tree's files into the store, in parallel, reading only what the stat cache
cannot vouch for.

Large files go one per task and small files in batches, over a few threads: hashlib releases
the GIL while hashing, so two cores hash two files at once.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError
from modelyard.progress import Progress
from modelyard.register.scan import SourceFile
from modelyard.store.base import BlobStore, BlobWriter, StagedBlob

if TYPE_CHECKING:
    from modelyard.manifest import FileEntry

_SMALL_FILE_BYTES = 1024 * 1024


@dataclass
class IngestResult:
    entries: list[FileEntry]
    files_read: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    read: list[tuple[SourceFile, str]] = field(default_factory=list)  # files read, with digests
    heads: dict[str, bytes] = field(default_factory=dict)  # relpath -> first bytes, for files read


def ingest(
    files: list[SourceFile],
    *,
    store: BlobStore,
    writer: BlobWriter,
    cached: dict[str, str],
    link: bool,
    workers: int,
    progress: Progress,
) -> IngestResult:
    """Store every file not already stored, returning the file list in the given order."""
    from modelyard.manifest import FileEntry

    digests: dict[str, str] = {}
    to_read: list[SourceFile] = []
    result = IngestResult(entries=[])
    for source in files:
        digest = cached.get(str(source.abspath))
        if digest is not None and _stored(store, digest, source.size):
            digests[source.relpath] = digest
            result.methods["cached"] += 1
        else:
            to_read.append(source)

    progress.start("storing" if not link else "linking", sum(f.size for f in to_read))
    try:
        for outcome in _run(to_read, writer, link, workers, progress):
            source, staged = outcome
            digests[source.relpath] = staged.sha256
            result.files_read += 1
            result.bytes_read += staged.size
            result.bytes_added += staged.bytes_added
            result.methods[staged.method] += 1
            result.read.append((source, staged.sha256))
            if staged.head:
                result.heads[source.relpath] = staged.head
    finally:
        progress.finish()
    result.entries = [FileEntry(path=f.relpath, size=f.size, sha256=digests[f.relpath]) for f in files]
    return result


def _stored(store: BlobStore, digest: str, size: int) -> bool:
    info = store.stat(digest)
    return info is not None and info.size == size


def _run(
    files: list[SourceFile], writer: BlobWriter, link: bool, workers: int, progress: Progress
) -> list[tuple[SourceFile, StagedBlob]]:
    """Large files go to a thread pool, biggest first; small files are stored by this thread
    meanwhile. (For 4 KiB files, more threads only contend for the interpreter lock.)"""

    def store_one(source: SourceFile) -> tuple[SourceFile, StagedBlob]:
        large = source.size >= _SMALL_FILE_BYTES
        staged = writer.add_file(source.abspath, link=link, on_bytes=progress.advance if large else None)
        if not large:
            progress.advance(source.size)
        if staged.size != source.size:  # written to since the scan: the manifest would lie
            raise InvalidInputError(
                f"the file changed while it was being registered (size {source.size} -> {staged.size}); "
                "register again once the writer has finished",
                path=source.abspath,
            )
        return source, staged

    large = sorted((f for f in files if f.size >= _SMALL_FILE_BYTES), key=lambda f: f.size, reverse=True)
    small = [f for f in files if f.size < _SMALL_FILE_BYTES]
    if workers <= 1 or not large:
        return [store_one(source) for source in large + small]
    with ThreadPoolExecutor(max_workers=min(workers, len(large), os.cpu_count() or 1)) as pool:
        pending = [pool.submit(store_one, source) for source in large]
        done = [store_one(source) for source in small]
        return [future.result() for future in pending] + done
