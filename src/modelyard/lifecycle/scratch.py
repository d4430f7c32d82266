"""Private working directories under `<home>/tmp/`, and the removal of those a killed process left.

Promotion staging trees, exported copies for validation commands and benchmarks, assembled
training sessions: each can hold a full copy of the weights. Each directory holds a `.lock` file
its owner keeps locked (flock) while it works; whoever opens the next one removes every directory
whose lock nobody holds, that is, whose owner is gone, at once rather than after some age.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
PREFIXES = ("promote-", "validate-", "bench-", "session-", "deploy-", "pull-", "bundle-", "upload-")


@contextmanager
def scratch_dir(home: Path, prefix: str) -> Iterator[Path]:
    """A new directory `<home>/tmp/<prefix>...`, locked while in use and removed afterwards."""
    base = home / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    remove_abandoned(base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_abandoned(base: Path) -> list[str]:
    """Remove the scratch directories whose owner is gone (their lock is free). Returns their names."""
    removed = []
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if not entry.name.startswith(PREFIXES) or not entry.is_dir():
            continue
        if _owner_is_gone(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _owner_is_gone(directory: Path) -> bool:
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Created but not yet locked (a few microseconds), or from before locks existed: leave
        # it unless it is clearly old.
        with contextlib.suppress(OSError):
            import time

            return directory.stat().st_mtime < time.time() - 3600
        return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner is still at work
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return True
