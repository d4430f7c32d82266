"""The bundle format: `bundle.json`'s schema, its digest and the checks an import makes of it,
and the reports of writing and importing. Writing is `bundle_write`, importing `bundle_import`;
the format as a whole is described there and in docs/distribution.md."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.errors import (
    CorruptionError,
    InvalidInputError,
)
from modelyard.loaders import parse_json
from modelyard.manifest import ArtifactManifest, FileEntry, Sha256Hex, format_validation_error
from modelyard.names import SEMVER, STAGES

if TYPE_CHECKING:
    from modelyard.modelconfig import BaseModelConfig

FORMAT = "modelyard-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
BLOB_PREFIX = "blobs/sha256/"
# bundle.json is read into memory: generous for manifests of tens of thousands of files, small
# enough that a hostile bundle cannot exhaust memory with it.
MAX_BUNDLE_JSON_BYTES = 256 * 1024 * 1024
SCRATCH_PREFIX = "bundle-"

CHUNK = 1024 * 1024
# Weights barely compress; a middle level keeps --gzip from costing minutes per gigabyte.
GZIP_LEVEL = 6
_STAGE_ORDER = {stage: index for index, stage in enumerate(STAGES)}
# Manifest fields only registration (the number) or promotion (the lifecycle) sets: never in a
# run manifest. The lifecycle goes in through RegisterOptions, with the parent's local reference.
NOT_RUN_MANIFEST = ("schema_version", "model_version", "stage", "derived_from", "semantic_version", "checkpoint")


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


class BundleDocument(_Document):
    format: Literal["modelyard-bundle"]
    format_version: int
    created_at: datetime
    created_by: str
    modelyard_version: str
    versions: list[_Version] = Field(min_length=1)
    blobs: list[_Blob]
    document_sha256: Sha256Hex


@dataclass(frozen=True)
class BundleEntry:
    """A version of the bundle with its manifest and typed configuration validated."""

    version: _Version
    manifest: ArtifactManifest
    config: BaseModelConfig | None


def document_digest(document: dict[str, Any]) -> str:
    """The SHA-256 of bundle.json's content without its `document_sha256` field, serialised with
    sorted keys, no whitespace and ASCII only: the blobs carry their digests in their names, and
    this one covers the metadata (a flipped byte in a label or a metric would otherwise pass)."""
    content = {key: value for key, value in document.items() if key != "document_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# -- reading bundle.json ---------------------------------------------------------------------


def parse_document(text: str, source: str) -> tuple[BundleDocument, list[BundleEntry]]:
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
        bundle = BundleDocument.model_validate_json(text, strict=True)
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


def _check_version(bundle: BundleDocument, index: int, source: str) -> BundleEntry:
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
    return BundleEntry(version, manifest, config)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_blobs(bundle: BundleDocument, source: str) -> None:
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
