"""Writing bundles for air-gapped nodes: versions, their typed configurations and lineage, and their blobs
in one tar file that a registry without network access imports.

`write_bundle` writes a plain POSIX (pax) tar, gzipped on request: `bundle.json` first (the format
version, who wrote it and when, and per version its reference, stage, label, semantic version,
forced flag, its parent inside the bundle, its manifest, its typed configuration, its lineage and
its file list; and `document_sha256`, the digest of the rest of the document), then
`blobs/sha256/<digest>` once per distinct digest, streamed from the store and re-hashed on the way
out. It is assembled as `FILE.partial` and renamed into place at the end,
so a killed write never leaves a file named like a complete bundle.

`import_bundle` reads `bundle.json` (strict JSON, its digest checked, validated), then extracts every blob into a
private scratch directory under the registry home, hashing each as it is written; the first
digest or size mismatch, an unsafe member (absolute, `..`, a link, a device) or a member
`bundle.json` does not list refuses the whole bundle before anything is registered. Then each
version is registered in lineage order (raw before validated before production) from the verified
blobs, with its manifest fields as the run manifest and its stage, parent, semantic version,
checkpoint, label and forced flag as its lifecycle. Registration recognises a version it already
holds, so importing a bundle twice is a no-op; local version numbers may differ from the source
registry's, and parents are mapped to their local references. A new version's typed
configuration is the bundle's when this registry's own inspection reads the files differently
(marketplace metadata merged at the source, say), but its pickle verdict is always this registry's:
a bundle vouches for its bytes, not for their safety.

A failure after the first version was registered (a full disk, a concurrent promotion taking a
semantic version) leaves the versions already registered: they are complete, and importing the
bundle again adds the rest.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import hashlib
import io
import json
import os
import tarfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from modelyard import __version__
from modelyard.distribute.bundle import (
    BLOB_PREFIX,
    BUNDLE_JSON,
    CHUNK,
    FORMAT,
    FORMAT_VERSION,
    GZIP_LEVEL,
    BundleReport,
    document_digest,
)
from modelyard.domain import VersionRecord
from modelyard.errors import (
    ConflictError,
    CorruptionError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from modelyard.fsutil import fsync_dir
from modelyard.register.flow import current_user

if TYPE_CHECKING:
    from modelyard.registry import Registry
    from modelyard.store.base import BlobStore


# -- writing --------------------------------------------------------------------------------


def write_bundle(
    registry: Registry,
    references: list[str],
    out: Path,
    *,
    with_lineage: bool = True,
    gzip: bool = False,
    force: bool = False,
) -> BundleReport:
    """Write the versions `references` name (with `with_lineage`, also the versions each derives
    from) and their blobs to the tar file `out`; an existing `out` is a ConflictError unless `force`."""
    out = Path(out)
    if not references:
        raise InvalidInputError("a bundle needs at least one NAME@REF", field="references")
    if out.is_dir():
        raise InvalidInputError("is a directory; name the bundle file to write", path=out)
    if out.exists() and not force:
        raise ConflictError("already exists; remove it, choose another file or pass --force", path=out)
    versions, requested = _collect(registry, references, with_lineage)
    created_at = datetime.now(UTC)
    blobs = _distinct_blobs(versions)
    document = _document(registry, versions, requested, blobs, created_at)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as raw:
            _write_tar(raw, registry.store, document, blobs, created_at, gzip)
            raw.flush()
            os.fsync(raw.fileno())
        if out.exists() and not force:
            raise ConflictError("appeared while the bundle was written; remove it or choose another file", path=out)
        os.replace(partial, out)
        fsync_dir(out.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the bundle: {exc.strerror or exc}", path=out) from None
        raise
    return BundleReport(
        path=out,
        versions=tuple(v.ref for v in versions),
        requested=tuple(requested),
        blobs=len(blobs),
        blob_bytes=sum(size for size, _ in blobs.values()),
        size=out.stat().st_size,
        gzip=gzip,
    )


def _collect(registry: Registry, references: list[str], with_lineage: bool) -> tuple[list[VersionRecord], list[str]]:
    """The versions to bundle, parents first, and the references of those asked for."""
    chosen: dict[tuple[str, int], VersionRecord] = {}
    requested: list[str] = []
    for reference in references:
        version = registry.show(reference)
        if version.ref not in requested:
            requested.append(version.ref)
        current: VersionRecord | None = version
        while current is not None and (current.artifact_name, current.number) not in chosen:
            chosen[(current.artifact_name, current.number)] = current
            current = registry.catalog.lifecycle.parent(current) if with_lineage else None
    # A promotion makes the next version of the same artifact: a parent's number is smaller.
    return sorted(chosen.values(), key=lambda v: (v.artifact_name, v.number)), requested


def _document(
    registry: Registry,
    versions: list[VersionRecord],
    requested: list[str],
    blobs: dict[str, tuple[int, str]],
    created_at: datetime,
) -> dict[str, Any]:
    ids = {version.ref: index for index, version in enumerate(versions, start=1)}
    entries = []
    for version in versions:
        stored = registry.catalog.model_config(version)
        parent = version.manifest.derived_from
        entries.append(
            {
                "id": ids[version.ref],
                "ref": version.ref,
                "requested": version.ref in requested,
                "artifact_name": version.artifact_name,
                "number": version.number,
                "stage": version.stage,
                "label": version.label,
                "semver": version.semver,
                "forced": version.forced,
                "derived_from": ids.get(parent) if parent is not None else None,
                "manifest": json.loads(version.manifest_json),
                "typed_config": json.loads(stored.config_json) if stored is not None else None,
                "inspector_version": stored.inspector_version if stored is not None else None,
                "lineage": [asdict(step) for step in registry.lineage(version.ref)],
                "files": [entry.model_dump() for entry in version.manifest.files],
            }
        )
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": created_at.isoformat(),
        "created_by": current_user(),
        "modelyard_version": __version__,
        "versions": entries,
        "blobs": [{"sha256": digest, "size": size} for digest, (size, _) in blobs.items()],
    }
    document["document_sha256"] = document_digest(document)
    return document


def _distinct_blobs(versions: list[VersionRecord]) -> dict[str, tuple[int, str]]:
    """Each digest once, in order of first use: its size and a `NAME@N:path` that uses it."""
    blobs: dict[str, tuple[int, str]] = {}
    for version in versions:
        for entry in version.manifest.files:
            blobs.setdefault(entry.sha256, (entry.size, f"{version.ref}:{entry.path}"))
    return blobs


def _write_tar(
    raw: BinaryIO,
    store: BlobStore,
    document: dict[str, Any],
    blobs: dict[str, tuple[int, str]],
    created_at: datetime,
    gzip: bool,
) -> None:
    mtime = int(created_at.timestamp())
    if not gzip:
        _write_members(raw, store, document, blobs, mtime)
        return
    with gzip_module.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=mtime) as compressed:
        _write_members(compressed, store, document, blobs, mtime)


def _write_members(
    sink: BinaryIO | gzip_module.GzipFile,
    store: BlobStore,
    document: dict[str, Any],
    blobs: dict[str, tuple[int, str]],
    mtime: int,
) -> None:
    # pax (POSIX.1-2001): plain ustar cannot hold a member of 8 GiB or more.
    with tarfile.TarFile(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
        data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
        tar.addfile(_member(BUNDLE_JSON, len(data), mtime), io.BytesIO(data))
        for digest, (size, used_by) in blobs.items():
            _add_blob(tar, store, digest, size, used_by, mtime)


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o444
    return info


def _add_blob(tar: tarfile.TarFile, store: BlobStore, digest: str, size: int, used_by: str, mtime: int) -> None:
    """Stream one blob into the tar, re-hashing it: a corrupt blob stops the bundle."""
    try:
        handle = store.open(digest)
    except NotFoundError:
        raise CorruptionError(
            f"the blob sha256 {digest} is missing from the store; run 'modelyard verify {used_by.split('@')[0]}'",
            path=used_by,
        ) from None
    with handle:
        reader = _HashingReader(handle, size, used_by)
        tar.addfile(_member(BLOB_PREFIX + digest, size, mtime), reader)
    if reader.hexdigest() != digest:
        raise CorruptionError(
            f"stored bytes no longer match sha256 {digest}; run 'modelyard verify {used_by.split('@')[0]}'",
            path=used_by,
        )


class _HashingReader:
    """A blob as tarfile reads it: exactly `size` bytes, hashed on the way, short ones refused."""

    def __init__(self, source: BinaryIO, size: int, used_by: str) -> None:
        self._source = source
        self._remaining = size
        self._used_by = used_by
        self._hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        wanted = self._remaining if size < 0 else min(size, self._remaining)
        parts = []
        while wanted > 0:
            chunk = self._source.read(wanted)
            if not chunk:
                raise CorruptionError(
                    f"the stored blob ends {self._remaining} bytes early; "
                    f"run 'modelyard verify {self._used_by.split('@')[0]}'",
                    path=self._used_by,
                )
            parts.append(chunk)
            wanted -= len(chunk)
            self._remaining -= len(chunk)
        data = b"".join(parts)
        self._hasher.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()
