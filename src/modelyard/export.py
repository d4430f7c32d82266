"""Write a version out: as a directory (its files plus `artifact_manifest.json`) or as the upload
ZIP of seed 000 (the same, zipped, manifest inside).

Every byte is re-hashed on the way out, so a corrupt blob stops the export instead of producing
a bad copy. Output is assembled under a temporary name next to the destination and renamed into
place at the end: a failed or interrupted export leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from modelyard.domain import VersionRecord
from modelyard.errors import ConflictError, CorruptionError, NotFoundError, StorageError
from modelyard.fsutil import syncfs
from modelyard.manifest import FileEntry
from modelyard.names import MANIFEST_FILENAME
from modelyard.progress import NullProgress, Progress
from modelyard.store.base import BlobStore

_CHUNK = 1024 * 1024
# Text-like files compress well; weights do not, so they are stored as they are.
_DEFLATE_SUFFIXES = {
    ".json",
    ".yaml",
    ".yml",
    ".txt",
    ".md",
    ".log",
    ".csv",
    ".py",
    ".toml",
    ".cfg",
    ".jinja",
}


@dataclass(frozen=True)
class ExportResult:
    ref: str
    directory: Path | None
    zip_path: Path | None
    files: int
    bytes: int


def export_version(
    version: VersionRecord,
    store: BlobStore,
    *,
    to: Path | None = None,
    zip_path: Path | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    progress = progress or NullProgress()
    manifest = version.manifest
    if to is not None:
        _check_destination_dir(to)
    if zip_path is not None and zip_path.exists():
        raise ConflictError("already exists; remove it or choose another file", path=zip_path)
    if to is not None:
        progress.start(f"exporting {version.ref}", manifest.total_size)
        try:
            _export_directory(version, store, to, progress)
        finally:
            progress.finish()
    if zip_path is not None:
        progress.start(f"zipping {version.ref}", manifest.total_size)
        try:
            write_zip(version, store, zip_path, progress)
        finally:
            progress.finish()
    return ExportResult(version.ref, to, zip_path, len(manifest.files), manifest.total_size)


def _check_destination_dir(to: Path) -> None:
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ConflictError("already exists and is not an empty directory; choose a new directory", path=to)


def _export_directory(version: VersionRecord, store: BlobStore, to: Path, progress: Progress) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = to.parent / f".{to.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for entry in version.manifest.files:
            target = staging / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                _copy_blob(store, entry, version, out, progress)
        (staging / MANIFEST_FILENAME).write_text(version.manifest.to_json(), encoding="utf-8")
        syncfs(staging)
        _check_destination_dir(to)
        if to.exists():
            to.rmdir()
        os.rename(staging, to)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the export: {exc.strerror}", path=to) from None
        raise


def write_zip(version: VersionRecord, source: BlobStore | Path, zip_path: Path, progress: Progress) -> None:
    """Seed 000's upload ZIP of a version, its bytes read from the store or from a directory
    holding its files (a remote export's download), each re-hashed on the way."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    staging = zip_path.parent / f".{zip_path.name}.partial-{secrets.token_hex(4)}"
    stamp = version.manifest.created_at.timetuple()[:6]
    date_time = stamp if stamp[0] >= 1980 else (1980, 1, 1, 0, 0, 0)
    try:
        with zipfile.ZipFile(staging, "w", allowZip64=True) as archive:
            for entry in version.manifest.files:
                info = zipfile.ZipInfo(entry.path, date_time=date_time)
                info.compress_type = _compression(entry.path)
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=entry.size >= 2**31) as out:
                    _copy_blob(source, entry, version, out, progress)
            info = zipfile.ZipInfo(MANIFEST_FILENAME, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, version.manifest.to_json())
        with staging.open("rb") as handle:
            os.fsync(handle.fileno())
        if zip_path.exists():
            raise ConflictError("appeared while exporting; remove it or choose another file", path=zip_path)
        os.rename(staging, zip_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            staging.unlink()
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the ZIP: {exc.strerror}", path=zip_path) from None
        raise


def _compression(path: str) -> int:
    return zipfile.ZIP_DEFLATED if Path(path).suffix.lower() in _DEFLATE_SUFFIXES else zipfile.ZIP_STORED


def _copy_blob(
    source: BlobStore | Path, entry: FileEntry, version: VersionRecord, out: IO[bytes], progress: Progress
) -> None:
    hasher = hashlib.sha256()
    size = 0
    try:
        blob_handle = (source / entry.path).open("rb") if isinstance(source, Path) else source.open(entry.sha256)
    except (NotFoundError, FileNotFoundError):
        raise CorruptionError(
            f"the blob of {entry.path} (sha256 {entry.sha256}) is missing from the store; "
            f"run 'modelyard verify {version.artifact_name}' and register the original files again",
            path=f"{version.ref}:{entry.path}",
        ) from None
    with blob_handle as blob:
        while chunk := blob.read(_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
            progress.advance(len(chunk))
    if hasher.hexdigest() != entry.sha256 or size != entry.size:
        raise CorruptionError(
            f"stored bytes of {entry.path} no longer match sha256 {entry.sha256}; "
            f"run 'modelyard verify {version.artifact_name}' and register the original files again",
            path=f"{version.ref}:{entry.path}",
        )
