"""Register seed 000's upload ZIP: a training run's directory, zipped, with its `artifact_manifest.json`.

The ZIP is extracted into a private scratch directory under `<home>/tmp/` and that directory is
registered exactly as `register DIR` would (the manifest inside is the metadata source), so the
ZIP and the unzipped run directory make the same version. A ZIP whose entries all sit in one
top-level directory (`zip -r run.zip run_5/`) is unwrapped: the run directory is that one.

Every entry is checked before a byte is written, because a ZIP comes from elsewhere: names that
would leave the directory (`../`, absolute, NUL, backslashes), symlinks and device entries,
duplicate names, encrypted entries, and zip bombs (more uncompressed bytes than a limit, or an
expansion ratio no model file reaches) are refused with an error naming the entry. A ZIP without
`artifact_manifest.json` at the top of its run directory is not an upload ZIP and is refused too.

Errors name the ZIP as the caller names it (`name`; the server passes the client's file name) and
an extracted file by its entry, never by the private directory it was extracted into.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError, ModelyardError, PayloadTooLargeError, StorageError
from modelyard.names import MANIFEST_FILENAME, check_relative_path
from modelyard.progress import NullProgress, Progress
from modelyard.register.metadata import RegisterOptions

if TYPE_CHECKING:
    from modelyard.domain import Registration
    from modelyard.registry import Registry

SCRATCH_PREFIX = "upload-"
CHUNK_SIZE = 1024 * 1024
# macOS's archiver adds resource forks under this directory; they are not part of the run.
MACOS_METADATA_DIR = "__MACOSX"
_UNSAFE_RUN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_ENCRYPTED_FLAG = 0x1
_UNIX_SYSTEM = 3


@dataclass(frozen=True)
class ZipLimits:
    """What a ZIP may expand to. Weights barely compress (a ratio near 1:1); text compresses about
    10:1; deflate tops out near 1032:1, which only long runs of one byte reach: a bomb."""

    max_total_bytes: int = 1 << 40  # 1 TiB uncompressed
    max_entries: int = 100_000
    max_ratio: float = 100.0
    # Below this many uncompressed bytes the ratio is not checked: small text files compress well.
    ratio_floor_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    path: str  # where it goes inside the run directory


def register_zip(
    registry: Registry,
    zip_path: str | Path,
    options: RegisterOptions | None = None,
    *,
    progress: Progress | None = None,
    limits: ZipLimits | None = None,
    name: str | None = None,
) -> Registration:
    """Register the run directory an upload ZIP holds, as `registry.register(DIR, options)` would.
    `name`: what errors call the ZIP (default: its path)."""
    from modelyard.lifecycle.scratch import scratch_dir

    zip_path = Path(zip_path)
    shown = name or str(zip_path)
    options = options or RegisterOptions()
    if options.source_label is None:  # the ZIP is the origin, not the scratch directory it is read from
        options = replace(options, source_label=str(zip_path.absolute()))
    with scratch_dir(registry.settings.home, SCRATCH_PREFIX) as scratch:
        into = scratch / "run"  # not the scratch directory itself: a run may be called `.lock`
        into.mkdir()
        run_dir, top = extract_upload_zip(zip_path, into, limits or ZipLimits(), progress or NullProgress(), name=shown)
        # The extracted files are ours and about to be removed: link them into the store rather
        # than copy them (a hardlink or reflink when the store is on the same filesystem).
        with paths_shown_as(run_dir, lambda entry: f"{shown} (entry {top}{entry})", shown):
            return registry.register(run_dir, options, link=True, progress=progress)


@contextlib.contextmanager
def paths_shown_as(root: Path, label: Callable[[str], str], whole: str) -> Iterator[None]:
    """Errors raised in the block that name a file under `root` (a private scratch directory)
    name it `label(its path under root)` instead, and `root` itself `whole`: a message tells the
    client what it sent, not where the server put it."""
    try:
        yield
    except ModelyardError as exc:
        prefix = str(root)
        if exc.path == prefix:
            exc.path = whole
        elif exc.path is not None and exc.path.startswith(prefix + "/"):
            exc.path = label(exc.path[len(prefix) + 1 :])
        exc.args = (exc.render(),)
        raise


def extract_upload_zip(
    zip_path: Path, into: Path, limits: ZipLimits, progress: Progress, *, name: str | None = None
) -> tuple[Path, str]:
    """Check every entry, then extract the ZIP into a new directory under `into`. Returns that
    run directory and where it sits in the ZIP (`run_5/` for `zip -r run.zip run_5/`, else '')."""
    shown = name or str(zip_path)
    with _open_zip(zip_path, shown) as archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise InvalidInputError(
                f"the ZIP has {len(infos)} entries; at most {limits.max_entries} are accepted", path=shown
            )
        entries, directories = _check_entries(infos, shown)
        _check_expansion(entries, shown, limits)
        top = _single_top_directory(entries, directories)
        _check_manifest(entries, top, shown)
        run_name = top if top is not None else _run_name_of(zip_path)
        run_dir = into / run_name
        run_dir.mkdir()
        progress.start(f"extracting {Path(shown).name}", sum(e.info.file_size for e in entries))
        try:
            for entry in entries:
                path = entry.path.split("/", 1)[1] if top is not None else entry.path
                _extract(archive, entry.info, run_dir / path, shown, progress)
        finally:
            progress.finish()
    return run_dir, "" if top is None else f"{top}/"


@contextlib.contextmanager
def _open_zip(zip_path: Path, shown: str) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise InvalidInputError("no such file", path=shown) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InvalidInputError(f"not a readable ZIP file: {exc}", path=shown) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror}", path=shown) from None
    with archive:
        yield archive


def _check_entries(infos: list[zipfile.ZipInfo], zip_path: str) -> tuple[list[_Entry], set[str]]:
    """The file entries to extract and the directories named; every name checked, none written."""
    files: list[_Entry] = []
    directories: set[str] = set()
    seen: set[str] = set()
    for info in infos:
        # zipfile cuts a name at its first NUL: the name as stored is the one to judge.
        if "\x00" in info.orig_filename:
            raise _entry_error(zip_path, info.orig_filename, "its name contains a NUL byte")
        name = info.filename
        if name.split("/", 1)[0] == MACOS_METADATA_DIR:
            continue
        is_dir = name.endswith("/")
        path = name[:-1] if is_dir else name
        try:
            check_relative_path(path)
        except ValueError as exc:
            raise _entry_error(zip_path, name, f"would be written outside the run directory: {exc}") from None
        if not path:
            raise _entry_error(zip_path, name, "has an empty name")
        if path in seen:
            raise _entry_error(zip_path, name, "appears twice in the ZIP")
        seen.add(path)
        kind = _unix_kind(info)
        if kind == stat.S_IFLNK:
            raise _entry_error(zip_path, name, "is a symbolic link; a ZIP for upload holds regular files only")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _entry_error(zip_path, name, "is a device, socket or FIFO; a ZIP for upload holds regular files only")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise _entry_error(zip_path, name, "is encrypted; upload an unencrypted ZIP")
        if is_dir or kind == stat.S_IFDIR:
            directories.add(path)
        else:
            files.append(_Entry(info, path))
    if not files:
        raise InvalidInputError("the ZIP holds no files", path=zip_path)
    # A name that is a file and also the parent of another entry cannot be extracted.
    for entry in files:
        if entry.path in directories:
            raise _entry_error(zip_path, entry.info.filename, "is both a file and a directory in the ZIP")
    parents = {parent for entry in files for parent in _parents(entry.path)}
    for entry in files:
        if entry.path in parents:
            raise _entry_error(zip_path, entry.info.filename, "is both a file and a directory in the ZIP")
    return files, directories


def _unix_kind(info: zipfile.ZipInfo) -> int:
    """The file type a Unix archiver recorded (0 when the ZIP says nothing about it)."""
    if info.create_system != _UNIX_SYSTEM:
        return 0
    return stat.S_IFMT(info.external_attr >> 16)


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for index in range(1, len(parts)):
        yield "/".join(parts[:index])


def _check_expansion(entries: list[_Entry], zip_path: str, limits: ZipLimits) -> None:
    total = sum(e.info.file_size for e in entries)
    if total > limits.max_total_bytes:
        raise PayloadTooLargeError(
            f"the ZIP expands to {total} bytes; at most {limits.max_total_bytes} are accepted "
            "(refused as a zip bomb, or a run too large for one upload)",
            path=zip_path,
        )
    compressed = sum(e.info.compress_size for e in entries)
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        biggest = max(entries, key=lambda e: e.info.file_size / max(e.info.compress_size, 1))
        raise InvalidInputError(
            f"the ZIP expands {total / max(compressed, 1):.0f}-fold ({compressed} -> {total} bytes; "
            f"most of all {biggest.info.filename!r}); model files do not compress beyond "
            f"{limits.max_ratio:.0f}:1, so it is refused as a zip bomb",
            path=zip_path,
        )


def _check_manifest(entries: list[_Entry], top: str | None, zip_path: str) -> None:
    """Seed 000's upload ZIP carries the manifest the training script wrote, at the top of the run."""
    wanted = MANIFEST_FILENAME if top is None else f"{top}/{MANIFEST_FILENAME}"
    if not any(entry.path == wanted for entry in entries):
        raise InvalidInputError(
            f"no {wanted} in the ZIP: an upload ZIP holds a run directory with the {MANIFEST_FILENAME} "
            "its training script wrote",
            path=zip_path,
            field=MANIFEST_FILENAME,
        )


