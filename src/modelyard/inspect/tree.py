"""The files an inspection looks at: a directory on disk, one file, or a registered version.

Inspectors see a `ModelTree`: relative '/'-separated paths with their sizes, and a way to open
one for bounded reading. The same inspection therefore runs on a training output before it is
registered and on a version's blobs in the store afterwards (`modelyard reinspect`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from modelyard.inspect._bounded import ByteSource


class ModelTree(Protocol):
    """A read-only set of files, by relative path."""

    label: str  # how messages name the tree: a directory, or NAME@N

    @property
    def sizes(self) -> dict[str, int]:
        """Relative path -> size in bytes, for every file."""
        ...

    def open(self, path: str) -> AbstractContextManager[ByteSource]:
        """Open one file for bounded reading."""
        ...


class DirectoryTree:
    """Files under a local directory (or one file: its name is its relative path)."""

    def __init__(self, root: Path, sizes: dict[str, int], label: str | None = None) -> None:
        self.root = root
        self._sizes = sizes
        self.label = label or str(root)

    @classmethod
    def from_path(cls, path: Path) -> DirectoryTree:
        """Every regular file under `path` (symlinks inside it followed), or `path` itself."""
        from modelyard.register.scan import scan_source

        source = scan_source(path)
        sizes = {f.relpath: f.size for f in source.files}
        if source.run_manifest is not None:
            sizes["artifact_manifest.json"] = source.run_manifest.stat().st_size
        return cls(source.root, sizes, str(path))

    @property
    def sizes(self) -> dict[str, int]:
        return self._sizes

    @contextmanager
    def open(self, path: str) -> Iterator[ByteSource]:
        with ByteSource.open(self.root / path, name=self.describe(path)) as source:
            yield source

    def describe(self, path: str) -> str:
        return str(self.root / path)


class BlobTree:
    """The files of a version, read from their blobs: stored ones, or ones a writer just staged."""

    def __init__(
        self,
        open_blob: Callable[[str], BinaryIO],
        label: str,
        files: dict[str, tuple[int, str]],
        name_of: Callable[[str], str] | None = None,
    ) -> None:
        self._open_blob = open_blob
        self.label = label
        self._files = files  # path -> (size, sha256)
        self._sizes = {path: size for path, (size, _) in files.items()}
        # How messages name a file: by default NAME@N:path; a registration names the user's file.
        self._name_of = name_of or (lambda path: f"{label}:{path}")

    @property
    def sizes(self) -> dict[str, int]:
        return self._sizes

    def sha256(self, path: str) -> str:
        return self._files[path][1]

    @contextmanager
    def open(self, path: str) -> Iterator[ByteSource]:
        size, sha256 = self._files[path]
        with self._open_blob(sha256) as handle:
            yield ByteSource(handle, size, self._name_of(path))


def parent(path: str) -> str:
    """The folder of a relative path ('' at the top)."""
    return posixpath.dirname(path)


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
