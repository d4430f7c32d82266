"""The local filesystem blob store.

On-disk layout under the store root (default `~/.modelyard/store`)::

    objects/sha256/00/ … objects/sha256/ff/   all 256 shards, created with the store
        <64 hex digits>                       one blob, mode 0444, named by its SHA-256
    tmp/                                      staged writes: <pid>-<random>, never read as blobs
    quarantine/                               blobs `verify` found corrupt: <digest>.<UTC time>
    lock                                      flock: writers share it, gc takes it exclusively
    removals                                  a token replaced whenever a blob leaves `objects/`

A blob is written under `tmp/` while it is hashed, made durable (fsync for large files, one
syncfs for a batch of small ones), and only then renamed into its shard, followed by another
sync for the renames. So a crash, kill -9 or power cut leaves whole blobs or temporaries that gc
removes later, never a partial blob under `objects/`.

With `link=True`, a file is reflinked where the filesystem can (a copy-on-write clone: separate
inode), else hardlinked. A hardlinked blob *is* the user's file: it shares the inode, so its write
bits are removed for both names (read bits stay as the user set them), and an edit made through
either name changes the stored bytes; `verify` detects that by re-hashing. If the batch is
discarded (an error before publishing), the user's files get their modes back.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import mmap
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from modelyard.errors import BusyError, InvalidInputError, NotFoundError, StorageError
from modelyard.fsutil import fsync_dir as _fsync_dir
from modelyard.fsutil import start_writeback, syncfs
from modelyard.store.base import HEAD_BYTES, BlobCheck, BlobInfo, IngestMethod, ProgressCallback, StagedBlob

CHUNK_SIZE = 1024 * 1024
# Files at least this big are fsynced as soon as they are written (their data dominates the
# cost); smaller ones share one syncfs per batch, which is what keeps 20,000 small files fast.
FSYNC_EACH_MIN_BYTES = 4 * 1024 * 1024
BLOB_MODE = 0o444
DIR_MODE = 0o755
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# A filesystem that cannot clone at all answers one of these.
_NO_REFLINK_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS}
# Ask the kernel to start writing a large blob to disk every this many bytes (also the window
# in which a kernel-copied blob is hashed).
WRITEBACK_STEP = 32 * 1024 * 1024
# Files at least this big are copied by the kernel rather than through a buffer.
KERNEL_COPY_MIN_BYTES = 4 * 1024 * 1024
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # map the window's pages in one go
_NO_KERNEL_COPY_ERRNOS = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class _KernelCopyDeclined(Exception):
    """copy_file_range cannot copy between these files: copy through a buffer instead."""


SHARDS = [f"{i:02x}" for i in range(256)]
StrPath = str | Path


class LocalBlobStore:
    """Blobs as read-only files named by their SHA-256 under a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self.objects = root / "objects" / "sha256"
        self.tmp = root / "tmp"
        self.quarantine_dir = root / "quarantine"
        self._lock_path = root / "lock"
        self._removals_path = root / "removals"
        # Plain strings for the per-blob hot paths: building Path objects for 20,000 small
        # files costs more than the system calls themselves.
        self._objects_prefix = str(self.objects) + "/"
        self._tmp_prefix = str(self.tmp) + "/"
        self._reflinks: bool | None = None  # unknown until the first --link attempt
        self._ensure_layout()

    # -- layout ---------------------------------------------------------------------------

    def _ensure_layout(self) -> None:
        if (self.objects / "ff").is_dir() and self.tmp.is_dir():
            return
        try:
            for directory in (self.root, self.objects, self.tmp, self.quarantine_dir):
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            for shard in SHARDS:
                (self.objects / shard).mkdir(mode=DIR_MODE, exist_ok=True)
            self._lock_path.touch(exist_ok=True)
            _fsync_dir(self.objects)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot create the store: {exc.strerror}", path=self.root) from None

    def blob_path(self, sha256: str) -> Path:
        return Path(self.blob_name(sha256))

    def blob_name(self, sha256: str) -> str:
        """The blob's path as a string (the cheap form, for loops over many blobs)."""
        return f"{self._objects_prefix}{sha256[:2]}/{sha256}"

    def new_temporary(self) -> str:
        """A fresh name under tmp/, unique to this process."""
        return f"{self._tmp_prefix}{os.getpid()}-{secrets.token_hex(8)}"

    def try_reflink(self, source_fd: int, target: StrPath) -> IngestMethod | None:
        """Clone an open file into a new file `target` (copy-on-write); None when unsupported.

        The answer for this filesystem is remembered: on ext4, probing every file would create
        and delete one temporary per file, for nothing."""
        if self._reflinks is False:
            return None
        try:
            target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BLOB_MODE)
        except OSError:
            return None
        try:
            fcntl.ioctl(target_fd, FICLONE, source_fd)
        except OSError as exc:
            if exc.errno in _NO_REFLINK_ERRNOS:
                self._reflinks = False
            os.close(target_fd)
            with contextlib.suppress(OSError):
                os.unlink(target)
            return None
        os.close(target_fd)
        self._reflinks = True
        return "reflink"

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[LocalBlobWriter]:
        with self._flock(fcntl.LOCK_SH, timeout=None):
            writer = LocalBlobWriter(self)
            try:
                yield writer
            finally:
                writer.discard()

    def put(self, stream: BinaryIO) -> BlobInfo:
        with self.writer() as writer:
            staged = writer.add_stream(stream)
            writer.publish()
            info = self.stat(staged.sha256)  # under the shared lock: gc cannot remove it meanwhile
        if info is None:
            raise StorageError(f"blob sha256:{staged.sha256} vanished right after it was stored", path=self.root)
        return info

    # -- reading --------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.blob_path(sha256).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob sha256:{sha256} is not in the store", path=self.root) from None

    def stat(self, sha256: str) -> BlobInfo | None:
        try:
            st = os.stat(self.blob_path(sha256))
        except FileNotFoundError:
            return None
        return BlobInfo(sha256=sha256, size=st.st_size, changed_ns=st.st_ctime_ns)

    def has_all(self, digests: builtins.list[str]) -> bool:
        objects = str(self.objects)  # plain strings: this runs for every file of an unchanged registration

        def present(chunk: builtins.list[str]) -> bool:
            return all(os.path.exists(f"{objects}/{digest[:2]}/{digest}") for digest in chunk)

        if len(digests) < 4096:
            return present(digests)
        # The time is in stat(2), which releases the GIL: two threads check twice as fast.
        half = len(digests) // 2
        other: builtins.list[bool] = []
        helper = threading.Thread(target=lambda: other.append(present(digests[half:])))
        helper.start()
        mine = present(digests[:half])
        helper.join()
        return mine and other == [True]

    def verify(self, sha256: str, on_bytes: ProgressCallback | None = None) -> BlobCheck:
        path = self.blob_path(sha256)
        try:
            actual, size = _hash_path(path, on_bytes)
        except FileNotFoundError:
            return BlobCheck(sha256=sha256, status="missing")
        except OSError as exc:
            raise StorageError(f"cannot read blob: {exc.strerror}", path=path) from None
        if actual != sha256:
            return BlobCheck(sha256=sha256, status="corrupt", actual_sha256=actual, size=size)
        return BlobCheck(sha256=sha256, status="ok", actual_sha256=actual, size=size)

    def quarantine(self, sha256: str) -> str | None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.quarantine_dir / f"{sha256}.{stamp}.{secrets.token_hex(3)}"
        if not self.blob_path(sha256).exists():
            return None
        # A quarantined blob may belong to a registered version: new epoch first, durably, so
        # that no unchanged re-registration trusts an older "all blobs present" answer.
        self._new_removal_epoch(durable=True)
        try:
            os.rename(self.blob_path(sha256), target)
        except FileNotFoundError:
            return None
        _fsync_dir(self.blob_path(sha256).parent)
        return str(target)

    def delete(self, sha256: str) -> None:
        # gc deletes only blobs no version references, which no "all present" answer covers;
        # the epoch still moves (without a sync) so that the token means what it says.
        self._new_removal_epoch(durable=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(sha256))

    def removal_epoch(self) -> str:
        try:
            with open(self._removals_path, encoding="ascii") as handle:
                return handle.read(64).strip() or "0"
        except FileNotFoundError:
            return "0"
        except (OSError, UnicodeDecodeError):
            return secrets.token_hex(16)  # unreadable: an answer that matches nothing recorded

    def _new_removal_epoch(self, *, durable: bool) -> None:
        tmp = self.tmp / f"removals-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(16) + "\n")
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, self._removals_path)
            if durable:
                _fsync_dir(self.root)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot record a blob removal: {exc.strerror}", path=self._removals_path) from None

    def list(self) -> Iterator[BlobInfo]:
        for shard in SHARDS:
            try:
                entries = list(os.scandir(self.objects / shard))
            except FileNotFoundError:
                continue
            for entry in entries:
                if len(entry.name) != 64 or entry.name[:2] != shard:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield BlobInfo(sha256=entry.name, size=st.st_size, changed_ns=st.st_ctime_ns)

    # -- maintenance ----------------------------------------------------------------------

    def stale_temporaries(self, older_than_ns: int) -> builtins.list[tuple[str, int]]:
        stale = []
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                if st.st_ctime_ns < older_than_ns:
                    stale.append((entry.name, st.st_size))
        return stale

    def remove_temporary(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp / name)

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        with self._flock(fcntl.LOCK_EX, timeout=timeout):
            yield

    @contextlib.contextmanager
    def _flock(self, mode: int, timeout: float | None) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if timeout is None:
                fcntl.flock(fd, mode)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise BusyError(
                                "a registration is writing to the store; try again when it has finished",
                                path=self.root,
                            ) from None
                        time.sleep(0.05)
            yield
        finally:
            os.close(fd)


