"""Resumable upload sessions on disk, and files written as their bytes arrive.

A session declares its files (path, size, SHA-256) and its register options up front, then
receives each file's bytes in any number of chunks, each starting where the received bytes end.
When a file's last byte arrives its SHA-256 is compared with the declared one (a mismatch
discards the file's bytes); the commit registers the session's files as one version and removes
the session. Nothing is in the catalog before that.

Layout under `<home>/tmp/uploads/<id>/` (the id: 128 random bits, 32 hex digits)::

    session.json   owner, created_at, declared files, options; its mtime is the last activity
    lock           flock: shared by transfers, exclusive for commit, abort and expiry
    parts/<n>      the bytes of declared file n received so far (flock'ed while a transfer writes)
    upload/<path>  a file whose every byte arrived and matched its SHA-256 (moved from parts/)

Running hashes: hashlib objects cannot be saved to disk, so the bytes received so far are
hashed again when a transfer continues a file in a process that does not hold its running hash
(another worker, a restart). Within one process the hash is kept between chunks, keyed by the
part file's size, mtime and inode: a chunked upload is hashed once, in one pass, as it arrives.
Per-chunk digests would not help: the declared SHA-256 is of the whole file.

Sessions idle for 24 hours (no bytes, no commit) are removed when a new session starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
)
from modelyard.names import check_relative_path
from modelyard.register.zipped import paths_shown_as

if TYPE_CHECKING:
    from modelyard.access import Principal
    from modelyard.domain import Registration
    from modelyard.register.metadata import RegisterOptions
    from modelyard.registry import Registry

ENV_MAX_FILE_SIZE = "MODELYARD_UPLOAD_MAX_FILE_SIZE"
DEFAULT_MAX_FILE_SIZE = 1 << 40  # 1 TiB
SESSION_TTL_SECONDS = 24 * 3600.0
MAX_FILES = 100_000
MAX_PATH_BYTES = 1024  # leaves room for the session's own directories within PATH_MAX
LOCK_WAIT_SECONDS = 10.0
HASH_CHUNK = 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
RUN_DIR = "upload"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


class OffsetMismatchError(ConflictError):
    """A chunk that does not start where the received bytes end; `details.received` says where."""

    code = "offset_mismatch"


class DigestMismatchError(InvalidInputError):
    """A file whose bytes do not have the declared SHA-256 (or size)."""

    code = "digest_mismatch"


class IncompleteUploadError(ConflictError):
    """A commit before every declared file has arrived."""

    code = "incomplete"


@dataclass(frozen=True)
class DeclaredFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FileProgress:
    path: str
    size: int
    received: int
    complete: bool


@dataclass(frozen=True)
class UploadState:
    upload_id: str
    owner: str
    files: list[FileProgress]
    expires_at: datetime
    options: dict[str, Any]


def max_file_size() -> int:
    """The most bytes one uploaded file may have: MODELYARD_UPLOAD_MAX_FILE_SIZE (bytes, or with
    a binary suffix: 500M, 2GiB, 1T), default 1 TiB."""
    text = os.environ.get(ENV_MAX_FILE_SIZE)
    if not text:
        return DEFAULT_MAX_FILE_SIZE
    match = _SIZE.match(text)
    if match is None:
        raise InvalidInputError(f"{text!r} is not a size (bytes, or 500M, 2GiB, 1T)", field=ENV_MAX_FILE_SIZE)
    unit = (match[2] or "b")[0].lower()
    return int(match[1]) * _UNITS[unit]


def check_upload_path(path: str, field: str) -> str:
    """A file's path inside the version: relative, '/'-separated, no '..', NUL or backslash."""
    try:
        check_relative_path(path)
    except ValueError as exc:
        reason = str(exc)
        shown = reason if repr(path) in reason else f"path {path!r}: {reason}"  # name the path once
        raise InvalidInputError(f"{shown}; it cannot be stored", field=field) from None
    if not path:
        raise InvalidInputError("a file's path may not be empty", field=field)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"path {path!r} is not valid Unicode text", field=field) from None
    if len(encoded) > MAX_PATH_BYTES or any(len(part) > 255 for part in encoded.split(b"/")):
        raise InvalidInputError(
            f"path {path[:60]!r}... is too long (at most {MAX_PATH_BYTES} bytes, 255 per name)", field=field
        )
    return path


