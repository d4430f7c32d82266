"""Bundles for air-gapped nodes: versions, their typed configurations and lineage, and their blobs
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
import errno
import gzip as gzip_module
import hashlib
import io
import json
import os
import shutil
import tarfile
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard import __version__
from modelyard.domain import Lifecycle, VersionRecord
from modelyard.errors import (
    ConflictError,
    CorruptionError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from modelyard.fsutil import fsync_dir
from modelyard.lifecycle.scratch import scratch_dir
from modelyard.loaders import parse_json
from modelyard.manifest import ArtifactManifest, FileEntry, Sha256Hex, format_validation_error
from modelyard.names import MANIFEST_FILENAME, SEMVER, STAGES, parse_name
from modelyard.register.flow import current_user
from modelyard.register.metadata import RegisterOptions

if TYPE_CHECKING:
    from modelyard.modelconfig import BaseModelConfig
    from modelyard.registry import Registry
    from modelyard.store.base import BlobStore

FORMAT = "modelyard-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
BLOB_PREFIX = "blobs/sha256/"
# bundle.json is read into memory: generous for manifests of tens of thousands of files, small
# enough that a hostile bundle cannot exhaust memory with it.
MAX_BUNDLE_JSON_BYTES = 256 * 1024 * 1024
SCRATCH_PREFIX = "bundle-"

_CHUNK = 1024 * 1024
# Weights barely compress; a middle level keeps --gzip from costing minutes per gigabyte.
_GZIP_LEVEL = 6
_STAGE_ORDER = {stage: index for index, stage in enumerate(STAGES)}
# Manifest fields only registration (the number) or promotion (the lifecycle) sets: never in a
# run manifest. The lifecycle goes in through RegisterOptions, with the parent's local reference.
_NOT_RUN_MANIFEST = ("schema_version", "model_version", "stage", "derived_from", "semantic_version", "checkpoint")


# -- reports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleReport:
    """What `write_bundle` wrote."""

    path: Path
    versions: tuple[str, ...]  # every version in the bundle, parents first
    requested: tuple[str, ...]  # the versions asked for (the others came as their lineage)
    blobs: int
    blob_bytes: int
    size: int  # bytes of the bundle file
    gzip: bool


@dataclass(frozen=True)
class ImportedVersion:
    """One version of an imported bundle: its reference here and in the source registry."""

    source_ref: str
    ref: str
    stage: str
    created: bool  # False: this registry already held the identical version
    # Where its typed configuration came from: "inspection" (this registry's own, which agreed
    # with the bundle's), "bundle", or None (no configuration, or the version was already here).
    typed_config: Literal["inspection", "bundle"] | None


@dataclass(frozen=True)
class ImportReport:
    """What `import_bundle` did."""

    path: Path
    versions: tuple[ImportedVersion, ...]
    blobs: int
    blob_bytes: int
    warnings: tuple[str, ...] = ()

    @property
    def created(self) -> list[ImportedVersion]:
        return [v for v in self.versions if v.created]

    @property
    def present(self) -> list[ImportedVersion]:
        return [v for v in self.versions if not v.created]


# -- bundle.json ----------------------------------------------------------------------------


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _LineageStep(_Document):
    ref: str
    stage: str
    label: str | None
    detail: str


class _Blob(_Document):
    sha256: Sha256Hex
    size: int = Field(ge=0)


class _Version(_Document):
    id: int = Field(ge=1)
    ref: str
    requested: bool
    artifact_name: str = Field(min_length=1, max_length=200)
    number: int = Field(ge=1)
    stage: Literal["raw", "validated", "production"]
    label: str | None
    semver: str | None
    forced: bool
    derived_from: int | None
    manifest: dict[str, Any]
    typed_config: dict[str, Any] | None
    inspector_version: int | None
    lineage: list[_LineageStep]
    files: list[FileEntry]


class _Bundle(_Document):
    format: Literal["modelyard-bundle"]
    format_version: int
    created_at: datetime
    created_by: str
    modelyard_version: str
    versions: list[_Version] = Field(min_length=1)
    blobs: list[_Blob]
    document_sha256: Sha256Hex


@dataclass(frozen=True)
class _Entry:
    """A version of the bundle with its manifest and typed configuration validated."""

    version: _Version
    manifest: ArtifactManifest
    config: BaseModelConfig | None


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


def document_digest(document: dict[str, Any]) -> str:
    """The SHA-256 of bundle.json's content without its `document_sha256` field, serialised with
    sorted keys, no whitespace and ASCII only: the blobs carry their digests in their names, and
    this one covers the metadata (a flipped byte in a label or a metric would otherwise pass)."""
    content = {key: value for key, value in document.items() if key != "document_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


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
    with gzip_module.GzipFile(fileobj=raw, mode="wb", compresslevel=_GZIP_LEVEL, mtime=mtime) as compressed:
        _write_members(compressed, store, document, blobs, mtime)


def _write_members(
    sink: BinaryIO | gzip_module.GzipFile,
    store: BlobStore,
    document: dict[str, Any],
    blobs: dict[str, tuple[int, str]],
    mtime: int,
) -> None:
    # pax (POSIX.1-2001): plain ustar cannot hold a member of 8 GiB or more.
    with tarfile.TarFile(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:
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


# -- importing ------------------------------------------------------------------------------


def import_bundle(registry: Registry, path: Path) -> ImportReport:
    """Verify every blob of the bundle at `path`, then register its versions in lineage order;
    versions this registry already holds are left as they are."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("not found or not a file; give the bundle file `modelyard bundle` wrote", path=path)
    with scratch_dir(registry.settings.home, SCRATCH_PREFIX) as scratch:
        blobs_dir = scratch / "blobs"
        blobs_dir.mkdir()
        bundle, entries = _extract(path, blobs_dir)
        _check_names(registry, path, entries)
        _check_semantic_versions(registry, path, entries)
        imported, warnings = _register_all(registry, path, bundle, entries, scratch)
    return ImportReport(
        path=path,
        versions=tuple(imported),
        blobs=len(bundle.blobs),
        blob_bytes=sum(blob.size for blob in bundle.blobs),
        warnings=tuple(warnings),
    )


