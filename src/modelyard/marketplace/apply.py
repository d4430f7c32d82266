"""Merge a marketplace answer into a registered version's model entry, after checking its files.

    imported = import_model_info(info, "meta-llama/Llama-3.2-1B-Instruct")
    result = import_into(registry, "llama-3b-v1@2", imported)
    result.verified    # ["model.safetensors"]: the version's files whose SHA-256 the answer confirms
    result.unmatched   # marketplace files the version does not hold
    result.config      # the merged entry, now in the catalog (one "import" event in the audit log)

First every digest the answer states for a file the version also holds (same path on the Hub,
same base name on CivitAI) is compared with the manifest's SHA-256: one mismatch and nothing is
written, because the metadata describes other bytes. Then the entries merge. What the stored
entry read from the files themselves stays (files, weights, pickle scan, format, layout, and
whatever else it knows: architecture, tokenizer, dtype, ...); what only a marketplace knows
(downloads, likes, commit, gating, trigger words, previews, hashes, ids) comes from the answer;
tags gather both sides; license and base model come from the answer only where the entry has
none. A version registered without inspection gets the answer's configuration, listing the
version's own files, with a warning that none of them was read. The files and the manifest never
change: only the model entry does.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConflictError
from modelyard.marketplace import MarketplaceFile, MarketplaceImport, Source
from modelyard.modelconfig import CONFIG_CLASSES, BaseModelConfig, parse_model_config

if TYPE_CHECKING:
    from modelyard.manifest import FileEntry
    from modelyard.registry import Registry

MAX_LISTED_FILES = 2000  # as inspection lists them
# Facts about the version's own bytes: the stored entry read them from the files.
FILE_FACTS = frozenset({"files", "weights", "pickle_scan", "format", "layout", "sources"})
# Facts only a marketplace knows: the answer wins, unless it leaves them empty.
MARKETPLACE_FACTS = frozenset(
    {
        "downloads",
        "likes",
        "sha",
        "gated",
        "trigger_words",
        "preview_images",
        "nsfw",
        "civitai_model_id",
        "civitai_version_id",
    }
)
# Lists that keep the stored entries and add the answer's new ones.
UNION_FACTS = frozenset({"tags", "warnings"})


@dataclass(frozen=True)
class ImportResult:
    """What `import_into` checked and wrote."""

    version: str  # NAME@N
    source: Source
    config: BaseModelConfig  # the merged entry, as stored
    verified: list[str] = field(default_factory=list)  # version paths whose SHA-256 the answer confirms
    unmatched: list[str] = field(default_factory=list)  # marketplace files the version does not hold
    changed: list[str] = field(default_factory=list)  # entry fields the import added or changed


def import_into(registry: Registry, reference: str, imported: MarketplaceImport) -> ImportResult:
    """Check the version's files against the answer's digests, merge, and store (audited)."""
    from modelyard.inspect import INSPECTOR_VERSION
    from modelyard.register.flow import current_user

    version = registry.show(reference)
    verified, unmatched = check_files(version.manifest.files, imported, version.ref)
    stored = registry.catalog.model_config(version)
    before = stored.config if stored is not None else None
    if before is None:
        paths = [entry.path for entry in version.manifest.files]
        merged = uninspected_entry(imported.config, paths, version.ref, imported.source)
    else:
        merged = merge_configs(before, imported.config, ref=version.ref, source=imported.source)
    registry.catalog.set_model_config(
        version,
        merged,
        actor=current_user(),
        action="import",
        inspector_version=stored.inspector_version if stored is not None else INSPECTOR_VERSION,
        details={"source": imported.source, "id": imported.source_id, "verified": verified},
    )
    return ImportResult(version.ref, imported.source, merged, verified, unmatched, changed_fields(before, merged))


# -- checking the files -------------------------------------------------------------------------


def check_files(
    files: Sequence[FileEntry], imported: MarketplaceImport, ref: str = "the version"
) -> tuple[list[str], list[str]]:
    """(verified version paths, marketplace files the version lacks); ConflictError on a mismatch.

    A CivitAI file name may match several files of a run (the same checkpoint name in two
    folders): the answer is confirmed when one of them holds the stated bytes.
    """
    index = _index(files, by_name=imported.match_by == "name")
    verified: set[str] = set()
    unmatched: list[str] = []
    for stated in imported.files:
        candidates = index.get(stated.name, [])
        if not candidates:
            unmatched.append(stated.name)
            continue
        if stated.sha256 is None and stated.autov2 is None:
            continue  # the answer states no digest for it (a small git file on the Hub)
        matching = [entry.path for entry in candidates if _agrees(entry.sha256, stated)]
        if not matching:
            raise _mismatch(candidates[0], stated, ref, imported.source)
        verified.update(matching)
    return sorted(verified), unmatched


def _index(files: Sequence[FileEntry], *, by_name: bool) -> dict[str, list[FileEntry]]:
    """The version's files by path, or by base name (a version may hold tens of thousands)."""
    index: dict[str, list[FileEntry]] = {}
    for entry in files:
        index.setdefault(posixpath.basename(entry.path) if by_name else entry.path, []).append(entry)
    return index