def check_declared(files: Sequence[DeclaredFile], limit: int) -> None:
    """Paths safe and distinct (no file is also another's directory), sizes within the limit."""
    if not files:
        raise InvalidInputError("an upload needs at least one file", field="files")
    if len(files) > MAX_FILES:
        raise InvalidInputError(f"{len(files)} files; an upload takes at most {MAX_FILES}", field="files")
    seen: set[str] = set()
    for index, declared in enumerate(files):
        field = f"files[{index}]"
        check_upload_path(declared.path, f"{field}.path")
        if declared.path in seen:
            raise InvalidInputError(f"path {declared.path!r} is declared twice", field=f"{field}.path")
        seen.add(declared.path)
        if declared.size < 0:
            raise InvalidInputError(f"{declared.path}: size may not be negative", field=f"{field}.size")
        if declared.size > limit:
            raise PayloadTooLargeError(
                f"{declared.path}: {declared.size} bytes is more than the {limit} bytes a file may have "
                f"({ENV_MAX_FILE_SIZE})",
                field=f"{field}.size",
            )
        if not _SHA256.match(declared.sha256):
            raise InvalidInputError(f"{declared.path}: sha256 must be 64 lowercase hex digits", field=f"{field}.sha256")
        if declared.size == 0 and declared.sha256 != EMPTY_SHA256:
            raise DigestMismatchError(
                f"{declared.path}: an empty file's SHA-256 is {EMPTY_SHA256}, not {declared.sha256}",
                field=f"{field}.sha256",
            )
    for declared in files:
        parts = declared.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise InvalidInputError(f"{parent!r} is declared as a file and as the directory of {declared.path!r}")


