"""Importing a bundle (see `modelyard.distribute.bundle_write` for the format and the whole story)."""

from __future__ import annotations

import contextlib
import errno
import gzip as gzip_module
import hashlib
import json
import os
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelyard.distribute.bundle import (
    BLOB_PREFIX,
    BUNDLE_JSON,
    CHUNK,
    MAX_BUNDLE_JSON_BYTES,
    NOT_RUN_MANIFEST,
    SCRATCH_PREFIX,
    BundleDocument,
    BundleEntry,
    ImportedVersion,
    ImportReport,
    parse_document,
)
from modelyard.domain import Lifecycle, VersionRecord
from modelyard.errors import (
    ConflictError,
    CorruptionError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from modelyard.lifecycle.scratch import scratch_dir
from modelyard.names import MANIFEST_FILENAME, parse_name
from modelyard.register.flow import current_user
from modelyard.register.metadata import RegisterOptions

if TYPE_CHECKING:
    from modelyard.registry import Registry


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


def _extract(path: Path, blobs_dir: Path) -> tuple[BundleDocument, list[BundleEntry]]:
    """Read and validate bundle.json, then extract and verify every blob it lists."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(path.open("rb"))
        except OSError as exc:
            raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=path) from None
        try:
            # Stream mode: one sequential pass, each member hashed as it goes by.
            tar = stack.enter_context(tarfile.open(fileobj=handle, mode="r|*", bufsize=CHUNK))
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


def _read_document(tar: tarfile.TarFile, path: Path) -> tuple[BundleDocument, list[BundleEntry]]:
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
    return parse_document(text, f"{path}:{BUNDLE_JSON}")


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
        while chunk := source.read(CHUNK):
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


def _check_names(registry: Registry, path: Path, entries: list[BundleEntry]) -> None:
    """Every artifact name is one this registry accepts, before the first version is registered."""
    for name in dict.fromkeys(entry.version.artifact_name for entry in entries):
        try:
            parse_name(name, registry.settings.vocabulary)
        except InvalidInputError as exc:
            raise InvalidInputError(f"artifact {name!r}: {exc.message}", path=path) from None


def _check_semantic_versions(registry: Registry, path: Path, entries: list[BundleEntry]) -> None:
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


def _same_version(registry: Registry, local: VersionRecord, entry: BundleEntry, by_id: dict[int, BundleEntry]) -> bool:
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
    registry: Registry, path: Path, bundle: BundleDocument, entries: list[BundleEntry], scratch: Path
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


def _build_tree(tree: Path, entry: BundleEntry, blobs_dir: Path) -> Path:
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
            if key not in NOT_RUN_MANIFEST and value is not None
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
    registry: Registry, path: Path, bundle: BundleDocument, entry: BundleEntry, local: VersionRecord
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


def _drift(entry: BundleEntry, local: VersionRecord) -> list[str]:
    """Fields this registry's manifest differs in from the source's (its own inspection filled a
    field the source left empty, say): worth a warning, not a refusal."""
    ignored = {"schema_version", "model_version", "derived_from"}
    ours = {k: v for k, v in local.manifest.model_dump(mode="json").items() if k not in ignored}
    theirs = {k: v for k, v in entry.manifest.model_dump(mode="json").items() if k not in ignored}
    changed = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
    if not changed:
        return []
    return [f"{local.ref}: its manifest differs from {entry.version.ref}'s in the bundle in {', '.join(changed)}"]
