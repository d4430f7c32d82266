"""Step 1 of the flow: turn a training output into a new immutable version.

scan the source -> resolve metadata (flags, run manifest, config) -> look up the stat cache ->
store the files not already stored -> publish the blobs durably -> commit the version.

The catalog commit comes last, so a version is visible only once all its blobs are durable.
Registering content that an existing version of the same name already holds (same files, same
user-given fields) returns that version. When every file is in the stat cache, that check runs
before anything is read or locked.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.config import Settings
from modelyard.digest import canonical_json
from modelyard.domain import Registration, VersionRecord
from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.progress import NullProgress, Progress
from modelyard.register.ingest import IngestResult, ingest
from modelyard.register.metadata import (
    RegisterOptions,
    ResolvedMetadata,
    apply_inspection,
    resolve_metadata,
    validate_metadata,
)
from modelyard.register.scan import SourceFile, SourceTree, scan_source
from modelyard.register.statcache import StatCache, tree_signature
from modelyard.store.base import BlobStore, BlobWriter

if TYPE_CHECKING:  # SQLAlchemy (~0.2 s) and pydantic (~0.1 s) load only when a version is made
    from modelyard.catalog.catalog import Catalog
    from modelyard.manifest import ArtifactManifest, FileEntry, RunManifest
    from modelyard.modelconfig import BaseModelConfig

FindExisting = Callable[[str, str], VersionRecord | None]


@dataclass
class RegistryParts:
    """What the flow needs from the registry, opened lazily: the catalog only when needed."""

    settings: Settings
    store: Callable[[], BlobStore]
    catalog: Callable[[], Catalog]
    find_existing: FindExisting


def register(
    parts: RegistryParts,
    path: str | Path,
    options: RegisterOptions | None = None,
    *,
    link: bool = False,
    progress: Progress | None = None,
) -> Registration:
    with _cyclic_gc_paused():
        return _register(parts, path, options or RegisterOptions(), link=link, progress=progress or NullProgress())


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A registration allocates tens of thousands of short-lived objects and no reference cycles;
    the cyclic collector's repeated passes over them cost about a fifth of a large registration."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _register(
    parts: RegistryParts, path: str | Path, options: RegisterOptions, *, link: bool, progress: Progress
) -> Registration:
    started_ns = time.time_ns()
    source = scan_source(Path(path), options.exclude)
    incoming = _load_run_manifest(source.run_manifest) if source.run_manifest else None
    meta = resolve_metadata(options, source, incoming, parts.settings.vocabulary)

    cache = StatCache(parts.settings.stat_cache_path)
    try:
        unchanged, cached = _find_unchanged(parts, cache, source, meta, started_ns)
        if unchanged is not None:
            return unchanged
        validate_metadata(meta)
        store = parts.store()
        catalog = parts.catalog()
        epoch = store.removal_epoch()  # read before publishing: a later removal moves it on
        with store.writer() as writer:
            result = ingest(
                source.files,
                store=store,
                writer=writer,
                cached=cached,
                link=link,
                workers=parts.settings.hash_workers,
                progress=progress,
            )
            files = [(e.path, e.size, e.sha256) for e in result.entries]
            _check_incoming_files(meta, files, source)
            key = content_key(meta.identity, files)
            model_config = _inspect(writer, source, meta, result) if options.inspect else None
            if model_config is not None:
                meta = apply_inspection(meta, _suggestions(model_config))
            writer.publish()
            version, created = catalog.add_version(
                name=meta.artifact_name,
                content_key=key,
                build_manifest=lambda number: _build_manifest(meta, number, result.entries),
                registered_by=acting_user(),
                source_path=options.source_label or str(source.given),
                model_config=model_config,
                inspector_version=_inspector_version(),
                lifecycle=options.lifecycle,
            )
        fresh = _restat(result.read)
        cache.record(fresh, started_ns)
        if len(fresh) == len(result.read):  # no file changed while it was stored
            # Files read were stat'ed again (linking moves their ctime); the others were untouched.
            restated = {source_file.relpath: source_file for source_file, _ in fresh}
            tree_files = [restated.get(f.relpath, f) for f in source.files]
            digests = [e.sha256 for e in result.entries]
            cache.record_tree(str(source.given), tree_files, tree_signature(tree_files), digests, started_ns, epoch)
    finally:
        cache.close()
    return _registration(version, created, source, meta, result)


def _find_unchanged(
    parts: RegistryParts, cache: StatCache, source: SourceTree, meta: ResolvedMetadata, started_ns: int
) -> tuple[Registration | None, dict[str, str]]:
    """The existing version, if every file is known unchanged and that exact content is registered;
    and the digests the stat cache vouches for, for the files that must be stored otherwise.

    First the tree snapshot (one row for the whole tree; no blob checks while the store's removal
    epoch is the one recorded), then the per-file stat cache."""
    root = str(source.given)
    signature = tree_signature(source.files)
    snapshot = cache.lookup_tree(root, source.files, signature)
    if snapshot is not None:
        existing = _existing_version(parts, source, meta, snapshot.digests)
        if existing is not None:
            epoch = parts.store().removal_epoch()
            if epoch == snapshot.store_epoch or parts.store().has_all(snapshot.digests):
                if epoch != snapshot.store_epoch:
                    cache.record_tree(root, source.files, signature, snapshot.digests, started_ns, epoch)
                return _registration(existing, False, source, meta, IngestResult(entries=[])), {}
    cached = cache.lookup(source.files)
    if len(cached) != len(source.files):
        return None, cached
    digests = [cached[f.abspath] for f in source.files]
    existing = _existing_version(parts, source, meta, digests)
    if existing is None:
        return None, cached
    epoch = parts.store().removal_epoch()
    if not parts.store().has_all(digests):
        return None, cached
    cache.record_tree(root, source.files, signature, digests, started_ns, epoch)
    return _registration(existing, False, source, meta, IngestResult(entries=[])), cached


def _existing_version(
    parts: RegistryParts, source: SourceTree, meta: ResolvedMetadata, digests: list[str]
) -> VersionRecord | None:
    files = [(f.relpath, f.size, d) for f, d in zip(source.files, digests, strict=True)]
    _check_incoming_files(meta, files, source)
    return parts.find_existing(meta.artifact_name, content_key(meta.identity, files))


def content_key(identity: dict[str, Any], files: Iterable[tuple[str, int, str]]) -> str:
    """What makes two registrations the same version: user-given fields and the exact files."""
    hasher = hashlib.sha256(canonical_json(_jsonable(identity)))
    hasher.update("".join([f"\n{path}\0{size}\0{sha256}" for path, size, sha256 in files]).encode())
    return hasher.hexdigest()


def _jsonable(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in identity.items()}


def _check_incoming_files(meta: ResolvedMetadata, files: list[tuple[str, int, str]], source: SourceTree) -> None:
    """A run manifest that lists files vouches for them: each must be present and identical."""
    if not meta.incoming_files:
        return
    stored = {path: (size, sha256) for path, size, sha256 in files}
    manifest_path = source.run_manifest
    for claimed in meta.incoming_files:
        actual = stored.get(claimed["path"])
        if actual is None:
            raise InvalidInputError(
                f"lists {claimed['path']!r}, which is not in the directory", path=manifest_path, field="files"
            )
        if actual != (claimed["size"], claimed["sha256"]):
            raise InvalidInputError(
                f"{claimed['path']!r} should have size {claimed['size']} and sha256 {claimed['sha256'][:12]}…, "
                f"the file has size {actual[0]} and sha256 {actual[1][:12]}…",
                path=manifest_path,
                field="files",
            )


def _inspect(writer: BlobWriter, source: SourceTree, meta: ResolvedMetadata, result: IngestResult) -> BaseModelConfig:
    """Inspect exactly the bytes being stored (the staged blobs), naming the user's files in
    messages. A malformed model file stops the registration here, before anything is published."""
    from modelyard.inspect import Hints, inspect_tree
    from modelyard.inspect.tree import BlobTree

    root = source.root
    tree = BlobTree(
        writer.open_blob,
        str(source.given),
        {e.path: (e.size, e.sha256) for e in result.entries},
        name_of=lambda path: str(root / path),
    )
    hints = Hints(
        artifact_name=meta.artifact_name,
        component=meta.fields.get("component"),
        task=meta.fields.get("task"),
        node_type=meta.fields.get("node_type"),
        base_model=meta.fields.get("base_model"),
    )
    try:
        return inspect_tree(tree, hints, result.heads)
    except InvalidModelFileError as exc:
        raise InvalidModelFileError(
            f"{exc.message} (to store the files as they are, without reading model headers: --no-inspect)",
            path=exc.path,
            field=exc.field,
        ) from None


def _suggestions(config: BaseModelConfig) -> dict[str, Any]:
    from modelyard.inspect import manifest_suggestions

    return manifest_suggestions(config)


def _inspector_version() -> int:
    from modelyard.inspect import INSPECTOR_VERSION

    return INSPECTOR_VERSION


def _load_run_manifest(path: Path) -> RunManifest:
    from modelyard.manifest import load_run_manifest

    return load_run_manifest(path)


def _build_manifest(meta: ResolvedMetadata, number: int, entries: list[FileEntry]) -> ArtifactManifest:
    from pydantic import ValidationError

    from modelyard.manifest import ArtifactManifest, format_validation_error

    data = {**meta.fields, "artifact_name": meta.artifact_name, "model_version": number, "files": entries}
    try:
        return ArtifactManifest.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, "manifest") from None


def _restat(read: list[tuple[SourceFile, str]]) -> list[tuple[SourceFile, str]]:
    """Stat files again after storing them (linking changes their ctime) for the stat cache."""
    fresh = []
    for source, digest in read:
        try:
            st = os.stat(source.abspath)
        except OSError:
            continue
        if (st.st_size, st.st_mtime_ns) == (source.size, source.mtime_ns):
            fresh.append((SourceFile.from_stat(source.relpath, source.abspath, st), digest))
    return fresh


def _registration(
    version: VersionRecord, created: bool, source: SourceTree, meta: ResolvedMetadata, result: IngestResult
) -> Registration:
    warnings = list(meta.warnings)
    incoming = meta.incoming_model_version
    if incoming is not None and str(incoming) != str(version.number):
        warnings.append(
            f"the run's manifest says model_version {incoming!r}; the registry numbers this version "
            f"{version.number} ({version.ref})"
        )
    return Registration(
        version=version,
        created=created,
        files_total=len(source.files),
        bytes_total=source.total_size,
        files_read=result.files_read,
        bytes_read=result.bytes_read,
        bytes_added=result.bytes_added,
        methods=dict(result.methods),
        warnings=tuple(warnings),
    )


def acting_user() -> str:
    """Who a registration is recorded as: the API key's owner on a server request, else the OS user."""
    from modelyard.access import current_principal

    principal = current_principal.get()
    return principal.name if principal is not None else current_user()


def current_user() -> str:
    """The OS user running this process (recorded as who registered a version)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