class StreamedFile:
    """A new file written as its bytes arrive, hashed on the way, refused beyond `limit` bytes."""

    def __init__(self, target: Path, name: str, limit: int) -> None:
        self.target = target
        self.name = name
        self.limit = limit
        self.size = 0
        self._hasher = hashlib.sha256()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # The directory is new and ours: nothing may be there yet, and no link is followed.
            self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise InvalidInputError(
                f"{name!r} clashes with another file of the upload (the same path, or a file used as a directory)",
                field=name,
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot create {name!r}: {exc.strerror}", path=target) from None

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise PayloadTooLargeError(
                f"{self.name}: more than the {self.limit} bytes a file may have ({ENV_MAX_FILE_SIZE})", field=self.name
            )
        _write_all(self._fd, data, self.size, self.target)
        self._hasher.update(data)
        self.size += len(data)

    def close(self) -> str:
        """Close the file; its SHA-256."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        return self._hasher.hexdigest()


class UploadSessions:
    """The resumable upload sessions of one registry home."""

    def __init__(self, home: Path, *, ttl_seconds: float = SESSION_TTL_SECONDS, max_file_size: int | None = None):
        self.root = home / "tmp" / "uploads"
        self.ttl_seconds = ttl_seconds
        self.max_file_size = DEFAULT_MAX_FILE_SIZE if max_file_size is None else max_file_size

    # -- sessions -------------------------------------------------------------------------

    def create(self, owner: str, files: Sequence[DeclaredFile], options: Mapping[str, Any]) -> UploadState:
        check_declared(files, self.max_file_size)
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        needed = sum(f.size for f in files)
        free = shutil.disk_usage(self.root).free
        if needed > free:
            # Refused before any byte arrives: the client asked for more than the server can hold.
            raise PayloadTooLargeError(
                f"the upload declares {needed} bytes; the server's upload disk has {free} free", field="files"
            )
        upload_id = secrets.token_hex(16)
        directory = self.root / upload_id
        try:
            directory.mkdir()
            (directory / "lock").touch()
            (directory / "parts").mkdir()
            (directory / RUN_DIR).mkdir()
            for declared in files:
                if declared.size == 0:  # nothing to send: complete from the start
                    target = directory / RUN_DIR / declared.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
            record = {
                "owner": owner,
                "created_at": datetime.now(UTC).isoformat(),
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
                "options": dict(options),
            }
            staging = directory / "session.json.new"
            staging.write_text(json.dumps(record), encoding="utf-8")
            os.replace(staging, directory / "session.json")  # visible whole, or not at all
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise StorageError(f"cannot create the upload: {exc.strerror}", path=self.root) from None
        return self._state(upload_id, record)

    def state(self, upload_id: str, principal: Principal) -> UploadState:
        return self._state(upload_id, self._load(upload_id, principal))

    def abort(self, upload_id: str, principal: Principal) -> None:
        self._load(upload_id, principal)
        directory = self.root / upload_id
        with self._locked(directory, fcntl.LOCK_EX, "a file of this upload is still arriving; retry once it stops"):
            self._load(upload_id, principal)  # it may have gone while we waited
            shutil.rmtree(directory, ignore_errors=True)
        _forget(upload_id)

    def remove_stale(self) -> list[str]:
        """Remove sessions idle for longer than the TTL (none of whose files is arriving)."""
        removed = []
        cutoff = time.time() - self.ttl_seconds
        for entry in os.scandir(self.root) if self.root.is_dir() else []:
            if not _UPLOAD_ID.match(entry.name):
                continue
            directory = Path(entry.path)
            try:
                last = max(directory.stat().st_mtime, _mtime(directory / "session.json"))
            except OSError:
                continue
            if last >= cutoff:
                continue
            try:
                with self._locked(directory, fcntl.LOCK_EX, "in use", wait=0.0):
                    shutil.rmtree(directory, ignore_errors=True)
            except ConflictError:
                continue  # a file is arriving right now: not stale after all
            except NotFoundError:  # no lock file: a session whose creation failed half-way
                shutil.rmtree(directory, ignore_errors=True)
            removed.append(entry.name)
            _forget(entry.name)
        return removed

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self, upload_id: str, principal: Principal, path: str, first: int, last: int | None, total: int | None
    ) -> FileReceiver:
        """Start receiving `path`'s bytes `first..last` (inclusive; None: to the end). The caller
        writes them, then finishes (or closes, after an interrupted transfer: the bytes stay)."""
        record = self._load(upload_id, principal)
        index, declared = _declared(record, path, upload_id)
        directory = self.root / upload_id
        if total is not None and total != declared.size:
            raise InvalidInputError(
                f"{path}: Content-Range says the file has {total} bytes; {declared.size} were declared",
                field="Content-Range",
            )
        if last is not None and last >= declared.size:
            raise PayloadTooLargeError(
                f"{path}: bytes {first}-{last} go beyond its declared size of {declared.size} bytes",
                field="Content-Range",
            )
        session_fd = self._lock_fd(directory, fcntl.LOCK_SH, "this upload is being committed or removed")
        part_fd = -1
        try:
            part = directory / "parts" / str(index)
            part_fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            _flock(part_fd, fcntl.LOCK_EX, LOCK_WAIT_SECONDS, f"another transfer into {path} is in progress")
            target = directory / RUN_DIR / path
            if target.is_file():  # checked under the lock: a transfer that held it may just have finished
                raise OffsetMismatchError(
                    f"{path} is complete already ({declared.size} bytes)",
                    details={"path": path, "received": declared.size},
                )
            received = os.fstat(part_fd).st_size
            if first != received:
                raise OffsetMismatchError(
                    f"{path}: this chunk starts at byte {first}, but {received} bytes have arrived; "
                    f"resume at byte {received}",
                    details={"path": path, "received": received},
                )
            os.utime(directory / "session.json")  # activity: the session is not stale
            hasher = _running_hash(part_fd, (upload_id, index))
            receiver = FileReceiver(upload_id, index, declared, part, target, part_fd, session_fd, first, last, hasher)
        except BaseException:
            if part_fd >= 0:
                os.close(part_fd)
            os.close(session_fd)
            raise
        return receiver

    # -- commit ---------------------------------------------------------------------------

    def commit(
        self, registry: Registry, upload_id: str, principal: Principal, options: RegisterOptions
    ) -> Registration:
        """Check every file arrived whole, register them as one version, remove the session."""
        self._load(upload_id, principal)
        directory = self.root / upload_id
        with self._locked(directory, fcntl.LOCK_EX, "a file of this upload is still arriving; commit once it stops"):
            record = self._load(upload_id, principal)
            missing = []
            for index, entry in enumerate(record["files"]):
                declared = DeclaredFile(**entry)
                if not _complete(directory, index, declared):
                    received = _size(directory / "parts" / str(index))
                    missing.append({"path": declared.path, "size": declared.size, "received": received})
            if missing:
                shown = ", ".join(f"{m['path']} ({m['received']} of {m['size']} bytes)" for m in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise IncompleteUploadError(
                    f"upload {upload_id} is not complete: {shown}{more} still missing bytes",
                    details={"incomplete": missing},
                )
            label = options.source_label or f"upload {upload_id} by {record['owner']}"
            run_dir = directory / RUN_DIR
            # The files are ours and about to be removed: link them into the store, not copy them.
            with paths_shown_as(run_dir, lambda path: path, f"upload {upload_id}"):
                registration = registry.register(run_dir, replace(options, source_label=label), link=True)
            shutil.rmtree(directory, ignore_errors=True)
        _forget(upload_id)
        return registration

    # -- internals ------------------------------------------------------------------------

    def _load(self, upload_id: str, principal: Principal) -> dict[str, Any]:
        """The session's record, if it exists and the caller may see it (its owner, or an admin);
        another's session answers exactly as a missing one does."""
        record = None
        if _UPLOAD_ID.match(upload_id):
            with contextlib.suppress(FileNotFoundError, ValueError):
                record = json.loads((self.root / upload_id / "session.json").read_text(encoding="utf-8"))
        # Admins see every session (to help, or to abort an abandoned one).
        if not isinstance(record, dict) or (record.get("owner") != principal.name and principal.role != "admin"):
            raise NotFoundError(f"no upload {upload_id!r} (it was committed, aborted or expired, or is another's)")
        return record

    def _state(self, upload_id: str, record: dict[str, Any]) -> UploadState:
        directory = self.root / upload_id
        files = []
        for index, entry in enumerate(record["files"]):
            declared = DeclaredFile(**entry)
            done = (directory / RUN_DIR / declared.path).is_file()
            received = declared.size if done else _size(directory / "parts" / str(index))
            files.append(FileProgress(declared.path, declared.size, received, done))
        last = _mtime(directory / "session.json") or time.time()
        expires = datetime.fromtimestamp(last + self.ttl_seconds, tz=UTC)
        return UploadState(upload_id, record["owner"], files, expires, record["options"])

    def _lock_fd(self, directory: Path, mode: int, busy: str, wait: float = LOCK_WAIT_SECONDS) -> int:
        try:
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"no upload {directory.name!r} (it was committed, aborted or expired)") from None
        try:
            _flock(fd, mode, wait, busy)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _locked(self, directory: Path, mode: int, busy: str, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
        fd = self._lock_fd(directory, mode, busy, wait)
        try:
            yield
        finally:
            os.close(fd)


class FileReceiver:
    """One transfer into one declared file; holds the session (shared) and the file (exclusive)."""

    def __init__(
        self,
        upload_id: str,
        index: int,
        declared: DeclaredFile,
        part: Path,
        target: Path,
        part_fd: int,
        session_fd: int,
        first: int,
        last: int | None,
        hasher: Any,
    ) -> None:
        self.upload_id = upload_id
        self.index = index
        self.declared = declared
        self._part = part
        self._target = target
        self._part_fd = part_fd
        self._session_fd = session_fd
        self._first = first
        self._end = declared.size if last is None else last + 1  # exclusive
        self._hasher = hasher
        self.received = first

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self._end:
            self._discard_this_transfer()
            if self._end == self.declared.size:
                raise PayloadTooLargeError(
                    f"{self.declared.path}: more bytes than its declared size of {self.declared.size}",
                    field=self.declared.path,
                )
            raise InvalidInputError(
                f"{self.declared.path}: the body is longer than its Content-Range (bytes "
                f"{self._first}-{self._end - 1})",
                field="Content-Range",
            )
        try:
            _write_all(self._part_fd, data, self.received, self._part)
        except StorageError:
            self._discard_this_transfer()
            raise
        self._hasher.update(data)
        self.received += len(data)

    def finish(self) -> FileProgress:
        """After the last byte of the transfer: a file now whole is checked against its SHA-256
        and, if it matches, moved where the commit registers it; if not, its bytes are dropped."""
        path, size = self.declared.path, self.declared.size
        if self.received < size:
            self.interrupted()
            return FileProgress(path, size, self.received, False)
        actual = self._hasher.hexdigest()
        if actual != self.declared.sha256:
            os.ftruncate(self._part_fd, 0)
            raise DigestMismatchError(
                f"{path}: the {size} bytes received have SHA-256 {actual}, not the declared "
                f"{self.declared.sha256}; its bytes were discarded, send the file again",
                field=path,
                details={"path": path, "received": 0},
            )
        _move_into_place(self._part, self._target)
        return FileProgress(path, size, size, True)

    def interrupted(self) -> None:
        """The client went away mid-body: keep what arrived (a correct prefix), to resume from."""
        if self._hasher is not None:
            _remember((self.upload_id, self.index), self._part_fd, self._hasher)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._part.parent.parent / "session.json")
        for fd in (self._part_fd, self._session_fd):
            if fd >= 0:
                os.close(fd)
        self._part_fd = self._session_fd = -1

    def _discard_this_transfer(self) -> None:
        """Drop this transfer's bytes (the file goes back to where it started); the running hash
        has taken them in, so it is dropped too and rebuilt from the file next time."""
        os.ftruncate(self._part_fd, self._first)
        self._hasher = None
        self.received = self._first


