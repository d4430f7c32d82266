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

from modelyard.errors import InvalidInputError
from modelyard.manifest import FileEntry
from modelyard.progress import Progress
from modelyard.register.scan import SourceFile
from modelyard.store.base import BlobStore, BlobWriter, StagedBlob

_SMALL_FILE_BYTES = 1024 * 1024
_SMALL_BATCH = 128


@dataclass
class IngestResult:
    entries: list[FileEntry]
    files_read: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    read: list[tuple[SourceFile, str]] = field(default_factory=list)  # files read, with digests


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
    batches: list[list[SourceFile]] = []
    small: list[SourceFile] = []
    for source in files:
        if source.size >= _SMALL_FILE_BYTES:
            batches.append([source])
        else:
            small.append(source)
    batches.extend(small[i : i + _SMALL_BATCH] for i in range(0, len(small), _SMALL_BATCH))

    def store_batch(batch: list[SourceFile]) -> list[tuple[SourceFile, StagedBlob]]:
        done = []
        for source in batch:
            on_bytes = progress.advance if source.size >= _SMALL_FILE_BYTES else None
            staged = writer.add_file(source.abspath, link=link, on_bytes=on_bytes)
            if staged.size != source.size:  # written to since the scan: the manifest would lie
                raise InvalidInputError(
                    f"the file changed while it was being registered (size {source.size} -> {staged.size}); "
                    "register again once the writer has finished",
                    path=source.abspath,
                )
            if on_bytes is None:
                progress.advance(source.size)
            done.append((source, staged))
        return done

    if workers <= 1 or len(batches) <= 1:
        return [item for batch in batches for item in store_batch(batch)]
    # Biggest first, so that one large file does not start last and run alone.
    batches.sort(key=lambda batch: sum(f.size for f in batch), reverse=True)
    with ThreadPoolExecutor(max_workers=min(workers, len(batches), os.cpu_count() or 1)) as pool:
        return [item for batch_result in pool.map(store_batch, batches) for item in batch_result]