def _extract(path: Path, blobs_dir: Path) -> tuple[_Bundle, list[_Entry]]:
    """Read and validate bundle.json, then extract and verify every blob it lists."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(path.open("rb"))
        except OSError as exc:
            raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=path) from None
        try:
            # Stream mode: one sequential pass, each member hashed as it goes by.
            tar = stack.enter_context(tarfile.open(fileobj=handle, mode="r|*", bufsize=_CHUNK))
        except tarfile.TarError:
            raise InvalidInputError(
                "not a tar archive; a bundle is the tar file `modelyard bundle` writes", path=path
            ) from None
        try:
            bundle, entries = _read_document(tar, path)
            expected = {blob.sha256: blob.size for blob in bundle.blobs}
            seen = _extract_blobs(tar, path, expected, blobs_dir)
        except (tarfile.TarError, EOFError, zlib.error, gzip_module.BadGzipFile) as exc:
            raise CorruptionError(f"truncated or damaged ({exc}); nothing was imported", path=path) from None
        except OSError as exc:
            raise StorageError(f"cannot extract the bundle: {exc.strerror or exc}", path=path) from None
    missing = [digest for digest in expected if digest not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CorruptionError(
            f"truncated: member {BLOB_PREFIX + missing[0]!r} is missing{more}; nothing was imported", path=path
        )
    return bundle, entries


def _read_document(tar: tarfile.TarFile, path: Path) -> tuple[_Bundle, list[_Entry]]:
    member = tar.next()
    if member is None or member.name != BUNDLE_JSON or not member.isreg():
        found = "nothing" if member is None else repr(member.name)
        raise InvalidInputError(f"the first member must be {BUNDLE_JSON}, found {found}; not a bundle", path=path)
    if member.size > MAX_BUNDLE_JSON_BYTES:
        raise InvalidInputError(f"{BUNDLE_JSON} is larger than {MAX_BUNDLE_JSON_BYTES} bytes", path=path)
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    data = source.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"not UTF-8 text (byte {exc.start})", path=f"{path}:{BUNDLE_JSON}") from None
    return _parse_document(text, f"{path}:{BUNDLE_JSON}")


def _parse_document(text: str, source: str) -> tuple[_Bundle, list[_Entry]]:
    """Validate bundle.json's text: strict JSON, the format version, each entry and how the
    entries, their manifests and the blob list agree. Errors name `source` and the field."""
    value = parse_json(text, source)
    if not isinstance(value, dict):
        raise InvalidInputError("must hold a JSON object", path=source)
    if value.get("format") != FORMAT:
        raise InvalidInputError(f"is {value.get('format')!r}, expected {FORMAT!r}", path=source, field="format")
    version = value.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise InvalidInputError(
            f"{version!r} is not a bundle format this modelyard reads ({FORMAT_VERSION}); "
            "write the bundle with a matching modelyard or upgrade this one",
            path=source,
            field="format_version",
        )
    stated = value.get("document_sha256")
    if not isinstance(stated, str):
        raise InvalidInputError(
            "is missing or not a string; not a bundle `modelyard bundle` wrote", path=source, field="document_sha256"
        )
    if stated != document_digest(value):
        raise CorruptionError(
            f"the document does not match its document_sha256 ({stated}): damaged in transit? nothing was imported",
            path=source,
        )
    try:
        bundle = _Bundle.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _document_error(exc, source) from None
    entries = [_check_version(bundle, index, source) for index in range(len(bundle.versions))]
    _check_blobs(bundle, source)
    return bundle, entries


def _document_error(exc: ValidationError, source: str) -> InvalidInputError:
    error = exc.errors()[0]
    field = ""
    for part in error["loc"]:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    more = len(exc.errors()) - 1
    message = error["msg"] + (f" (and {more} more problems)" if more else "")
    return InvalidInputError(message, path=source, field=field or None)


def _check_version(bundle: _Bundle, index: int, source: str) -> _Entry:
    """One entry: its manifest and configuration valid, and both agreeing with the entry."""
    from modelyard.modelconfig import parse_model_config

    version = bundle.versions[index]
    where = f"versions[{index}]"
    earlier = {v.id: v for v in bundle.versions[:index]}

    def refuse(field: str, message: str) -> InvalidInputError:
        return InvalidInputError(message, path=source, field=f"{where}.{field}")

    if version.id in earlier:
        raise refuse("id", f"{version.id} is used by another entry")
    if version.ref != f"{version.artifact_name}@{version.number}":
        raise refuse("ref", f"{version.ref!r} is not {version.artifact_name}@{version.number}")
    if any((v.artifact_name, v.number) == (version.artifact_name, version.number) for v in earlier.values()):
        raise refuse("ref", f"{version.ref} is listed twice")
    try:
        manifest = ArtifactManifest.model_validate(version.manifest)
    except ValidationError as exc:
        raise format_validation_error(exc, f"{source} {where}.manifest") from None
    stated = {
        "artifact_name": (version.artifact_name, manifest.artifact_name),
        "number": (version.number, manifest.model_version),
        "stage": (version.stage, manifest.stage),
        "semver": (version.semver, manifest.semantic_version),
        "files": (version.files, manifest.files),
    }
    for field, (entry_value, manifest_value) in stated.items():
        if entry_value != manifest_value:
            raise refuse(
                field, f"disagrees with the entry's manifest ({_short(entry_value)} vs {_short(manifest_value)})"
            )
    if version.semver is not None and (version.stage != "production" or not SEMVER.match(version.semver)):
        raise refuse(
            "semver", f"{version.semver!r}: only a production version has a semantic version (MAJOR.MINOR.PATCH)"
        )
    if version.derived_from is not None:
        parent = earlier.get(version.derived_from)
        if parent is None:
            raise refuse("derived_from", f"{version.derived_from} is not the id of an earlier entry")
        if parent.artifact_name != version.artifact_name or _STAGE_ORDER[parent.stage] >= _STAGE_ORDER[version.stage]:
            raise refuse(
                "derived_from", f"{version.ref} ({version.stage}) cannot derive from {parent.ref} ({parent.stage})"
            )
    config = None
    if version.typed_config is not None:
        config = parse_model_config(version.typed_config, f"{source} {where}.typed_config")
    return _Entry(version, manifest, config)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_blobs(bundle: _Bundle, source: str) -> None:
    """The blob list: each digest once, every file's digest in it with its size, none unused."""
    sizes: dict[str, int] = {}
    for index, blob in enumerate(bundle.blobs):
        if blob.sha256 in sizes:
            raise InvalidInputError(f"{blob.sha256} is listed twice", path=source, field=f"blobs[{index}].sha256")
        sizes[blob.sha256] = blob.size
    used: set[str] = set()
    for index, version in enumerate(bundle.versions):
        for entry in version.files:
            if sizes.get(entry.sha256) != entry.size:
                raise InvalidInputError(
                    f"{entry.path}: sha256 {entry.sha256} with size {entry.size} is not in the blob list",
                    path=source,
                    field=f"versions[{index}].files",
                )
            used.add(entry.sha256)
    unused = [digest for digest in sizes if digest not in used]
    if unused:
        raise InvalidInputError(f"{unused[0]} is not a file of any version", path=source, field="blobs")


