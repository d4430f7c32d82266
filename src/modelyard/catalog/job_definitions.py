"""Job definition rows (saved, listed, read by id), and the version number a preview predicts.

A definition is stored as the JSON of `modelyard.training.jobs.JobDefinition` with the artifact
name and training_config_hash its preview gave, who saved it and when; saving it is an audit event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelyard.catalog.tables import ArtifactRow, EventRow, JobDefinitionRow
from modelyard.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog


@dataclass(frozen=True)
class StoredJobDefinition:
    """A saved definition as the catalog holds it (the definition as JSON text)."""

    id: int
    name: str | None
    artifact_name: str
    training_config_hash: str
    definition_json: str
    created_by: str
    created_at: datetime


class JobDefinitionRecords:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(
        self, *, name: str | None, artifact_name: str, training_config_hash: str, definition_json: str, actor: str
    ) -> StoredJobDefinition:
        now = datetime.now(UTC)
        try:
            with self.catalog._write() as session:
                taken = select(JobDefinitionRow.id).where(JobDefinitionRow.name == name)
                if name is not None and session.scalars(taken).first() is not None:
                    raise _taken(name)
                row = JobDefinitionRow(
                    name=name,
                    artifact_name=artifact_name,
                    training_config_hash=training_config_hash,
                    definition_json=definition_json,
                    created_by=actor,
                    created_at=now,
                )
                session.add(row)
                session.flush()
                session.add(
                    EventRow(
                        at=now,
                        actor=actor,
                        action="job_definition.create",
                        artifact_name=artifact_name,
                        version_number=None,
                        details_json=json.dumps({"id": row.id, "name": name}, sort_keys=True),
                    )
                )
                stored = _stored(row)
        except IntegrityError:
            raise _taken(name) from None
        return stored

    def get(self, definition_id: int) -> StoredJobDefinition:
        with self.catalog._read() as session:
            row = session.get(JobDefinitionRow, definition_id)
            if row is None:
                raise NotFoundError(
                    f"no job definition {definition_id} (modelyard training definitions lists them)", field="id"
                )
            return _stored(row)

    def list(self) -> list[StoredJobDefinition]:
        with self.catalog._read() as session:
            return [_stored(row) for row in session.scalars(select(JobDefinitionRow).order_by(JobDefinitionRow.id))]


def next_version_number(catalog: Catalog, name: str) -> int:
    """The number the next registration under `name` gets: one past the highest handed out (1 for a new name)."""
    with catalog._read() as session:
        count = session.scalar(select(ArtifactRow.version_count).where(ArtifactRow.name == name))
    return int(count or 0) + 1


def _taken(name: str | None) -> ConflictError:
    return ConflictError(f"a job definition named {name!r} exists; choose another name", field="name")


def _stored(row: JobDefinitionRow) -> StoredJobDefinition:
    created_at = row.created_at if row.created_at.tzinfo is not None else row.created_at.replace(tzinfo=UTC)
    return StoredJobDefinition(
        id=row.id,
        name=row.name,
        artifact_name=row.artifact_name,
        training_config_hash=row.training_config_hash,
        definition_json=row.definition_json,
        created_by=row.created_by,
        created_at=created_at,
    )