def _single_top_directory(entries: list[_Entry], directories: set[str]) -> str | None:
    """The one directory every entry sits in (`zip -r run.zip run/`), else None."""
    tops = {e.path.split("/", 1)[0] for e in entries} | {d.split("/", 1)[0] for d in directories}
    if len(tops) != 1:
        return None
    top = next(iter(tops))
    if any(e.path == top for e in entries):
        return None  # a single file at the top level, not a directory
    return top


def _run_name_of(zip_path: Path) -> str:
    """The run directory's name when the ZIP has no top directory: the ZIP's own name, made safe."""
    return _UNSAFE_RUN_NAME.sub("-", zip_path.stem).strip(".-") or "upload"


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, zip_path: str, progress: Progress) -> None:
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL and O_NOFOLLOW: the directory is ours and new, so nothing may already be there.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out, archive.open(info) as source:
            while chunk := source.read(CHUNK_SIZE):
                written += len(chunk)
                if written > info.file_size:  # zipfile stops at the stated size; never trust it alone
                    raise _entry_error(zip_path, info.filename, "holds more bytes than its header states")
                out.write(chunk)
                progress.advance(len(chunk))
        stamp = _entry_time(info)
        os.utime(target, (stamp, stamp))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _entry_error(zip_path, info.filename, f"is damaged: {exc}") from None
    except NotImplementedError as exc:  # a compression method zipfile does not read
        raise _entry_error(zip_path, info.filename, f"cannot be read: {exc}") from None
    except OSError as exc:
        raise StorageError(f"cannot extract {info.filename!r}: {exc.strerror}", path=zip_path) from None


