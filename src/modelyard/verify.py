"""Re-hash stored blobs and report every one that is missing or no longer matches its digest.

A corrupt blob is moved to the store's quarantine, so that nothing is served from it and a later
registration of the original file stores good bytes again instead of deduplicating against bad
ones. (With `register --link`, a hardlinked blob shares its inode with the user's file, so an
edit through either name shows up here.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from modelyard.domain import FileUse
from modelyard.progress import NullProgress, Progress
from modelyard.store.base import BlobCheck, BlobStore


@dataclass(frozen=True)
class BlobProblem:
    sha256: str
    status: str  # "missing" or "corrupt"
    uses: tuple[FileUse, ...]
    actual_sha256: str | None = None
    quarantined_to: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    versions: int
    blobs_checked: int
    bytes_checked: int
    problems: list[BlobProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_blobs(
    uses: dict[str, list[FileUse]],
    store: BlobStore,
    *,
    versions: int,
    workers: int = 2,
    quarantine: bool = True,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every blob in `uses` (digest -> where it is used)."""
    progress = progress or NullProgress()
    sizes = {digest: (info.size if (info := store.stat(digest)) else 0) for digest in uses}
    progress.start("verifying", sum(sizes.values()))
    try:
        # Largest first keeps both threads busy to the end.
        ordered = sorted(uses, key=lambda digest: sizes[digest], reverse=True)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            checks: list[BlobCheck] = list(pool.map(lambda d: store.verify(d, progress.advance), ordered))
    finally:
        progress.finish()
    problems = []
    checked_bytes = 0
    for check in checks:
        checked_bytes += check.size or 0
        if check.status == "ok":
            continue
        moved = store.quarantine(check.sha256) if quarantine and check.status == "corrupt" else None
        problems.append(
            BlobProblem(
                sha256=check.sha256,
                status=check.status,
                uses=tuple(uses[check.sha256]),
                actual_sha256=check.actual_sha256,
                quarantined_to=moved,
            )
        )
    problems.sort(key=lambda p: (p.status, str(p.uses[0]) if p.uses else p.sha256))
    return VerifyReport(versions=versions, blobs_checked=len(checks), bytes_checked=checked_bytes, problems=problems)
