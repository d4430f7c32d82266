"""Seed 003's `artifacts/` tree, materialised from the store and the catalog.

    artifacts/raw/{session_id}/                     the newest raw version of each training session
    artifacts/validated/{validated_id}/             e.g. v5_5_20251124_epoch_70_validated
    artifacts/production/{session_id}_prod_v{semver}/

Each directory holds a version's files and its `artifact_manifest.json`. Files are hardlinks of
the store's read-only blobs where the filesystem allows (no weights are copied), else copies. A
directory is rebuilt beside the old one and swapped in atomically (renameat2 RENAME_EXCHANGE), so
a reader sees the old tree or the new one. The layout is a view: the catalog and the store stay
the only bookkeeping, and `modelyard layout DIR` rebuilds it at any time. Writing to a hardlinked
file is refused for everyone but its owner and root (blobs are 0444); `verify` catches the rest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import StorageError
from modelyard.fsutil import exchange
from modelyard.names import MANIFEST_FILENAME, STAGES

if TYPE_CHECKING:
    from modelyard.domain import VersionRecord
    from modelyard.registry import Registry

MARKER = ".modelyard-version"  # in every directory the layout manages: the NAME@N it shows


@dataclass
class LayoutReport:
    root: Path
    written: list[str] = field(default_factory=list)  # stage/label directories (re)built
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)  # directories of versions no longer there
    copied_files: int = 0  # files that could not be hardlinked


def sync_layout(registry: Registry, root: Path, names: list[str] | None = None) -> LayoutReport:
    """Bring `root` up to date with the catalog: every labelled version's directory, newest per label."""
    report = LayoutReport(root=root)
    wanted = _wanted(registry, names)
    for stage in STAGES:
        (root / stage).mkdir(parents=True, exist_ok=True)
    for (stage, label), version in sorted(wanted.items()):
        target = root / stage / label
        if _marker(target) == version.ref and _intact(registry, version, target):
            report.unchanged += 1
            continue
        report.copied_files += _build(registry, version, target)
        report.written.append(f"{stage}/{label}")
    managed_names = set(names) if names is not None else None
    for stage in STAGES:
        for entry in sorted((root / stage).iterdir()):
            if entry.name.startswith(".") or (stage, entry.name) in wanted:
                continue
            shown = _marker(entry)
            if shown is None:
                continue  # not ours: leave it alone
            if managed_names is not None and shown.rpartition("@")[0] not in managed_names:
                continue
            _remove_tree(entry)
            report.removed.append(f"{stage}/{entry.name}")
    return report


def _wanted(registry: Registry, names: list[str] | None) -> dict[tuple[str, str], VersionRecord]:
    """(stage, label) -> the newest version with that label."""
    rows = registry.list(all_versions=True)
    wanted: dict[tuple[str, str], VersionRecord] = {}
    for row in sorted(rows, key=lambda r: (r.artifact_name, r.number)):
        if names is not None and row.artifact_name not in names:
            continue
        version = registry.show(row.ref)
        label = version.label or version.manifest.run_name or version.artifact_name
        wanted[(version.stage, _safe_label(label))] = version
    return wanted


def _safe_label(label: str) -> str:
    """A label as one directory name (no separators, no leading dot)."""
    cleaned = label.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return cleaned.lstrip(".") or "unnamed"


def _marker(directory: Path) -> str | None:
    try:
        return (directory / MARKER).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None


def _intact(registry: Registry, version: VersionRecord, target: Path) -> bool:
    """Does the directory still hold exactly the version's files? A hardlinked file must still
    be the blob's inode; a copied one must have the blob's size and be read-only. (A file someone
    replaced, deleted or added makes the directory be rebuilt.)"""
    expected = {entry.path: entry for entry in version.manifest.files}
    present = {
        path.relative_to(target).as_posix()
        for path in target.rglob("*")
        if not path.is_dir() and path.name != MARKER and path.relative_to(target).as_posix() != MANIFEST_FILENAME
    }
    if present != set(expected):
        return False
    blob_path = getattr(registry.store, "blob_path", None)
    for relative, entry in expected.items():
        try:
            placed = (target / relative).lstat()
        except OSError:
            return False
        if blob_path is not None:
            try:
                blob = os.stat(blob_path(entry.sha256))
            except OSError:
                blob = None
            if blob is not None and (blob.st_dev, blob.st_ino) == (placed.st_dev, placed.st_ino):
                continue
        if placed.st_size != entry.size or placed.st_mode & 0o222:
            return False
    return True


def _build(registry: Registry, version: VersionRecord, target: Path) -> int:
    """Write the version's tree beside `target`, then swap it in. Returns how many files were copied."""
    scratch = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    copied = 0
    try:
        scratch.mkdir()
        for entry in version.manifest.files:
            destination = scratch / entry.path
            destination.parent.mkdir(parents=True, exist_ok=True)
            copied += _place(registry, entry.sha256, destination)
        (scratch / MANIFEST_FILENAME).write_text(version.manifest_json)
        (scratch / MARKER).write_text(version.ref + "\n")
        _swap_in(scratch, target)
    except OSError as exc:
        _remove_tree(scratch)
        raise StorageError(f"cannot write the layout: {exc.strerror}", path=target) from None
    return copied


def _place(registry: Registry, sha256: str, destination: Path) -> int:
    """Hardlink the blob (0 copied), or copy it when linking is impossible (1)."""
    blob_path = getattr(registry.store, "blob_path", None)
    if blob_path is not None:
        try:
            os.link(blob_path(sha256), destination)
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    with registry.store.open(sha256) as source, destination.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1024 * 1024)
    destination.chmod(0o444)
    return 1


def _swap_in(scratch: Path, target: Path) -> None:
    if not target.exists():
        os.rename(scratch, target)
        return
    if exchange(scratch, target):
        _remove_tree(scratch)  # now the old tree
        return
    # No atomic exchange here: move the old tree aside first (a brief window without it).
    old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
    os.rename(target, old)
    os.rename(scratch, target)
    _remove_tree(old)


def _remove_tree(path: Path) -> None:
    """Remove a layout directory (its files are read-only links: their directory is writable)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
