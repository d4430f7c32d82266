"""Everything around promotion that is not building a version: aliases, approvals, demotion and
deprecation, pruning old raw versions. Each is a recorded event; none edits a version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError
from modelyard.names import check_alias

if TYPE_CHECKING:
    from modelyard.domain import VersionRecord
    from modelyard.registry import Registry

STATUSES = ("demoted", "deprecated", "restored")


def set_alias(registry: Registry, reference: str, alias: str, approved_by: str, reason: str | None) -> str | None:
    """Point a free alias at a version (approvers only; audited). Returns the ref it left, if any."""
    check_alias(alias)
    who = _name(approved_by, "approved_by")
    version = registry.show(reference)
    return registry.catalog.lifecycle.set_alias(version, alias, who, reason)


def remove_alias(registry: Registry, name: str, alias: str, approved_by: str, reason: str | None) -> str:
    check_alias(alias)
    return registry.catalog.lifecycle.remove_alias(name, alias, _name(approved_by, "approved_by"), reason)


def approve(registry: Registry, reference: str, approved_by: str, note: str | None, os_user: str) -> VersionRecord:
    """Record an approval of a validated version for production."""
    version = registry.show(reference)
    if version.stage != "validated":
        raise InvalidInputError(
            f"{version.ref} is {version.stage}; approvals are for validated versions (approve NAME@validated)",
            field="reference",
        )
    registry.catalog.lifecycle.add_approval(version, _name(approved_by, "approved_by"), os_user, note)
    return version


def change_status(registry: Registry, reference: str, status: str, actor: str, reason: str) -> VersionRecord:
    """Demote, deprecate or restore a version: a new status event, never an edit.

    A demoted or deprecated version is skipped by `NAME@validated` / `NAME@production`."""
    if status not in STATUSES:
        raise InvalidInputError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", field="status")
    if not reason or not reason.strip():
        raise InvalidInputError(f"say why with --reason: a {status} is recorded for the audit", field="reason")
    version = registry.show(reference)
    if status == "demoted" and version.stage == "raw":
        raise InvalidInputError(f"{version.ref} is raw: only validated and production versions are demoted")
    current = registry.catalog.lifecycle.status(version)
    if status == "restored" and current is None:
        raise InvalidInputError(f"{version.ref} is neither demoted nor deprecated: nothing to restore")
    if status != "restored" and current == status:
        raise InvalidInputError(f"{version.ref} is already {status}")
    registry.catalog.lifecycle.add_status(version, status, actor, reason.strip())
    return version


@dataclass
class PruneReport:
    """What `prune` removed (or would remove with dry_run) and what it kept, with the reason."""

    dry_run: bool
    removed: list[VersionRecord] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (ref, why)

    @property
    def bytes_freed_at_most(self) -> int:
        """The removed versions' bytes; gc frees what no other version shares."""
        return sum(version.manifest.total_size for version in self.removed)


def prune(
    registry: Registry,
    name: str,
    *,
    keep_last: int,
    older_than_seconds: float | None,
    dry_run: bool,
    actor: str,
    protected: set[str],
) -> PruneReport:
    """Remove raw versions beyond the newest `keep_last` (and older than the given age) that are
    not promoted, not aliased and not deployed, so that epoch checkpoints do not pile up."""
    if keep_last < 1:
        raise InvalidInputError("--keep-last must be at least 1 (the newest version always stays)", field="keep_last")
    versions = registry.versions(name)
    raw = [v for v in versions if v.stage == "raw"]
    newest = {v.ref for v in sorted(raw, key=lambda v: v.number, reverse=True)[:keep_last]}
    cutoff = time.time() - older_than_seconds if older_than_seconds is not None else None
    report = PruneReport(dry_run=dry_run)
    for version in raw:
        if version.ref in newest:
            report.kept.append((version.ref, f"one of the newest {keep_last}"))
            continue
        if cutoff is not None and version.registered_at.timestamp() > cutoff:
            report.kept.append((version.ref, "younger than --older-than"))
            continue
        why = registry.catalog.lifecycle.prunable(version, protected)
        if why is not None:
            report.kept.append((version.ref, why))
            continue
        report.removed.append(version)
    if not dry_run and report.removed:
        registry.catalog.lifecycle.delete_versions(report.removed, actor, f"prune --keep-last {keep_last}")
    return report


def _name(value: str, field_name: str) -> str:
    if not value or not value.strip():
        raise InvalidInputError(f"give the approver's name ({field_name.replace('_', '-')})", field=field_name)
    return value.strip()
