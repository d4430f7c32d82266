"""The catalog's lifecycle records (seed 003): references by stage, semantic version and alias;
aliases, approvals, validation reports and status events; lineage; pruning.

Nothing here edits a version: promotion adds versions, and every state change (an alias moved,
an approval, a demotion) is a new row plus an audit event, written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from modelyard.catalog.tables import (
    AliasRow,
    ApprovalRow,
    ArtifactRow,
    FileRow,
    ModelEntryRow,
    ModelTagRow,
    ValidationReportRow,
    VersionRow,
    VersionStatusRow,
    VersionTagRow,
)
from modelyard.domain import VersionRecord
from modelyard.errors import ConflictError, NotFoundError
from modelyard.names import RESERVED_REFS, Reference

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog

# A version whose latest status is one of these is skipped by stage references.
INACTIVE = ("demoted", "deprecated")
# Rows that belong to a version and go with it when it is pruned.
_VERSION_TABLES: tuple[Any, ...] = (
    FileRow,
    VersionTagRow,
    ModelTagRow,
    ModelEntryRow,
    ValidationReportRow,
    VersionStatusRow,
)


@dataclass(frozen=True)
class Approval:
    version: str  # NAME@N
    approved_by: str
    os_user: str
    at: datetime
    note: str | None


def _of_version(statement: Any, version_id: Any) -> Any:
    """`statement` restricted to the version NAME@NUMBER given as the bound parameters name and number."""
    return (
        statement.join(VersionRow, VersionRow.id == version_id)
        .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
        .where(ArtifactRow.name == bindparam("name"), VersionRow.number == bindparam("number"))
    )


_ALIASES_OF_VERSION = _of_version(select(AliasRow.alias), AliasRow.version_id).order_by(AliasRow.alias)
_STATUS_OF_VERSION = _of_version(
    select(VersionStatusRow.status, VersionStatusRow.actor, VersionStatusRow.at, VersionStatusRow.reason),
    VersionStatusRow.version_id,
).order_by(VersionStatusRow.id)


@dataclass(frozen=True)
class AliasEntry:
    alias: str
    version: str  # NAME@N
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class StatusEntry:
    status: str
    actor: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class StoredReport:
    id: int
    version: str
    checkpoint: str | None
    policy_sha256: str
    passed: bool
    actor: str
    created_at: datetime
    report_json: str


class LifecycleRecords:
    """Lifecycle queries and writes on a Catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- references ---------------------------------------------------------------------------

    def resolve_special(self, session: Session, artifact: ArtifactRow, reference: Reference) -> VersionRow:
        """A stage (newest active version in it), a semantic version, or an alias."""
        kind = reference.kind
        if kind == "stage":
            row = self._newest_active(session, artifact.id, reference.ref)
            if row is None:
                raise NotFoundError(
                    f"{reference.name} has no {reference.ref} version"
                    + (" (or every one was demoted or deprecated)" if reference.ref != "raw" else "")
                )
            return row
        if kind == "semver":
            found = session.scalars(
                select(VersionRow).where(VersionRow.artifact_id == artifact.id, VersionRow.semver == reference.ref)
            ).first()
            if found is None:
                known = session.scalars(
                    select(VersionRow.semver).where(
                        VersionRow.artifact_id == artifact.id, VersionRow.semver.is_not(None)
                    )
                ).all()
                raise NotFoundError(
                    f"{reference.name} has no production version {reference.ref}"
                    + (f"; its production versions are {', '.join(v for v in known if v)}" if known else "")
                )
            return found
        alias = session.get(AliasRow, (artifact.id, reference.ref))
        if alias is None:
            # A validated or production id (`v5_5_20251124_epoch_70_validated`) names one version too.
            labelled = session.scalars(
                select(VersionRow)
                .where(
                    VersionRow.artifact_id == artifact.id,
                    VersionRow.label == reference.ref,
                    VersionRow.stage != "raw",
                )
                .order_by(VersionRow.number.desc())
                .limit(1)
            ).first()
            if labelled is not None:
                return labelled
            names = session.scalars(select(AliasRow.alias).where(AliasRow.artifact_id == artifact.id)).all()
            raise NotFoundError(
                f"unknown reference {reference.ref!r} for {reference.name}; use a version number "
                f"(1..{artifact.version_count}), one of {', '.join(RESERVED_REFS)}, a semantic version"
                + (f", or an alias: {', '.join(names)}" if names else ", or an alias (none is set)")
            )
        row = session.get(VersionRow, alias.version_id)
        assert row is not None
        return row

    def _newest_active(self, session: Session, artifact_id: int, stage: str) -> VersionRow | None:
        rows = session.scalars(
            select(VersionRow)
            .where(VersionRow.artifact_id == artifact_id, VersionRow.stage == stage)
            .order_by(VersionRow.number.desc())
        )
        for row in rows:
            if self._status(session, row.id) not in INACTIVE:
                return row
        return None

    def _status(self, session: Session, version_id: int) -> str | None:
        latest = session.scalars(
            select(VersionStatusRow.status)
            .where(VersionStatusRow.version_id == version_id)
            .order_by(VersionStatusRow.id.desc())
            .limit(1)
        ).first()
        return None if latest in (None, "restored") else latest

    # -- status: demote, deprecate, restore ------------------------------------------------------

    def add_status(self, version: VersionRecord, status: str, actor: str, reason: str) -> None:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            session.add(VersionStatusRow(version_id=version_id, status=status, actor=actor, at=now, reason=reason))
            self._event(session, now, actor, status, version, {"reason": reason})

    def status_history(self, version: VersionRecord) -> list[StatusEntry]:
        with self.catalog._read() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            rows = session.scalars(
                select(VersionStatusRow).where(VersionStatusRow.version_id == version_id).order_by(VersionStatusRow.id)
            ).all()
            return [StatusEntry(row.status, row.actor, _utc(row.at), row.reason) for row in rows]

    def standing(self, version: VersionRecord) -> tuple[list[str], list[StatusEntry]]:
        """A version's aliases and its status history: what the server shows with every version,
        so two prebuilt statements on one connection (no ORM session, no id lookup)."""
        key = {"name": version.artifact_name, "number": version.number}
        with self.catalog._connect() as connection:
            aliases = connection.execute(_ALIASES_OF_VERSION, key).scalars().all()
            rows = connection.execute(_STATUS_OF_VERSION, key).all()
        return list(aliases), [StatusEntry(row.status, row.actor, _utc(row.at), row.reason) for row in rows]

    def status(self, version: VersionRecord) -> str | None:
        with self.catalog._read() as session:
            return self._status(session, self.catalog._version_id(session, version.artifact_name, version.number))

    def statuses(self, session: Session, version_ids: list[int]) -> dict[int, str]:
        """Current status of many versions (absent: active)."""
        found: dict[int, str] = {}
        for start in range(0, len(version_ids), 500):
            chunk = version_ids[start : start + 500]
            rows = session.execute(
                select(VersionStatusRow.version_id, VersionStatusRow.status)
                .where(VersionStatusRow.version_id.in_(chunk))
                .order_by(VersionStatusRow.id)
            )
            for version_id, status in rows:
                found[version_id] = status
        return {k: v for k, v in found.items() if v != "restored"}

    # -- aliases --------------------------------------------------------------------------------

    def set_alias(self, version: VersionRecord, alias: str, actor: str, reason: str | None) -> str | None:
        """Point `alias` at a version; returns the ref it pointed at before (None: new)."""
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            artifact = _artifact(session, version.artifact_name)
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            existing = session.get(AliasRow, (artifact.id, alias))
            before = None
            if existing is not None:
                previous = session.get(VersionRow, existing.version_id)
                before = f"{version.artifact_name}@{previous.number}" if previous else None
                existing.version_id, existing.set_by, existing.set_at = version_id, actor, now
            else:
                session.add(
                    AliasRow(artifact_id=artifact.id, alias=alias, version_id=version_id, set_by=actor, set_at=now)
                )
            details = {"alias": alias, "from": before, "reason": reason}
            self._event(session, now, actor, "alias:move" if before else "alias:set", version, details)
            return before

    def remove_alias(self, name: str, alias: str, actor: str, reason: str | None) -> str:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            artifact = _artifact(session, name)
            existing = session.get(AliasRow, (artifact.id, alias))
            if existing is None:
                raise NotFoundError(f"{name} has no alias {alias!r}")
            target = session.get(VersionRow, existing.version_id)
            assert target is not None
            session.delete(existing)
            record = VersionRecord(name, target.number, "", "", now, "", None)
            self._event(session, now, actor, "alias:remove", record, {"alias": alias, "reason": reason})
            return f"{name}@{target.number}"

    def aliases(self, name: str) -> list[AliasEntry]:
        with self.catalog._read() as session:
            artifact = _artifact(session, name)
            rows = session.execute(
                select(AliasRow, VersionRow.number)
                .join(VersionRow, VersionRow.id == AliasRow.version_id)
                .where(AliasRow.artifact_id == artifact.id)
                .order_by(AliasRow.alias)
            ).all()
            return [AliasEntry(row.alias, f"{name}@{number}", row.set_by, _utc(row.set_at)) for row, number in rows]

    # -- approvals ------------------------------------------------------------------------------

    def add_approval(self, version: VersionRecord, approved_by: str, os_user: str, note: str | None) -> None:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            session.add(ApprovalRow(version_id=version_id, approved_by=approved_by, os_user=os_user, at=now, note=note))
            details = {"approved_by": approved_by, "os_user": os_user, "note": note}
            self._event(session, now, approved_by, "approve", version, details)

    def approvals(self, version: VersionRecord) -> list[Approval]:
        with self.catalog._read() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            rows = session.scalars(
                select(ApprovalRow).where(ApprovalRow.version_id == version_id).order_by(ApprovalRow.id)
            ).all()
            return [Approval(version.ref, r.approved_by, r.os_user, _utc(r.at), r.note) for r in rows]

    # -- validation reports ------------------------------------------------------------------------

    def add_report(
        self,
        version: VersionRecord,
        checkpoint: str | None,
        policy_sha256: str,
        passed: bool,
        actor: str,
        report_json: str,
    ) -> int:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            row = ValidationReportRow(
                version_id=version_id,
                checkpoint=checkpoint,
                policy_sha256=policy_sha256,
                passed=passed,
                actor=actor,
                created_at=now,
                report_json=report_json,
            )
            session.add(row)
            session.flush()
            details = {"checkpoint": checkpoint, "passed": passed, "policy_sha256": policy_sha256, "report": row.id}
            self._event(session, now, actor, "validate", version, details)
            return int(row.id)

    def reports(self, version: VersionRecord) -> list[StoredReport]:
        with self.catalog._read() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            rows = session.scalars(
                select(ValidationReportRow)
                .where(ValidationReportRow.version_id == version_id)
                .order_by(ValidationReportRow.id)
            ).all()
            return [
                StoredReport(
                    r.id,
                    version.ref,
                    r.checkpoint,
                    r.policy_sha256,
                    r.passed,
                    r.actor,
                    _utc(r.created_at),
                    r.report_json,
                )
                for r in rows
            ]

    # -- lineage ------------------------------------------------------------------------------------

    def parent(self, version: VersionRecord) -> VersionRecord | None:
        """The version this one was promoted from."""
        from modelyard.catalog.catalog import _record

        with self.catalog._read() as session:
            row = session.get(VersionRow, self.catalog._version_id(session, version.artifact_name, version.number))
            if row is None or row.derived_from_id is None:
                return None
            parent = session.get(VersionRow, row.derived_from_id)
            if parent is None:
                return None
            # A derivation may cross artifacts (an -int8 model quantized from its float one).
            artifact = session.get(ArtifactRow, parent.artifact_id)
            return _record(artifact.name if artifact is not None else version.artifact_name, parent)

    def children(self, version: VersionRecord) -> list[VersionRecord]:
        """The versions promoted from this one."""
        from modelyard.catalog.catalog import _record

        with self.catalog._read() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            rows = session.execute(
                select(VersionRow, ArtifactRow.name)
                .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
                .where(VersionRow.derived_from_id == version_id)
                .order_by(VersionRow.id)
            ).all()
            return [_record(name, row) for row, name in rows]

    def find_by_label(self, label: str, stage: str) -> VersionRecord | None:
        """The newest version with this layout label (session id, validated id, production id)."""
        from modelyard.catalog.catalog import _record

        with self.catalog._read() as session:
            found = session.execute(
                select(VersionRow, ArtifactRow.name)
                .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
                .where(VersionRow.label == label, VersionRow.stage == stage)
                .order_by(VersionRow.registered_at.desc(), VersionRow.id.desc())
                .limit(1)
            ).first()
            return _record(found[1], found[0]) if found is not None else None

    # -- pruning --------------------------------------------------------------------------------------

    def prunable(self, version: VersionRecord, protected: set[str]) -> str | None:
        """Why a raw version must stay (None: it may go)."""
        if version.stage != "raw":
            return f"it is {version.stage}"
        if version.ref in protected:
            return "it is deployed"
        with self.catalog._read() as session:
            version_id = self.catalog._version_id(session, version.artifact_name, version.number)
            if session.scalars(select(VersionRow.id).where(VersionRow.derived_from_id == version_id).limit(1)).first():
                return "a promoted version was derived from it"
            alias = session.scalars(select(AliasRow.alias).where(AliasRow.version_id == version_id).limit(1)).first()
            if alias is not None:
                return f"alias {alias!r} points at it"
        return None

    def delete_versions(self, versions: list[VersionRecord], actor: str, reason: str) -> None:
        """Remove pruned raw versions (their rows; blobs go with the next gc), audited."""
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            for version in versions:
                version_id = self.catalog._version_id(session, version.artifact_name, version.number)
                if session.scalars(select(VersionRow.id).where(VersionRow.derived_from_id == version_id)).first():
                    raise ConflictError(f"{version.ref} was promoted meanwhile; it is kept")
                for table in _VERSION_TABLES:
                    session.execute(delete(table).where(table.version_id == version_id))
                session.execute(delete(VersionRow).where(VersionRow.id == version_id))
                self._event(session, now, actor, "prune", version, {"reason": reason})

    # -- audit ------------------------------------------------------------------------------------------

    def _event(
        self, session: Session, at: datetime, actor: str, action: str, version: VersionRecord, details: dict[str, Any]
    ) -> None:
        from modelyard.catalog.catalog import _event

        session.add(_event(at, actor, action, version.artifact_name, version.number, details))


def _artifact(session: Session, name: str) -> ArtifactRow:
    artifact = session.scalars(select(ArtifactRow).where(ArtifactRow.name == name)).first()
    if artifact is None:
        raise NotFoundError(f"no artifact named {name!r}; run 'modelyard list' to see the registered names")
    return artifact


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
