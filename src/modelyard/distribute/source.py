"""What a push sends from: a directory tree of a planned version, hardlinked from the store.

rsync sends directories, the store keeps blobs by digest: for each planned artifact a scratch
tree under `<home>/tmp/deploy-*/tree` names every blob by its path in the version (hardlinks, so
no bytes are copied), plus the version's `artifact_manifest.json`. Block digests of a blob, for a
partial repair, are computed when a repair first needs them and cached under `<home>/ranges/`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.distribute.plan import PlannedArtifact
from modelyard.errors import ConflictError
from modelyard.names import MANIFEST_FILENAME

if TYPE_CHECKING:
    from modelyard.registry import Registry

REPAIR_BLOCK_SIZE = 4 << 20


class SourceTrees:
    """The source tree of each planned version, built when a node first needs it (an up-to-date
    push builds none). Shared by the push's worker threads."""

    def __init__(self, registry: Registry, scratch: Path) -> None:
        self.registry = registry
        self.scratch = scratch
        self._trees: dict[str, Path] = {}
        self._lock = threading.Lock()

    def get(self, item: PlannedArtifact) -> Path:
        with self._lock:
            if item.version_dir not in self._trees:
                tree = build_tree(self.registry, item, self.scratch / item.version_dir)
                self._trees[item.version_dir] = tree
            return self._trees[item.version_dir]


@contextlib.contextmanager
def source_trees(registry: Registry) -> Iterator[SourceTrees]:
    """Source trees for one push, removed when it ends."""
    from modelyard.lifecycle.scratch import scratch_dir

    with scratch_dir(registry.settings.home, "deploy-") as scratch:
        yield SourceTrees(registry, scratch)


def build_tree(registry: Registry, item: PlannedArtifact, tree: Path) -> Path:
    version = registry.show(item.ref)
    manifest_bytes = version.manifest.to_json().encode("utf-8")
    for planned in item.files:
        target = tree / planned.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if planned.path == MANIFEST_FILENAME:
            if hashlib.sha256(manifest_bytes).hexdigest() != planned.sha256:
                raise ConflictError(
                    f"the manifest of {item.ref} is not the one the plan lists; make the plan again",
                    field=MANIFEST_FILENAME,
                )
            target.write_bytes(manifest_bytes)
            continue
        _link_blob(registry, planned.sha256, target)
    return tree


def _link_blob(registry: Registry, sha256: str, target: Path) -> None:
    store = registry.store
    blob_path = getattr(store, "blob_path", None)
    if blob_path is not None:
        try:
            os.link(blob_path(sha256), target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    with store.open(sha256) as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)


def block_digests(registry: Registry, sha256: str, block_size: int = REPAIR_BLOCK_SIZE) -> list[str]:
    """SHA-256 of each block of a stored blob, cached after the first computation."""
    cache = registry.settings.home / "ranges" / f"{sha256}-{block_size}"
    with contextlib.suppress(FileNotFoundError):
        raw = cache.read_bytes()
        if len(raw) % 32 == 0:
            return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]
    digests: list[bytes] = []
    with registry.store.open(sha256) as stream:
        while block := stream.read(block_size):
            digests.append(hashlib.sha256(block).digest())
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    temporary.write_bytes(b"".join(digests))
    os.replace(temporary, cache)
    return [digest.hex() for digest in digests]


def read_blocks(registry: Registry, sha256: str, indices: list[int], block_size: int) -> Iterator[bytes]:
    with registry.store.open(sha256) as stream:
        for index in indices:
            stream.seek(index * block_size)
            yield stream.read(block_size)