class LocalBlobWriter:
    """Stages blobs under tmp/ and publishes them together. Safe to use from several threads."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._staged: list[tuple[str, str]] = []  # (temporary, final)
        self._staged_digests: set[str] = set()
        self._staged_paths: dict[str, str] = {}  # digest -> its temporary, until published
        # Hardlinked user files: their inode's original mode (restored if the batch is discarded).
        self._original_modes: dict[tuple[int, int], tuple[StrPath, int]] = {}
        self._staged_inodes: set[tuple[int, int]] = set()
        self._unsynced: list[str] = []
        self._published = False

    def add_stream(self, stream: BinaryIO, on_bytes: ProgressCallback | None = None) -> StagedBlob:
        def read_into(buffer: bytearray) -> int:
            data = stream.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)

        tmp = self._new_temporary()
        digest, size, synced = self._write_copy(read_into, tmp, on_bytes)
        return self._stage(tmp, digest, size, "copy", needs_sync=not synced)

    def add_file(self, path: StrPath, *, link: bool = False, on_bytes: ProgressCallback | None = None) -> StagedBlob:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:  # also keeps --link from bypassing a file its owner made unreadable
            raise InvalidInputError(f"cannot read: {exc.strerror}", path=path) from None
        try:
            before = os.fstat(fd)
            head = os.pread(fd, HEAD_BYTES, 0)  # from the page cache: cheaper than a later open
            if link:
                linked = self._add_linked(path, fd, before, on_bytes)
                if linked is not None:
                    return dataclasses.replace(linked, head=head)
            tmp = self._new_temporary()
            try:
                if before.st_size < KERNEL_COPY_MIN_BYTES:
                    raise _KernelCopyDeclined
                digest, size, synced = self._kernel_copy(fd, tmp, on_bytes, source_path=path)
            except _KernelCopyDeclined:
                digest, size, synced = self._write_copy(fd, tmp, on_bytes, source_path=path)
            try:
                _check_unchanged(path, before, os.fstat(fd), size)
            except InvalidInputError:
                os.unlink(tmp)
                raise
        finally:
            os.close(fd)
        return dataclasses.replace(self._stage(tmp, digest, size, "copy", needs_sync=not synced), head=head)

    def open_blob(self, sha256: str) -> BinaryIO:
        with self._lock:
            staged = self._staged_paths.get(sha256)
        try:
            return open(staged or self._store.blob_name(sha256), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob sha256:{sha256} is neither staged nor stored", path=self._store.root) from None

    def publish(self) -> None:
        """Durable first (data of every staged blob), then visible (renames), then durable again."""
        with self._lock:
            if self._published:
                return
            try:
                self._sync_files(self._unsynced)
                touched: set[str] = set()
                for tmp, final in self._staged:
                    if os.path.exists(final):
                        os.unlink(tmp)  # a concurrent writer stored the same content first
                    else:
                        os.rename(tmp, final)
                        touched.add(os.path.dirname(final))
                self._sync_dirs(touched)
            except OSError as exc:
                raise StorageError(f"cannot publish blobs: {exc.strerror}", path=self._store.root) from None
            self._staged.clear()
            self._staged_paths.clear()
            self._original_modes.clear()
            self._staged_inodes.clear()
            self._published = True

    def discard(self) -> None:
        """Remove whatever was staged and not published (on error or early exit)."""
        with self._lock:
            for tmp, _ in self._staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._staged.clear()
            self._staged_paths.clear()
            self._staged_digests.clear()
            if not self._published:
                self._restore_modes()

    # -- internals ------------------------------------------------------------------------

    def _new_temporary(self) -> str:
        return self._store.new_temporary()

    def _stage(self, tmp: str, digest: str, size: int, method: IngestMethod, *, needs_sync: bool) -> StagedBlob:
        """Queue a hashed temporary for publishing, or drop it when the store has the blob."""
        final = self._store.blob_name(digest)
        with self._lock:
            duplicate = self._has(digest)
            if not duplicate:
                self._staged.append((tmp, final))
                self._staged_digests.add(digest)
                self._staged_paths[digest] = tmp
                if needs_sync:
                    self._unsynced.append(tmp)
        if duplicate:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            return StagedBlob(sha256=digest, size=size, bytes_added=0, method="existing")
        return StagedBlob(sha256=digest, size=size, bytes_added=size, method=method)

    def _has(self, digest: str) -> bool:
        """Stored already, or staged by this writer (two files with the same content)."""
        return digest in self._staged_digests or os.path.exists(self._store.blob_name(digest))

    def _write_copy(
        self,
        source: int | Callable[[bytearray], int | None],
        tmp: str,
        on_bytes: ProgressCallback | None,
        source_path: StrPath | None = None,
    ) -> tuple[str, int, bool]:
        """Copy from a file descriptor (or a `readinto`-like callable) into a new temporary file,
        hashing exactly what is written. Returns (digest, size, whether the data was fsynced)."""
        reader = io.FileIO(source, closefd=False).readinto if isinstance(source, int) else source
        hasher = hashlib.sha256()
        buffer, view = _thread_buffer()
        size = 0
        flushed = 0
        with _temporary_blob(tmp, os.O_WRONLY) as fd:
            while True:
                try:
                    count = reader(buffer)
                except OSError as exc:
                    where = source_path or "<stream>"
                    raise InvalidInputError(f"cannot read: {exc.strerror}", path=where) from None
                if not count:
                    break
                chunk = view[:count]
                hasher.update(chunk)
                _write_all(fd, chunk, tmp)
                size += count
                if size - flushed >= WRITEBACK_STEP:
                    # Let the disk start writing while we hash on, so the final fsync has little left.
                    start_writeback(fd, flushed, size - flushed)
                    flushed = size
                if on_bytes:
                    on_bytes(count)
            synced = size >= FSYNC_EACH_MIN_BYTES
            if synced:
                _fsync(fd, tmp)
        return hasher.hexdigest(), size, synced

    def _kernel_copy(
        self, source_fd: int, tmp: str, on_bytes: ProgressCallback | None, source_path: StrPath
    ) -> tuple[str, int, bool]:
        """Copy a large file inside the kernel (copy_file_range) and hash the copy through a
        read-only mapping, one window at a time: each byte crosses memory once less than with
        read() and write(), the hash is of the bytes stored, and memory stays bounded."""
        hasher = hashlib.sha256()
        offset = 0
        with _temporary_blob(tmp, os.O_RDWR) as fd:  # read access too, for the mapping
            while True:
                try:
                    copied = os.copy_file_range(source_fd, fd, WRITEBACK_STEP, offset, offset)
                except OSError as exc:
                    if exc.errno in _NO_KERNEL_COPY_ERRNOS:
                        raise _KernelCopyDeclined from None  # e.g. across filesystems on older kernels
                    if exc.errno == errno.ENOSPC:
                        raise StorageError("no space left on the store's disk", path=_store_root(tmp)) from None
                    raise InvalidInputError(f"cannot read: {exc.strerror}", path=source_path) from None
                if not copied:
                    break
                with _map_window(fd, copied, offset) as window:
                    hasher.update(window)
                start_writeback(fd, offset, copied)
                offset += copied
                if on_bytes:
                    on_bytes(copied)
            _fsync(fd, tmp)
        return hasher.hexdigest(), offset, True

    def _add_linked(
        self, path: StrPath, fd: int, before: os.stat_result, on_bytes: ProgressCallback | None
    ) -> StagedBlob | None:
        """Reflink or hardlink `path` into tmp/ and hash what was linked. None: copy instead."""
        tmp = self._new_temporary()
        method: IngestMethod | None = self._store.try_reflink(fd, tmp)
        inode: tuple[int, int] | None = None
        try:
            if method is None:
                try:
                    os.link(path, tmp)
                except OSError as exc:
                    if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        return None  # another filesystem, or links not allowed: copy instead
                    raise InvalidInputError(f"cannot link into the store: {exc.strerror}", path=path) from None
                inode = self._make_read_only(tmp, path, before)
                method = "hardlink"
                # Same inode as `fd`: hashing through it hashes exactly the bytes now stored.
                digest, size = _hash_fd(fd, on_bytes)
            else:
                digest, size = _hash_path(tmp, on_bytes)  # a clone: hash the clone itself
            _check_unchanged(path, before, os.fstat(fd), size)
        except BaseException:
            self._unlink_unstaged(tmp, inode)
            raise
        if inode is not None:
            with self._lock:
                duplicate = self._has(digest)
                if not duplicate:
                    self._staged_inodes.add(inode)
            if duplicate:  # already stored, or staged through another name of the same content
                self._unlink_unstaged(tmp, inode, digest)
                return StagedBlob(sha256=digest, size=size, bytes_added=0, method="existing")
        # The user's data may still be dirty in the page cache: sync it before publishing.
        return self._stage(tmp, digest, size, method, needs_sync=True)

    def _make_read_only(self, link: str, user_path: StrPath, opened: os.stat_result) -> tuple[int, int]:
        """Drop the write bits of a hardlinked inode (it is a blob now), remembering its mode."""
        st = os.stat(link)
        inode = (st.st_dev, st.st_ino)
        if inode != (opened.st_dev, opened.st_ino):
            raise InvalidInputError(
                "the file was replaced while it was being registered; register again", path=user_path
            )
        with self._lock:  # record-then-chmod is atomic for threads linking the same inode
            if inode not in self._original_modes:
                self._original_modes[inode] = (user_path, stat.S_IMODE(st.st_mode))
                os.chmod(link, stat.S_IMODE(st.st_mode) & ~0o222)
        return inode

    def _unlink_unstaged(self, tmp: str, inode: tuple[int, int] | None, digest: str | None = None) -> None:
        """Drop a link that will not be published; give the user's file its mode back unless the
        same inode is (or will be) a blob through another link."""
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if inode is None:
            return
        with self._lock:
            if inode in self._staged_inodes or (digest is not None and self._is_blob_inode(inode, digest)):
                return
            original = self._original_modes.pop(inode, None)
        if original is not None:
            with contextlib.suppress(OSError):
                os.chmod(original[0], original[1])

    def _is_blob_inode(self, inode: tuple[int, int], digest: str) -> bool:
        try:
            st = os.stat(self._store.blob_name(digest))
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == inode

    def _restore_modes(self) -> None:
        """After a discarded batch, hardlinked user files get their modes back."""
        for user_path, mode in self._original_modes.values():
            with contextlib.suppress(OSError):
                os.chmod(user_path, mode)
        self._original_modes.clear()
        self._staged_inodes.clear()

    def _sync_files(self, paths: list[str]) -> None:
        if not paths:
            return
        if len(paths) <= 8:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    _fsync(fd, path)
                finally:
                    os.close(fd)
        else:
            _syncfs(self._store.tmp)
        paths.clear()

    def _sync_dirs(self, directories: set[str]) -> None:
        if len(directories) <= 8:
            for directory in directories:
                _fsync_dir(Path(directory))
        else:
            _syncfs(self._store.objects)


@contextlib.contextmanager
def _temporary_blob(tmp: str, access: int) -> Iterator[int]:
    """Create a new temporary blob file (mode 0444: writable only through this descriptor);
    it is closed at the end, and removed if the block fails."""
    try:
        fd = os.open(tmp, access | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BLOB_MODE)
    except OSError as exc:
        raise StorageError(f"cannot create a temporary blob: {exc.strerror}", path=tmp) from None
    try:
        yield fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def _check_unchanged(path: StrPath, before: os.stat_result, after: os.stat_result, size_read: int) -> None:
    changed = (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
    if changed or size_read != after.st_size:
        raise InvalidInputError(
            "the file changed while it was being stored; register again once the writer has finished",
            path=path,
        )


_local = threading.local()


def _thread_buffer() -> tuple[bytearray, memoryview]:
    """One read buffer per thread, reused: 20,000 small files need not allocate 20,000 MiB."""
    pair: tuple[bytearray, memoryview] | None = getattr(_local, "pair", None)
    if pair is None:
        buffer = bytearray(CHUNK_SIZE)
        pair = _local.pair = (buffer, memoryview(buffer))
    return pair


def _map_window(fd: int, length: int, offset: int) -> mmap.mmap:
    """A read-only view of part of a file, its pages mapped in one go (no fault per page)."""
    return mmap.mmap(fd, length, flags=mmap.MAP_SHARED | _MAP_POPULATE, prot=mmap.PROT_READ, offset=offset)


def _hash_fd(fd: int, on_bytes: ProgressCallback | None = None) -> tuple[str, int]:
    """Hash an open file from its start; the descriptor's offset is left alone.

    Large files are hashed through read-only mmap windows, straight from the page cache; small
    ones through a reused buffer (mapping costs more than it saves below a few MiB)."""
    hasher = hashlib.sha256()
    length = os.fstat(fd).st_size
    if length >= KERNEL_COPY_MIN_BYTES:
        offset = 0
        while offset < length:
            window = min(WRITEBACK_STEP, length - offset)
            with _map_window(fd, window, offset) as mapped:
                hasher.update(mapped)
            offset += window
            if on_bytes:
                on_bytes(window)
        return hasher.hexdigest(), offset
    buffer, view = _thread_buffer()
    size = 0
    while count := os.preadv(fd, [buffer], size):
        hasher.update(view[:count])
        size += count
        if on_bytes:
            on_bytes(count)
    return hasher.hexdigest(), size


def _hash_path(path: StrPath, on_bytes: ProgressCallback | None = None) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _hash_fd(fd, on_bytes)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview, path: StrPath) -> None:
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageError("no space left on the store's disk", path=_store_root(path)) from None
        raise StorageError(f"cannot write a blob: {exc.strerror}", path=path) from None


def _fsync(fd: int, path: StrPath) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"cannot make the blob durable: {exc.strerror}", path=path) from None


def _syncfs(path: Path) -> None:
    try:
        syncfs(path)
    except OSError as exc:
        raise StorageError(f"cannot make blobs durable: {exc.strerror}", path=path) from None


def _store_root(tmp: StrPath) -> str:
    """The store root of a temporary blob's path (<root>/tmp/<name>), for messages."""
    return os.path.dirname(os.path.dirname(os.fspath(tmp)))