def _extract_blobs(tar: tarfile.TarFile, path: Path, expected: dict[str, int], blobs_dir: Path) -> set[str]:
    """Every member after bundle.json: a blob it lists, written to `blobs_dir` and verified."""
    seen: set[str] = set()
    # tar.next(), not iteration: iterating a stream-mode TarFile starts again at bundle.json.
    while (member := tar.next()) is not None:
        digest = _check_member(member, path, expected, seen)
        _extract_blob(tar, member, digest, path, blobs_dir / digest)
        seen.add(digest)
    return seen


def _check_member(member: tarfile.TarInfo, path: Path, expected: dict[str, int], seen: set[str]) -> str:
    """The digest a member holds; unsafe, unlisted, repeated or wrongly sized members are refused."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise InvalidInputError(f"member {name!r} has an unsafe name (absolute or '..'); refused", path=path)
    if member.issym() or member.islnk():
        raise InvalidInputError(f"member {name!r} is a link; a bundle holds only regular files", path=path)
    if member.isdev():
        raise InvalidInputError(f"member {name!r} is a device or FIFO; a bundle holds only regular files", path=path)
    if not member.isreg() or member.issparse():
        raise InvalidInputError(f"member {name!r} is not a regular file; a bundle holds only regular files", path=path)
    digest = name.removeprefix(BLOB_PREFIX)
    if not name.startswith(BLOB_PREFIX) or digest not in expected:
        raise InvalidInputError(f"member {name!r} is not listed in {BUNDLE_JSON}; refused", path=path)
    if digest in seen:
        raise InvalidInputError(f"member {name!r} appears twice", path=path)
    if member.size != expected[digest]:
        raise CorruptionError(
            f"member {name!r} has {member.size} bytes, {BUNDLE_JSON} says {expected[digest]}; nothing was imported",
            path=path,
        )
    return digest


def _extract_blob(tar: tarfile.TarFile, member: tarfile.TarInfo, digest: str, path: Path, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    hasher = hashlib.sha256()
    size = 0
    with target.open("xb") as sink:
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
            sink.write(chunk)
            size += len(chunk)
    if size != member.size:
        raise CorruptionError(f"member {member.name!r} is truncated; nothing was imported", path=path)
    actual = hasher.hexdigest()
    if actual != digest:
        raise CorruptionError(
            f"member {member.name!r} does not match its digest (its bytes hash to {actual}); nothing was imported",
            path=path,
        )


def _check_names(registry: Registry, path: Path, entries: list[_Entry]) -> None:
    """Every artifact name is one this registry accepts, before the first version is registered."""
    for name in dict.fromkeys(entry.version.artifact_name for entry in entries):
        try:
            parse_name(name, registry.settings.vocabulary)
        except InvalidInputError as exc:
            raise InvalidInputError(f"artifact {name!r}: {exc.message}", path=path) from None


def _check_semantic_versions(registry: Registry, path: Path, entries: list[_Entry]) -> None:
    """A semantic version already here on another version: refuse the bundle before registering."""
    by_id = {entry.version.id: entry for entry in entries}
    for entry in entries:
        version = entry.version
        if version.semver is None:
            continue
        try:
            local = next((v for v in registry.versions(version.artifact_name) if v.semver == version.semver), None)
        except NotFoundError:
            continue
        if local is not None and not _same_version(registry, local, entry, by_id):
            raise ConflictError(
                f"{version.artifact_name} {version.semver} already exists here as {local.ref}, which is not "
                f"{version.ref} of the bundle (other files or lineage); semantic versions are never reused",
                path=path,
            )


def _same_version(registry: Registry, local: VersionRecord, entry: _Entry, by_id: dict[int, _Entry]) -> bool:
    """Whether a local version is the one this entry would register: same files, creation time and
    label, and the same chain of parents (an import without lineage made a different version)."""
    manifest = local.manifest
    if (manifest.files, manifest.created_at, local.label) != (
        entry.manifest.files,
        entry.manifest.created_at,
        entry.version.label,
    ):
        return False
    parent_id = entry.version.derived_from
    if parent_id is None or manifest.derived_from is None:
        return parent_id is None and manifest.derived_from is None
    return _same_version(registry, registry.show(manifest.derived_from), by_id[parent_id], by_id)


def _register_all(
    registry: Registry, path: Path, bundle: _Bundle, entries: list[_Entry], scratch: Path
) -> tuple[list[ImportedVersion], list[str]]:
    """Register each version (parents first: the bundle lists them so) from the verified blobs."""
    local_refs: dict[int, str] = {}
    imported: list[ImportedVersion] = []
    warnings: list[str] = []
    for entry in entries:
        version = entry.version
        tree = _build_tree(scratch / "trees" / str(version.id), entry, scratch / "blobs")
        parent = local_refs[version.derived_from] if version.derived_from is not None else None
        lifecycle = Lifecycle(
            stage=version.stage,
            derived_from=parent,
            semantic_version=version.semver,
            checkpoint=entry.manifest.checkpoint,
            label=version.label,
            forced=version.forced,
        )
        options = RegisterOptions(
            # A version stored without a typed configuration (its files not inspectable, say)
            # is imported the same way.
            inspect=entry.config is not None,
            lifecycle=lifecycle,
            source_label=f"bundle {path.name}",
        )
        # Hardlinks: the store takes the verified, already extracted bytes without a copy.
        result = registry.register(tree, options, link=True)
        local = result.version
        local_refs[version.id] = local.ref
        warnings += [f"{local.ref}: {message}" for message in result.warnings]
        typed_config = None
        if result.created:
            typed_config = _record_import(registry, path, bundle, entry, local)
            warnings += _drift(entry, local)
        imported.append(ImportedVersion(version.ref, local.ref, version.stage, result.created, typed_config))
    return imported, warnings


def _build_tree(tree: Path, entry: _Entry, blobs_dir: Path) -> Path:
    """The version's files as hardlinks of the verified blobs, and its manifest fields as the run
    manifest (as `register_tree` does for a promotion)."""
    try:
        tree.mkdir(parents=True)
        for file in entry.manifest.files:
            target = tree / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blobs_dir / file.sha256, target)
        fields = {
            key: value
            for key, value in entry.manifest.model_dump(mode="json", by_alias=True).items()
            if key not in _NOT_RUN_MANIFEST and value is not None
        }
        (tree / MANIFEST_FILENAME).write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot build the tree of {entry.version.ref}: {exc.strerror or exc}", path=tree) from None
    return tree


def _link_or_copy(blob: Path, target: Path) -> None:
    try:
        os.link(blob, target)
    except OSError as exc:
        # No hardlinks on this filesystem, or a blob used so often that its link count is full.
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP):
            raise
        shutil.copyfile(blob, target)


def _record_import(
    registry: Registry, path: Path, bundle: _Bundle, entry: _Entry, local: VersionRecord
) -> Literal["inspection", "bundle"] | None:
    """Audit the import of a new version and keep the bundle's typed configuration where this
    registry's own inspection says otherwise (marketplace metadata merged at the source, say)."""
    details: dict[str, Any] = {
        "bundle": path.name,
        "source_ref": entry.version.ref,
        "bundle_created_by": bundle.created_by,
        "bundle_created_at": bundle.created_at.isoformat(),
    }
    actor = current_user()
    if entry.config is None:
        registry.catalog.record_event(actor, "import", local.artifact_name, local.number, details)
        return None
    stored = registry.catalog.model_config(local)
    inspected = stored.config if stored is not None else None
    if inspected is not None and inspected.model_dump_json() == entry.config.model_dump_json():
        registry.catalog.record_event(actor, "import", local.artifact_name, local.number, details)
        return "inspection"
    config = entry.config
    if inspected is not None:
        # The pickle verdict is about bytes this registry holds and judged itself; a bundle is
        # checked against its own digests only, so its word on pickle safety is not taken.
        config = config.model_copy(update={"pickle_scan": inspected.pickle_scan})
    registry.catalog.set_model_config(
        local,
        config,
        actor=actor,
        action="import",
        inspector_version=entry.version.inspector_version or 0,
        details={**details, "typed_config": "bundle"},
    )
    return "bundle"


def _drift(entry: _Entry, local: VersionRecord) -> list[str]:
    """Fields this registry's manifest differs in from the source's (its own inspection filled a
    field the source left empty, say): worth a warning, not a refusal."""
    ignored = {"schema_version", "model_version", "derived_from"}
    ours = {k: v for k, v in local.manifest.model_dump(mode="json").items() if k not in ignored}
    theirs = {k: v for k, v in entry.manifest.model_dump(mode="json").items() if k not in ignored}
    changed = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
    if not changed:
        return []
    return [f"{local.ref}: its manifest differs from {entry.version.ref}'s in the bundle in {', '.join(changed)}"]
