"""The catalog's record of the fleet: each (node, serving path, version) and its status.

Every status change is one row update and one audit event in the same transaction, so the audit
log tells the whole story of a node (`modelyard audit`), and `deploy status` reads the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from modelyard.catalog.tables import DeploymentRow, EventRow

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog

DEPLOYMENT_STATUSES = (
    "pending",
    "transferring",
    "verifying",
    "verified",
    "activated",
    "failed",
    "rolled_back",
)
# Statuses whose version is still on the node (and so protected from pruning in the registry).
ON_NODE = ("verifying", "verified", "activated", "failed", "rolled_back")


@dataclass(frozen=True)
class Deployment:
    node: str
    target_name: str
    version_dir: str
    artifact_name: str
    version_number: int
    serving_path: str
    status: str
    reason: str
    checks: dict[str, Any]
    files: list[dict[str, Any]]
    load: dict[str, Any]
    verified_at: datetime | None
    activated_at: datetime | None
    updated_at: datetime
    updated_by: str

    @property
    def ref(self) -> str:
        return f"{self.artifact_name}@{self.version_number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "artifact": self.artifact_name,
            "ref": self.ref,
            "target_name": self.target_name,
            "version_dir": self.version_dir,
            "serving_path": self.serving_path,
            "status": self.status,
            "reason": self.reason,
            "checks": self.checks,
            "verified_at": _iso(self.verified_at),
            "activated_at": _iso(self.activated_at),
            "updated_at": _iso(self.updated_at),
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class DeploymentKey:
    node: str
    target_name: str
    version_dir: str
    artifact_name: str
    version_number: int
    serving_path: str


class DeploymentRecords:
    """Deployment rows on a Catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def set_status(
        self,
        key: DeploymentKey,
        status: str,
        *,
        actor: str,
        reason: str = "",
        checks: dict[str, Any] | None = None,
        files: list[dict[str, Any]] | None = None,
        load: dict[str, Any] | None = None,
    ) -> None:
        """Create or move a deployment's row to `status`, with an audit event."""
        if status not in DEPLOYMENT_STATUSES:
            raise ValueError(f"unknown deployment status {status!r}")
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            row = session.scalars(
                select(DeploymentRow).where(
                    DeploymentRow.node == key.node,
                    DeploymentRow.target_name == key.target_name,
                    DeploymentRow.version_dir == key.version_dir,
                )
            ).first()
            if row is None:
                row = DeploymentRow(
                    node=key.node,
                    target_name=key.target_name,
                    version_dir=key.version_dir,
                    artifact_name=key.artifact_name,
                    version_number=key.version_number,
                    serving_path=key.serving_path,
                    files_json=json.dumps(files or []),
                    checks_json="{}",
                    load_json="{}",
                )
                session.add(row)
            row.status = status
            row.reason = reason
            row.updated_at = now
            row.updated_by = actor
            if checks is not None:
                row.checks_json = json.dumps(checks, sort_keys=True)
            if files is not None:
                row.files_json = json.dumps(files)
            if load is not None:
                row.load_json = json.dumps(load, sort_keys=True)
            if status == "verified":
                row.verified_at = now
            if status == "activated":
                row.activated_at = now
            session.add(
                EventRow(
                    at=now,
                    actor=actor,
                    action=f"deploy.{status}",
                    artifact_name=key.artifact_name,
                    version_number=key.version_number,
                    details_json=json.dumps(
                        {"node": key.node, "target_name": key.target_name, "version_dir": key.version_dir}
                        | ({"reason": reason} if reason else {}),
                        sort_keys=True,
                    ),
                )
            )

    def forget(self, node: str, target_name: str, version_dir: str, *, actor: str) -> None:
        """A version removed from a node (beyond the K kept): its row goes, an event stays."""
        with self.catalog._write() as session:
            row = session.scalars(
                select(DeploymentRow).where(
                    DeploymentRow.node == node,
                    DeploymentRow.target_name == target_name,
                    DeploymentRow.version_dir == version_dir,
                )
            ).first()
            if row is None:
                return
            session.add(
                EventRow(
                    at=datetime.now(UTC),
                    actor=actor,
                    action="deploy.removed",
                    artifact_name=row.artifact_name,
                    version_number=row.version_number,
                    details_json=json.dumps(
                        {"node": node, "target_name": target_name, "version_dir": version_dir}, sort_keys=True
                    ),
                )
            )
            session.delete(row)

    def deployments(self, *, node: str | None = None, name: str | None = None) -> list[Deployment]:
        """Rows, newest first; `name` matches an artifact name or a serving target name."""
        with self.catalog._read() as session:
            query = select(DeploymentRow)
            if node is not None:
                query = query.where(DeploymentRow.node == node)
            if name is not None:
                query = query.where((DeploymentRow.artifact_name == name) | (DeploymentRow.target_name == name))
            rows = session.scalars(query.order_by(DeploymentRow.updated_at.desc(), DeploymentRow.id.desc())).all()
            return [_deployment(row) for row in rows]

    def find(self, node: str, target_name: str, version_dir: str) -> Deployment | None:
        for deployment in self.deployments(node=node):
            if deployment.target_name == target_name and deployment.version_dir == version_dir:
                return deployment
        return None

    def on_nodes(self) -> set[str]:
        """NAME@N of every version some node still holds."""
        with self.catalog._read() as session:
            rows = session.execute(
                select(DeploymentRow.artifact_name, DeploymentRow.version_number).where(
                    DeploymentRow.status.in_(ON_NODE)
                )
            ).all()
        return {f"{name}@{number}" for name, number in rows}


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(
        node=row.node,
        target_name=row.target_name,
        version_dir=row.version_dir,
        artifact_name=row.artifact_name,
        version_number=row.version_number,
        serving_path=row.serving_path,
        status=row.status,
        reason=row.reason,
        checks=json.loads(row.checks_json),
        files=json.loads(row.files_json),
        load=json.loads(row.load_json),
        verified_at=_utc(row.verified_at),
        activated_at=_utc(row.activated_at),
        updated_at=_utc(row.updated_at) or datetime.now(UTC),
        updated_by=row.updated_by,
    )


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time stored is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