def _agrees(sha256: str, stated: MarketplaceFile) -> bool:
    actual = sha256.lower()
    if stated.sha256 is not None and stated.sha256 != actual:
        return False
    return stated.autov2 is None or actual.startswith(stated.autov2)


def _mismatch(entry: FileEntry, stated: MarketplaceFile, ref: str, source: str) -> ConflictError:
    if stated.sha256 is not None and stated.sha256 != entry.sha256.lower():
        claim = f"sha256 {stated.sha256}"
    else:
        claim = f"AutoV2 {stated.autov2} (the first 10 hex digits of its sha256)"
    return ConflictError(
        f"{ref} holds sha256 {entry.sha256}, but the {source} answer states {claim} for {stated.name}: "
        "they are different files, so nothing was imported; import into the version that holds the "
        "marketplace's file",
        path=entry.path,
    )


# -- merging ------------------------------------------------------------------------------------


def merge_configs(
    stored: BaseModelConfig | None, imported: BaseModelConfig, *, ref: str = "the version", source: str = "marketplace"
) -> BaseModelConfig:
    """The stored entry with the answer's facts added (see the module docstring for the rules).

    Without a stored entry the imported one is the result. The class is the stored one, except that
    an "unknown" entry becomes the imported class (keeping its common fields); an imported
    "unknown" says nothing about the type and adds its facts to the stored class. Any other
    disagreement about the model type is a ConflictError.
    """
    if stored is None:
        return imported
    target = _target_type(stored, imported, ref, source)
    old = stored.model_dump(mode="json")
    new = imported.model_dump(mode="json")
    merged: dict[str, Any] = {"model_type": target}
    for name in CONFIG_CLASSES[target].model_fields:
        if name == "model_type":
            continue
        if name in old and name in new:
            merged[name] = _merge_field(name, old[name], new[name])
        elif name in old or name in new:
            merged[name] = old[name] if name in old else new[name]
    _keep_original_type_with_checkpoint_type(merged, old, new)
    return parse_model_config(merged, f"merged model entry of {ref}")


def uninspected_entry(imported: BaseModelConfig, paths: list[str], ref: str, source: str) -> BaseModelConfig:
    """The entry of a version registered without inspection: the answer's configuration, listing
    the version's own files (the runtimes' checks look for files by name), with a warning that
    nothing was read from them (no weights, no pickle scan)."""
    data = imported.model_dump(mode="json")
    data["files"] = paths[:MAX_LISTED_FILES]
    data["warnings"] = [
        *data["warnings"],
        f"{ref} was registered without inspection: this entry is the {source} answer's, its weights and "
        f"pickle scan are unread; run 'modelyard reinspect {ref}' and import again to add them",
    ]
    return parse_model_config(data, f"model entry of {ref}")


def _target_type(stored: BaseModelConfig, imported: BaseModelConfig, ref: str, source: str) -> str:
    if stored.model_type == imported.model_type or imported.model_type == "unknown":
        return stored.model_type
    if stored.model_type == "unknown":
        return imported.model_type
    raise ConflictError(
        f"{ref} is stored as a {stored.model_type} model, but the {source} answer describes a "
        f"{imported.model_type} model; check that --into names the version of this model"
    )


def _merge_field(name: str, stored: Any, imported: Any) -> Any:
    if name in FILE_FACTS:
        return stored
    if name in MARKETPLACE_FACTS:
        return stored if _empty(imported) else imported
    if name in UNION_FACTS:
        return list(stored) + [item for item in imported if item not in stored]
    if name == "hashes":
        return {**stored, **imported}
    if isinstance(stored, dict) and isinstance(imported, dict):
        # Nested facts (the tokenizer's tokens, ...): the stored ones, completed by the answer's.
        return {**imported, **{key: value for key, value in stored.items() if not _empty(value)}}
    return imported if _empty(stored) else stored


def _keep_original_type_with_checkpoint_type(merged: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    """original_type explains a checkpoint_type of "other": it goes with the side that was kept."""
    if "checkpoint_type" not in merged:
        return
    side = old if old.get("checkpoint_type") == merged["checkpoint_type"] and "checkpoint_type" in old else new
    merged["original_type"] = side.get("original_type") if merged["checkpoint_type"] == "other" else None


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def changed_fields(before: BaseModelConfig | None, after: BaseModelConfig) -> list[str]:
    """The fields whose value the import set or changed (all set fields for a new entry)."""
    new = after.model_dump(mode="json")
    if before is None:
        return [name for name, value in new.items() if not _empty(value) and value not in (False, 0)]
    old = before.model_dump(mode="json")
    return [name for name, value in new.items() if old.get(name) != value]