def _entry_time(info: zipfile.ZipInfo) -> float:
    """The entry's time, read as UTC (as `modelyard export` writes it): it becomes the file's mtime,
    so a generated name and `created_at` come out as for the unzipped directory."""
    try:
        return datetime(*info.date_time, tzinfo=UTC).timestamp()
    except ValueError:
        return datetime(1980, 1, 1, tzinfo=UTC).timestamp()


def _entry_error(zip_path: str, name: str, problem: str) -> InvalidInputError:
    shown = name.replace("\x00", "\\x00")
    return InvalidInputError(f"entry {shown!r} {problem}", path=zip_path, field="zip")


def write_upload_zip(run_dir: Path, zip_path: Path) -> Path:
    """Seed 000's upload ZIP of a run directory (its `artifact_manifest.json` inside): every file
    `register DIR` would store, under one top-level directory named after the run. Weights are
    stored, text is deflated. Returns `zip_path`."""
    from modelyard.register.scan import scan_source

    tree = scan_source(run_dir)
    if tree.run_manifest is None:
        raise InvalidInputError(f"no {MANIFEST_FILENAME} to put in the upload ZIP", path=run_dir)
    entries = [(f.relpath, Path(f.abspath)) for f in tree.files] + [(MANIFEST_FILENAME, tree.run_manifest)]
    with zipfile.ZipFile(zip_path, "w", allowZip64=True) as archive:
        for relpath, source in entries:
            text = source.suffix.lower() in (".json", ".yaml", ".yml", ".md", ".log", ".txt", ".csv")
            archive.write(source, f"{tree.run_name}/{relpath}", zipfile.ZIP_DEFLATED if text else zipfile.ZIP_STORED)
    return zip_path
