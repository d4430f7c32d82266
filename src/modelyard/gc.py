"""Garbage collection: plan, then sweep, blobs that no version references.

The plan lists unreferenced blobs and leftovers of interrupted writes. Anything that changed in
the store within the grace period is kept, so a registration that stored blobs but has not yet
committed its version is never robbed. The sweep runs under the store's exclusive lock (no
writer active), re-reads the referenced set and re-checks each blob's age just before removing
it; a blob any version references is never removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelyard.store.base import BlobInfo, BlobStore


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    grace_seconds: float
    blobs_total: int
    blobs_referenced: int
    removable: list[BlobInfo] = field(default_factory=list)
    kept_young: int = 0
    bytes_kept_young: int = 0
    temporaries: list[tuple[str, int]] = field(default_factory=list)

    @property
    def bytes_removable(self) -> int:
        return sum(blob.size for blob in self.removable) + sum(size for _, size in self.temporaries)


def plan_gc(store: BlobStore, referenced: set[str], grace_seconds: float, *, dry_run: bool) -> GcReport:
    cutoff_ns = time.time_ns() - int(grace_seconds * 1e9)
    blobs = list(store.list())
    unreferenced = [blob for blob in blobs if blob.sha256 not in referenced]
    old = [blob for blob in unreferenced if blob.changed_ns < cutoff_ns]
    young = [blob for blob in unreferenced if blob.changed_ns >= cutoff_ns]
    return GcReport(
        dry_run=dry_run,
        grace_seconds=grace_seconds,
        blobs_total=len(blobs),
        blobs_referenced=len(blobs) - len(unreferenced),
        removable=sorted(old, key=lambda blob: blob.sha256),
        kept_young=len(young),
        bytes_kept_young=sum(blob.size for blob in young),
        temporaries=store.stale_temporaries(cutoff_ns),
    )


def sweep(store: BlobStore, plan: GcReport, referenced_now: set[str]) -> GcReport:
    """Remove what the plan found, re-checking each blob; call under `store.exclusive()`."""
    cutoff_ns = time.time_ns() - int(plan.grace_seconds * 1e9)
    removed = []
    for blob in plan.removable:
        current = store.stat(blob.sha256)
        if blob.sha256 in referenced_now or current is None or current.changed_ns >= cutoff_ns:
            continue
        store.delete(blob.sha256)
        removed.append(blob)
    stale = {name for name, _ in store.stale_temporaries(cutoff_ns)}
    temporaries = [(name, size) for name, size in plan.temporaries if name in stale]
    for name, _ in temporaries:
        store.remove_temporary(name)
    return GcReport(
        dry_run=False,
        grace_seconds=plan.grace_seconds,
        blobs_total=plan.blobs_total,
        blobs_referenced=plan.blobs_referenced,
        removable=removed,
        kept_young=plan.kept_young,
        bytes_kept_young=plan.bytes_kept_young,
        temporaries=temporaries,
    )
