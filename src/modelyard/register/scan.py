"""Walk a training output (a directory or one file) into the list of files to register.

Rules: regular files only; a symlink is followed when its target stays inside the registered
directory and refused when it points outside (or nowhere); file names must be UTF-8 and
portable ('/'-separated, no backslashes); `--exclude` patterns drop files or whole directories.
The top-level `artifact_manifest.json` is not a file of the artifact: it is the metadata source.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from modelyard.errors import InvalidInputError
from modelyard.names import MANIFEST_FILENAME, check_relative_path


class SourceFile(NamedTuple):
    """A file to register: where it sits in the artifact, where to read it, its stat.

    A named tuple: a scan builds one per file, and this is three times cheaper to build than
    a frozen dataclass (20,000 of them are a measurable part of an unchanged registration)."""

    relpath: str
    abspath: str  # a plain string: building 20,000 Path objects costs more than the scan itself
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def from_stat(cls, relpath: str, abspath: str, st: os.stat_result) -> SourceFile:
        return cls(relpath, abspath, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class SourceTree:
    """What `register PATH` will store."""

    root: Path
    given: Path  # the path the user named (a directory or one file), absolute
    run_name: str
    files: list[SourceFile]
    run_manifest: Path | None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def scan_source(path: Path, exclude: Sequence[str] = ()) -> SourceTree:
    """List the files under `path` (or `path` itself), sorted by their path in the artifact."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidInputError("no such file or directory", path=path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot access: {exc.strerror}", path=path) from None
    absolute = path.absolute()
    if stat.S_ISREG(st.st_mode):
        return _single_file(absolute, st)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError("not a regular file or directory", path=path)
    root = Path(os.path.realpath(absolute))
    files = _walk(root, exclude)
    manifest: Path | None = None
    for index, found in enumerate(files):
        if found.relpath == MANIFEST_FILENAME:
            manifest = Path(found.abspath)
            del files[index]
            break
    if not files:
        raise InvalidInputError("no files to register (the directory is empty or everything is excluded)", path=path)
    files.sort()  # by relpath: the first field, unique, so no further fields are compared
    return SourceTree(root=root, given=absolute, run_name=absolute.name, files=files, run_manifest=manifest)


def _single_file(path: Path, st: os.stat_result) -> SourceTree:
    if path.name == MANIFEST_FILENAME:
        raise InvalidInputError(
            f"{MANIFEST_FILENAME} describes a run directory; register the directory that holds it", path=path
        )
    _check_name(path.name, str(path))
    return SourceTree(
        root=path.parent,
        given=path,
        run_name=path.stem,
        files=[SourceFile.from_stat(path.name, str(path), st)],
        run_manifest=None,
    )


def _walk(root: Path, exclude: Sequence[str]) -> list[SourceFile]:
    """Depth-first walk: a SourceFile for each regular file. (The per-entry work is kept small:
    for 20,000 files this loop is most of an unchanged re-registration.)"""
    found: list[SourceFile] = []
    root_text = str(root)
    visited_dirs = {root_text}
    stack: list[tuple[str, str]] = [(root_text, "")]
    bad_name = _BAD_NAME_CHARS.search
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise InvalidInputError(f"cannot list directory: {exc.strerror}", path=directory) from None
        for entry in entries:
            # Names come one directory level at a time, so checking each name checks every path.
            name = entry.name
            if bad_name(name):
                _check_name(name, entry.path)
            relpath = prefix + name
            if exclude and _excluded(relpath, name, exclude):
                continue
            if entry.is_symlink():
                target, st = _resolve(root_text, entry)
            else:
                target, st = entry.path, _lstat(entry)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                found.append(
                    SourceFile(relpath, target, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
                )
            elif stat.S_ISDIR(mode):
                if target in visited_dirs:
                    continue  # a symlink loop, or a second link to a directory already walked
                visited_dirs.add(target)
                stack.append((target, relpath + "/"))
            else:
                raise InvalidInputError("not a regular file (a socket, FIFO or device)", path=entry.path)
    return found


def _lstat(entry: os.DirEntry[str]) -> os.stat_result:
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        raise InvalidInputError("vanished while the directory was being read", path=entry.path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot access: {exc.strerror}", path=entry.path) from None


def _resolve(root: str, entry: os.DirEntry[str]) -> tuple[str, os.stat_result]:
    """The path to read and the stat of a symlink's target, which must be inside `root`."""
    try:
        target = os.path.realpath(entry.path)
        if target != root and not target.startswith(root.rstrip("/") + "/"):
            raise InvalidInputError(
                f"symlink points outside the registered directory (to {target}); "
                "copy the file in or register its own directory",
                path=entry.path,
            )
        return target, os.stat(target)
    except FileNotFoundError:
        raise InvalidInputError("symlink points to nothing (a dangling link)", path=entry.path) from None
    except PermissionError as exc:
        raise InvalidInputError(f"cannot access: {exc.strerror}", path=entry.path) from None
    except OSError as exc:  # ELOOP for a symlink loop, ENAMETOOLONG, ...
        raise InvalidInputError(f"cannot follow the symlink: {exc.strerror}", path=entry.path) from None


# Characters a stored name may not hold: NUL, backslash (not portable), and the surrogates
# Python uses for bytes that are not UTF-8.
_BAD_NAME_CHARS = re.compile("[\x00\\\\\udc80-\udcff]")


def _check_name(name: str, path: str) -> None:
    bad = _BAD_NAME_CHARS.search(name)
    if bad is None:
        return
    if "\udc80" <= bad.group() <= "\udcff":
        raise InvalidInputError("file name is not valid UTF-8; rename it", path=path)
    try:
        check_relative_path(name)
    except ValueError as exc:
        raise InvalidInputError(f"file name cannot be stored: {exc}", path=path) from None
    raise InvalidInputError("file name cannot be stored", path=path)  # pragma: no cover


def _excluded(relpath: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p) for p in patterns)