# -- running hashes kept between chunks in this process --------------------------------------

# (upload id, file index) -> ((size, mtime_ns, inode) of the part file after the last write, hash)
_running: dict[tuple[str, int], tuple[tuple[int, int, int], Any]] = {}
_running_lock = threading.Lock()
_MAX_RUNNING = 1024  # a few hundred bytes each; beyond this the oldest is re-hashed from disk


def _running_hash(part_fd: int, key: tuple[str, int]) -> Any:
    """The SHA-256 state after the part file's bytes: kept from the last chunk when the file is
    exactly as that chunk left it, else computed again from the file (another process wrote it)."""
    st = os.fstat(part_fd)
    with _running_lock:
        kept = _running.pop(key, None)
    if kept is not None and kept[0] == (st.st_size, st.st_mtime_ns, st.st_ino):
        return kept[1]
    hasher = hashlib.sha256()
    offset = 0
    while offset < st.st_size:
        chunk = os.pread(part_fd, min(HASH_CHUNK, st.st_size - offset), offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return hasher


def _remember(key: tuple[str, int], part_fd: int, hasher: Any) -> None:
    st = os.fstat(part_fd)
    with _running_lock:
        if len(_running) >= _MAX_RUNNING:
            _running.pop(next(iter(_running)))
        _running[key] = ((st.st_size, st.st_mtime_ns, st.st_ino), hasher)


def _forget(upload_id: str) -> None:
    with _running_lock:
        for key in [k for k in _running if k[0] == upload_id]:
            del _running[key]


# -- small helpers ---------------------------------------------------------------------------


def _declared(record: dict[str, Any], path: str, upload_id: str) -> tuple[int, DeclaredFile]:
    for index, entry in enumerate(record["files"]):
        if entry["path"] == path:
            return index, DeclaredFile(**entry)
    raise NotFoundError(f"upload {upload_id} declares no file {path!r}", field="path")


def _complete(directory: Path, index: int, declared: DeclaredFile) -> bool:
    """Whether a file arrived whole and matched. A part with every byte but no check (the server
    stopped between the last write and the check) is checked now."""
    target = directory / RUN_DIR / declared.path
    if target.is_file():
        return True
    part = directory / "parts" / str(index)
    if _size(part) != declared.size:
        return False
    fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    try:
        matches = _running_hash(fd, (directory.name, index)).hexdigest() == declared.sha256
    finally:
        os.close(fd)
    if not matches:
        os.truncate(part, 0)
        return False
    _move_into_place(part, target)
    return True


def _move_into_place(part: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(part, target)
    except OSError as exc:
        raise StorageError(f"cannot keep {target.name}: {exc.strerror}", path=target) from None


def _write_all(fd: int, data: bytes, offset: int, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
    except OSError as exc:
        raise StorageError(f"cannot write the upload: {exc.strerror}", path=path) from None


def _flock(fd: int, mode: int, wait: float, busy: str) -> None:
    """flock, waiting up to `wait` seconds (a client that just went away frees its file within
    milliseconds, once the server notices); then 409 naming what holds it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ConflictError(busy) from None
            time.sleep(0.02)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
