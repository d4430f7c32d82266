"""Remember file digests by stat, so unchanged files are not read again (as git's index does).

An entry is (path, device, inode, size, mtime_ns, ctime_ns) -> sha256, plus the time hashing
started. It is trusted only if every stat field still matches and the file's mtime is clearly
older than that start time: a write landing in the same timestamp tick as the one we hashed
would otherwise go unnoticed ("racy git"). ctime catches edits that restore the old mtime.

A second table keeps one snapshot per registered source tree: a digest of every file's path and
stat, the files' digests in order, and the store's removal epoch at which all those blobs were
known to be present. Re-registering an unchanged tree of 20,000 files then costs one row instead
of 20,000 comparisons, and no per-blob existence checks while no blob has left the store.

The cache is a local SQLite file in the registry home; losing it only costs re-reading files.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.register.scan import SourceFile

# Timestamps come from the kernel's coarse clock (one tick, a few ms); filesystems with whole
# second timestamps need the wider margin.
_RACY_MARGIN_NS = 100_000_000
_RACY_MARGIN_COARSE_NS = 2_000_000_000
_LOOKUP_CHUNK = 500
_MARSHAL_FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trees (
    root TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    digests BLOB NOT NULL,
    newest_mtime_ns INTEGER NOT NULL,
    hashed_at_ns INTEGER NOT NULL,
    store_epoch TEXT NOT NULL
);
"""


def tree_signature(files: list[SourceFile]) -> str:
    """A digest of every file's path and stat, in order: equal signatures, same unchanged tree.

    marshal (format 2, without its reference tracking) is the fastest serialisation of 20,000
    tuples; a Python upgrade that changed the format would only cost one cache miss."""
    fields = [(f.relpath, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns) for f in files]
    return hashlib.sha256(marshal.dumps(fields, _MARSHAL_FORMAT)).hexdigest()


@dataclass(frozen=True)
class TreeSnapshot:
    """The digests of an unchanged tree's files, and the store epoch they were known present at."""

    digests: list[str]
    store_epoch: str


class StatCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._connection is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
                self._connection = connection
            except sqlite3.DatabaseError:
                # A damaged cache is worth nothing: start a new one.
                with contextlib.suppress(OSError):
                    self.path.unlink()
                return None
            except OSError:
                return None
        return self._connection

    def lookup(self, files: list[SourceFile]) -> dict[str, str]:
        """abspath -> sha256 for the files whose entries are still valid."""
        connection = self._connect()
        if connection is None:
            return {}
        by_path = {f.abspath: f for f in files}
        found: dict[str, str] = {}
        try:
            for path, dev, ino, size, mtime_ns, ctime_ns, sha256, hashed_at_ns in self._rows(connection, files):
                current = by_path.get(path)
                if current is None:
                    continue
                if (dev, ino, size, mtime_ns, ctime_ns) == (
                    current.dev,
                    current.ino,
                    current.size,
                    current.mtime_ns,
                    current.ctime_ns,
                ) and _settled(mtime_ns, hashed_at_ns):
                    found[path] = sha256
        except sqlite3.Error:
            return {}
        return found

    @staticmethod
    def _rows(connection: sqlite3.Connection, files: list[SourceFile]) -> Iterable[tuple[Any, ...]]:
        """Candidate entries: one range scan of the common directory for many files (the
        primary key is the path), or exact lookups for a few."""
        columns = "path, dev, ino, size, mtime_ns, ctime_ns, sha256, hashed_at_ns"
        paths = [f.abspath for f in files]
        if len(paths) > _LOOKUP_CHUNK:
            prefix = os.path.commonpath(paths).rstrip("/") + "/"
            upper = prefix[:-1] + chr(ord("/") + 1)  # the first string after every "prefix..." one
            return connection.execute(f"SELECT {columns} FROM entries WHERE path >= ? AND path < ?", (prefix, upper))
        marks = ",".join("?" * len(paths))
        return connection.execute(f"SELECT {columns} FROM entries WHERE path IN ({marks})", paths)

    def record(self, entries: Iterable[tuple[SourceFile, str]], hashed_at_ns: int) -> None:
        """Remember digests of files as they were stat'ed after they were read."""
        connection = self._connect()
        if connection is None:
            return
        rows = [
            (f.abspath, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, sha256, hashed_at_ns) for f, sha256 in entries
        ]
        if not rows:
            return
        with contextlib.suppress(sqlite3.Error):
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            connection.execute("COMMIT")

    def lookup_tree(self, root: str, files: list[SourceFile], signature: str) -> TreeSnapshot | None:
        """The snapshot of `root` if its files are exactly as they were and were settled then."""
        connection = self._connect()
        if connection is None:
            return None
        try:
            row = connection.execute(
                "SELECT signature, digests, newest_mtime_ns, hashed_at_ns, store_epoch FROM trees WHERE root = ?",
                (root,),
            ).fetchone()
        except sqlite3.Error:
            return None
        if row is None or row[0] != signature:
            return None
        _, packed, newest_mtime_ns, hashed_at_ns, store_epoch = row
        if not _settled(newest_mtime_ns, hashed_at_ns):
            return None
        try:
            digests = marshal.loads(packed)
        except (EOFError, ValueError, TypeError):
            return None
        if not isinstance(digests, list) or len(digests) != len(files):
            return None
        return TreeSnapshot(digests=digests, store_epoch=store_epoch)

    def record_tree(
        self, root: str, files: list[SourceFile], signature: str, digests: list[str], hashed_at_ns: int, epoch: str
    ) -> None:
        """Remember a tree whose every blob was present in the store at `epoch`."""
        connection = self._connect()
        if connection is None or not files:
            return
        newest = max(f.mtime_ns for f in files)
        with contextlib.suppress(sqlite3.Error):
            connection.execute(
                "INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?, ?)",
                (root, signature, marshal.dumps(digests, _MARSHAL_FORMAT), newest, hashed_at_ns, epoch),
            )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _settled(mtime_ns: int, hashed_at_ns: int) -> bool:
    coarse = mtime_ns % 1_000_000_000 == 0
    margin = _RACY_MARGIN_COARSE_NS if coarse else _RACY_MARGIN_NS
    return mtime_ns < hashed_at_ns - margin
