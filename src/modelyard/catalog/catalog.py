"""The catalog: artifact names, their immutable versions, files and audit events, in SQL.

Everything returned is a plain record from `modelyard.domain`; ORM rows stay in this package.
Version numbers are handed out under a lock on the artifact's row (SELECT ... FOR UPDATE on
PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers), and the unique (artifact, number)
constraint backs that up, so concurrent registrations under one name get distinct numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, Table, and_, bindparam, func, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased

from modelyard.catalog.db import create_catalog_engine, ensure_schema, safe_url, writer_engine
from modelyard.catalog.tables import (
    ArtifactRow,
    EventRow,
    FileRow,
    ModelEntryRow,
    ModelTagRow,
    VersionRow,
    VersionTagRow,
)
from modelyard.domain import FileUse, Lifecycle, ListFilters, StoredModelConfig, VersionRecord, VersionSummary
from modelyard.errors import BusyError, CatalogError, ConflictError, ModelyardError, NotFoundError, StorageError
from modelyard.manifest import ArtifactManifest
from modelyard.modelconfig import BaseModelConfig
from modelyard.names import Reference

if TYPE_CHECKING:
    from modelyard.catalog.deployments import DeploymentRecords
    from modelyard.catalog.keys import KeyRecords
    from modelyard.catalog.lifecycle import LifecycleRecords

ManifestBuilder = Callable[[int], ArtifactManifest]
_INSERT_RETRIES = 5
_FILE_INSERT_BATCH = 5000
_FILES_TABLE = cast(Table, FileRow.__table__)
# Built once: a fresh alias per query would rebuild its columns and miss SQLAlchemy's statement cache.
_OTHER_VERSION = aliased(VersionRow, name="other_version")


class Catalog:
    """SQL-backed metadata for the registry."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_catalog_engine(url)
        self._writer = writer_engine(self.engine)
        try:
            ensure_schema(self.engine)
        except DBAPIError as exc:
            raise translate_database_error(exc, url) from None

    def close(self) -> None:
        self.engine.dispose()

    @property
    def lifecycle(self) -> LifecycleRecords:
        """Stages, aliases, approvals, validation reports, status, lineage, pruning (seed 003)."""
        from modelyard.catalog.lifecycle import LifecycleRecords

        return LifecycleRecords(self)

    @property
    def keys(self) -> KeyRecords:
        """The server's API keys (digests only)."""
        from modelyard.catalog.keys import KeyRecords

        return KeyRecords(self)

    @property
    def deployments(self) -> DeploymentRecords:
        """What each fleet node holds, and its status (the fleet issue)."""
        from modelyard.catalog.deployments import DeploymentRecords

        return DeploymentRecords(self)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with _database_errors(self.url), Session(self.engine) as session:
            yield session

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A plain connection for hot read paths that run prebuilt Core statements (no ORM session)."""
        with _database_errors(self.url), self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction (SQLite: BEGIN IMMEDIATE), committed when the block ends."""
        with _database_errors(self.url), Session(self._writer) as session, session.begin():
            yield session

    # -- registration ---------------------------------------------------------------------

    def add_version(
        self,
        *,
        name: str,
        content_key: str,
        build_manifest: ManifestBuilder,
        registered_by: str,
        source_path: str | None,
        model_config: BaseModelConfig | None = None,
        inspector_version: int = 0,
        lifecycle: Lifecycle | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Add the next version of `name`, or return the existing one with the same content key.

        `build_manifest(number)` makes the manifest once the number is known; `model_config` is
        the inspection's typed configuration, stored with the version in the same transaction.
        Returns the version and whether it was created.
        """
        entry = (model_config, inspector_version) if model_config is not None else None
        for attempt in range(_INSERT_RETRIES):
            try:
                return self._add_version_once(
                    name, content_key, build_manifest, registered_by, source_path, entry, lifecycle
                )
            except IntegrityError:
                if attempt == _INSERT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _add_version_once(
        self,
        name: str,
        content_key: str,
        build_manifest: ManifestBuilder,
        registered_by: str,
        source_path: str | None,
        entry: tuple[BaseModelConfig, int] | None,
        lifecycle: Lifecycle | None,
    ) -> tuple[VersionRecord, bool]:
        now = datetime.now(UTC)
        with self._write() as session:
            artifact = self._lock_artifact(session, name, now)
            existing = session.scalars(
                select(VersionRow)
                .where(VersionRow.artifact_id == artifact.id, VersionRow.content_key == content_key)
                .order_by(VersionRow.number.desc())
                .limit(1)
            ).first()
            if existing is not None:
                return _record(name, existing), False
            number = artifact.version_count + 1
            manifest = build_manifest(number)
            manifest_json = manifest.to_json()
            if manifest.semantic_version is not None:
                # Under the artifact's lock: two promotions to one semantic version cannot both pass.
                taken = session.scalars(
                    select(VersionRow.number).where(
                        VersionRow.artifact_id == artifact.id, VersionRow.semver == manifest.semantic_version
                    )
                ).first()
                if taken is not None:
                    raise ConflictError(
                        f"{name} {manifest.semantic_version} already exists ({name}@{taken}); "
                        "production versions are never reused"
                    )
            row = VersionRow(
                artifact_id=artifact.id,
                number=number,
                registered_at=now,
                registered_by=registered_by,
                source_path=source_path,
                created_at=manifest.created_at,
                content_key=content_key,
                manifest_sha256=hashlib.sha256(manifest_json.encode()).hexdigest(),
                manifest_json=manifest_json,
                component=manifest.component,
                task=manifest.task,
                node_type=manifest.node_type,
                base_model=manifest.base_model,
                precision=manifest.precision,
                quantized=manifest.quantized,
                file_count=len(manifest.files),
                total_size=manifest.total_size,
                stage=manifest.stage,
                semver=manifest.semantic_version,
                derived_from_id=self._derived_from_id(session, manifest.derived_from),
                label=(lifecycle.label if lifecycle else None) or manifest.run_name,
                checkpoint=manifest.checkpoint,
                forced=bool(lifecycle and lifecycle.forced),
            )
            session.add(row)
            artifact.version_count = number
            session.flush()
            self._insert_files(session, row.id, manifest)
            for tag in dict.fromkeys(manifest.train_data_tags):
                session.add(VersionTagRow(version_id=row.id, tag=tag))
            if entry is not None:
                self._put_model_entry(session, row.id, entry[0], entry[1], now)
            action = "register" if manifest.stage == "raw" else f"promote:{manifest.stage}"
            details: dict[str, Any] = {"source_path": source_path}
            if lifecycle is not None and manifest.stage != "raw":
                details = {"derived_from": manifest.derived_from, "label": row.label, "forced": row.forced}
                if manifest.semantic_version:
                    details["semantic_version"] = manifest.semantic_version
            session.add(_event(now, registered_by, action, name, number, details))
        return (
            VersionRecord.with_manifest(
                manifest,
                manifest_json,
                artifact_name=name,
                number=number,
                content_key=content_key,
                registered_at=now,
                registered_by=registered_by,
                source_path=source_path,
                stage=manifest.stage,
                label=(lifecycle.label if lifecycle else None) or manifest.run_name,
                semver=manifest.semantic_version,
                forced=bool(lifecycle and lifecycle.forced),
            ),
            True,
        )

    def _derived_from_id(self, session: Session, reference: str | None) -> int | None:
        if reference is None:
            return None
        name, _, number = reference.rpartition("@")
        return self._version_id(session, name, int(number))

    def _lock_artifact(self, session: Session, name: str, now: datetime) -> ArtifactRow:
        """Get or create the artifact row and lock it for the rest of the transaction."""
        if session.bind is not None and session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            session.execute(
                pg_insert(ArtifactRow)
                .values(name=name, created_at=now, version_count=0)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        artifact = session.scalars(select(ArtifactRow).where(ArtifactRow.name == name).with_for_update()).first()
        if artifact is None:
            artifact = ArtifactRow(name=name, created_at=now, version_count=0)
            session.add(artifact)
            session.flush()
        return artifact

    def _insert_files(self, session: Session, version_id: int, manifest: ArtifactManifest) -> None:
        rows = [
            {"version_id": version_id, "path": entry.path, "size": entry.size, "sha256": entry.sha256}
            for entry in manifest.files
        ]
        # Core inserts on the session's connection: the ORM's per-row bookkeeping would cost more
        # than the database's own work for a version of 20,000 files.
        connection = session.connection()
        for start in range(0, len(rows), _FILE_INSERT_BATCH):
            connection.execute(insert(_FILES_TABLE), rows[start : start + _FILE_INSERT_BATCH])

    def find_by_content(self, name: str, content_key: str) -> VersionRecord | None:
        with self._read() as session:
            row = session.scalars(
                select(VersionRow)
                .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
                .where(ArtifactRow.name == name, VersionRow.content_key == content_key)
                .order_by(VersionRow.number.desc())
                .limit(1)
            ).first()
            return _record(name, row) if row is not None else None

    # -- model entries (inspection) -------------------------------------------------------

    def _put_model_entry(
        self, session: Session, version_id: int, config: BaseModelConfig, inspector_version: int, now: datetime
    ) -> None:
        """Insert or replace a version's model entry and its tags."""
        fields = config.catalog_fields()
        session.query(ModelEntryRow).filter(ModelEntryRow.version_id == version_id).delete()
        session.query(ModelTagRow).filter(ModelTagRow.version_id == version_id).delete()
        session.add(
            ModelEntryRow(
                version_id=version_id,
                model_type=fields.model_type,
                task=_clip(fields.task, 100),
                format=fields.format,
                architecture=_clip(fields.architecture, 200),
                family=_clip(fields.family, 100),
                base_model=_clip(fields.base_model, 300),
                quantization=_clip(fields.quantization, 50),
                parameter_count=fields.parameter_count,
                dtype=_clip(fields.dtype, 30),
                license=_clip(fields.license, 100),
                author=_clip(fields.author, 200),
                pickle_verdict=config.pickle_scan.verdict,
                inspector_version=inspector_version,
                inspected_at=now,
                config_json=config.model_dump_json(),
            )
        )
        for tag in dict.fromkeys(t[:200] for t in fields.tags if t):
            session.add(ModelTagRow(version_id=version_id, tag=tag))

    def set_model_config(
        self,
        version: VersionRecord,
        config: BaseModelConfig,
        *,
        actor: str,
        action: str,
        inspector_version: int,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Replace a version's model entry (re-inspection, marketplace metadata), audited."""
        now = datetime.now(UTC)
        with self._write() as session:
            version_id = self._version_id(session, version.artifact_name, version.number)
            self._put_model_entry(session, version_id, config, inspector_version, now)
            session.add(_event(now, actor, action, version.artifact_name, version.number, details or {}))

    def model_config(self, version: VersionRecord) -> StoredModelConfig | None:
        """The version's stored typed configuration, or None when it was never inspected."""
        with self._read() as session:
            version_id = self._version_id(session, version.artifact_name, version.number)
            row = session.get(ModelEntryRow, version_id)
            if row is None:
                return None
            return StoredModelConfig(
                config_json=row.config_json,
                inspected_at=_utc(row.inspected_at),
                inspector_version=row.inspector_version,
            )

    def _version_id(self, session: Session, name: str, number: int) -> int:
        version_id = session.scalar(
            select(VersionRow.id)
            .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
            .where(ArtifactRow.name == name, VersionRow.number == number)
        )
        if version_id is None:
            raise NotFoundError(f"{name} has no version {number}")
        return int(version_id)

    # -- reading --------------------------------------------------------------------------

    def resolve(self, reference: Reference) -> VersionRecord:
        """The version a `NAME@REF` names; NotFoundError says what exists instead."""
        if reference.version_number is not None or reference.ref == "latest":
            # The common case (every API show): one prebuilt statement; a miss takes the path below,
            # which says what exists instead.
            values: dict[str, str | int]
            if reference.version_number is None:
                statement, values = _LATEST_VERSION, {"name": reference.name}
            else:
                statement, values = _NUMBERED_VERSION, {"name": reference.name, "number": reference.version_number}
            with self._connect() as connection:
                quick = connection.execute(statement, values).first()
            if quick is not None:
                return _record(reference.name, quick)
        with self._read() as session:
            artifact = session.scalars(select(ArtifactRow).where(ArtifactRow.name == reference.name)).first()
            if artifact is None:
                raise NotFoundError(
                    f"no artifact named {reference.name!r}; run 'modelyard list' to see the registered names"
                )
            query = select(VersionRow).where(VersionRow.artifact_id == artifact.id)
            number = reference.version_number
            if number is not None:
                query = query.where(VersionRow.number == number)
            elif reference.ref == "latest":
                query = query.order_by(VersionRow.number.desc()).limit(1)
            else:
                return _record(reference.name, self.lifecycle.resolve_special(session, artifact, reference))
            row = session.scalars(query).first()
            if row is None:
                raise NotFoundError(
                    f"{reference.name} has no version {reference.ref}; its versions are 1..{artifact.version_count}"
                )
            return _record(reference.name, row)

    def list_versions(
        self, filters: ListFilters, *, latest_only: bool, limit: int | None = None, offset: int = 0
    ) -> list[VersionSummary]:
        """Versions matching the filters, by artifact name then newest version first; one per
        artifact when `latest_only` (its newest version, shown when that version matches)."""
        order = (ArtifactRow.name, VersionRow.number.desc())
        with self._read() as session:
            # The page's ids first, from narrow rows (SQLite would otherwise sort every matching
            # row with its manifest and model config); then those rows whole.
            page = self._filtered(filters, latest_only, VersionRow.id).order_by(*order)
            if limit is not None:
                page = page.limit(limit).offset(offset)
            ids = list(session.scalars(page))
            if not ids:
                return []
            query = self._filtered(ListFilters(), False).where(VersionRow.id.in_(ids)).order_by(*order)
            results = session.execute(query).all()
            return self._summaries(session, results)

    def count_versions_matching(self, filters: ListFilters, *, latest_only: bool) -> int:
        with self._read() as session:
            subquery = self._filtered(filters, latest_only, VersionRow.id).subquery()
            return int(session.scalar(select(func.count()).select_from(subquery)) or 0)

    def _filtered(self, filters: ListFilters, latest_only: bool, *columns: Any) -> Any:
        """The versions matching `filters`, as `columns` (default: whole rows for summaries)."""
        selected = columns or (VersionRow, ArtifactRow.name, ArtifactRow.version_count, ModelEntryRow)
        query = (
            select(*selected)
            .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
            .outerjoin(ModelEntryRow, ModelEntryRow.version_id == VersionRow.id)
        )
        if latest_only and filters.stage is not None:
            # Each artifact's newest version in that stage (its latest may be in another).
            other = _OTHER_VERSION
            newest = (
                select(func.max(other.number))
                .where(other.artifact_id == VersionRow.artifact_id, other.stage == filters.stage)
                .scalar_subquery()
            )
            query = query.where(VersionRow.number == newest)
        elif latest_only:
            query = query.where(VersionRow.number == ArtifactRow.version_count)
        for column, value in (
            (VersionRow.component, filters.component),
            (VersionRow.task, filters.task),
            (VersionRow.node_type, filters.node_type),
            (ModelEntryRow.model_type, filters.model_type),
            (ModelEntryRow.architecture, filters.architecture),
            (ModelEntryRow.family, filters.family),
            (ModelEntryRow.quantization, filters.quantization),
            (VersionRow.stage, filters.stage),
        ):
            if value is not None:
                query = query.where(column == value)
        if filters.base_model is not None:
            query = query.where(
                or_(VersionRow.base_model == filters.base_model, ModelEntryRow.base_model == filters.base_model)
            )
        if filters.tag is not None:
            train_tag = (
                select(VersionTagRow.version_id)
                .where(and_(VersionTagRow.version_id == VersionRow.id, VersionTagRow.tag == filters.tag))
                .exists()
            )
            model_tag = (
                select(ModelTagRow.version_id)
                .where(and_(ModelTagRow.version_id == VersionRow.id, ModelTagRow.tag == filters.tag))
                .exists()
            )
            query = query.where(or_(train_tag, model_tag))
        if filters.name is not None:
            query = query.where(ArtifactRow.name == filters.name)
        if filters.search:
            escaped = filters.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(ArtifactRow.name).like(f"%{escaped}%", escape="\\"))
        return query

    def _summaries(self, session: Session, results: Any) -> list[VersionSummary]:
        ids = [row.VersionRow.id for row in results]
        tags = self._tags_for(session, ids)
        statuses = self.lifecycle.statuses(session, ids)
        return [
            VersionSummary(
                artifact_name=name,
                number=version.number,
                version_count=count,
                registered_at=_utc(version.registered_at),
                created_at=_utc(version.created_at),
                component=version.component,
                task=version.task,
                node_type=version.node_type,
                base_model=version.base_model,
                precision=version.precision,
                quantized=version.quantized,
                file_count=version.file_count,
                total_size=version.total_size,
                train_data_tags=tuple(tags.get(version.id, ())),
                model_type=entry.model_type if entry else None,
                architecture=entry.architecture if entry else None,
                family=entry.family if entry else None,
                quantization=entry.quantization if entry else None,
                parameter_count=entry.parameter_count if entry else None,
                pickle_verdict=entry.pickle_verdict if entry else None,
                stage=version.stage,
                semver=version.semver,
                forced=version.forced,
                status=statuses.get(version.id),
            )
            for version, name, count, entry in results
        ]

    def _tags_for(self, session: Session, version_ids: list[int]) -> dict[int, list[str]]:
        tags: dict[int, list[str]] = {}
        for start in range(0, len(version_ids), 500):
            chunk = version_ids[start : start + 500]
            rows = session.execute(
                select(VersionTagRow.version_id, VersionTagRow.tag)
                .where(VersionTagRow.version_id.in_(chunk))
                .order_by(VersionTagRow.tag)
            )
            for version_id, tag in rows:
                tags.setdefault(version_id, []).append(tag)
        return tags

    def file_uses(self, versions: Iterable[VersionRecord] | None = None) -> dict[str, list[FileUse]]:
        """Blob digest -> where it is used; for all versions, or only the given ones."""
        with self._read() as session:
            query = (
                select(FileRow.sha256, ArtifactRow.name, VersionRow.number, FileRow.path)
                .join(VersionRow, VersionRow.id == FileRow.version_id)
                .join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
            )
            if versions is not None:
                wanted = [(v.artifact_name, v.number) for v in versions]
                if not wanted:
                    return {}
                conditions = [and_(ArtifactRow.name == n, VersionRow.number == k) for n, k in wanted]
                query = query.where(or_(*conditions))
            uses: dict[str, list[FileUse]] = {}
            for digest, name, number, path in session.execute(query):
                uses.setdefault(digest, []).append(FileUse(name, number, path))
            return uses

    def referenced_digests(self) -> set[str]:
        """Every blob digest any version references (what gc must keep)."""
        with self._read() as session:
            return set(session.scalars(select(FileRow.sha256).distinct()))

    def versions_of(self, name: str) -> list[VersionRecord]:
        with self._read() as session:
            artifact = session.scalars(select(ArtifactRow).where(ArtifactRow.name == name)).first()
            if artifact is None:
                raise NotFoundError(f"no artifact named {name!r}; run 'modelyard list' to see the registered names")
            rows = session.scalars(
                select(VersionRow).where(VersionRow.artifact_id == artifact.id).order_by(VersionRow.number)
            ).all()
            return [_record(name, row) for row in rows]

    def count_versions(self) -> int:
        with self._read() as session:
            return int(session.scalar(select(func.count()).select_from(VersionRow)) or 0)

    # -- audit ----------------------------------------------------------------------------

    def record_event(
        self,
        actor: str,
        action: str,
        artifact_name: str | None = None,
        version_number: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        with self._write() as session:
            session.add(_event(datetime.now(UTC), actor, action, artifact_name, version_number, details or {}))

    def events(
        self,
        limit: int = 100,
        *,
        artifact_name: str | None = None,
        version_number: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The newest audit events first (skipping the newest `offset`), optionally of one artifact or version."""
        with self._read() as session:
            query = select(EventRow)
            if artifact_name is not None:
                query = query.where(EventRow.artifact_name == artifact_name)
            if version_number is not None:
                query = query.where(EventRow.version_number == version_number)
            rows = session.scalars(query.order_by(EventRow.id.desc()).offset(offset).limit(limit)).all()
            return [
                {
                    "at": _utc(row.at).isoformat(),
                    "actor": row.actor,
                    "action": row.action,
                    "artifact_name": row.artifact_name,
                    "version_number": row.version_number,
                    "details": json.loads(row.details_json),
                }
                for row in rows
            ]


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """Translate driver errors into modelyard errors, once, for every catalog operation."""
    try:
        yield
    except IntegrityError:
        raise  # handled by add_version's retry
    except DBAPIError as exc:
        raise translate_database_error(exc, url) from None


def translate_database_error(exc: DBAPIError, url: str) -> ModelyardError:
    message = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()[0]
    lowered = message.lower()
    if "database is locked" in lowered or "lock timeout" in lowered:
        return BusyError(f"the catalog at {safe_url(url)} stayed locked by another process; try again ({message})")
    if "disk is full" in lowered or "no space left" in lowered or "could not extend file" in lowered:
        return StorageError(f"the catalog's disk is full: {message}", path=safe_url(url))
    if isinstance(exc, OperationalError):
        return CatalogError(f"cannot use the catalog at {safe_url(url)}: {message}")
    return CatalogError(f"the catalog at {safe_url(url)} refused an operation: {message}")


def _event(
    at: datetime,
    actor: str,
    action: str,
    name: str | None,
    number: int | None,
    details: dict[str, Any],
) -> EventRow:
    return EventRow(
        at=at,
        actor=actor,
        action=action,
        artifact_name=name,
        version_number=number,
        details_json=json.dumps(details, sort_keys=True),
    )


def _clip(value: str | None, length: int) -> str | None:
    """Index columns are bounded; the full value stays in config_json."""
    return value[:length] if value is not None else None


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything modelyard stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_VERSION_COLUMNS = (
    VersionRow.number,
    VersionRow.manifest_json,
    VersionRow.content_key,
    VersionRow.registered_at,
    VersionRow.registered_by,
    VersionRow.source_path,
    VersionRow.stage,
    VersionRow.label,
    VersionRow.semver,
    VersionRow.forced,
)
_VERSION_OF_NAME = select(*_VERSION_COLUMNS).join(ArtifactRow, ArtifactRow.id == VersionRow.artifact_id)
_NUMBERED_VERSION = _VERSION_OF_NAME.where(
    ArtifactRow.name == bindparam("name"), VersionRow.number == bindparam("number")
)
_LATEST_VERSION = _VERSION_OF_NAME.where(
    ArtifactRow.name == bindparam("name"), VersionRow.number == ArtifactRow.version_count
)


def _record(name: str, row: Any) -> VersionRecord:
    """A VersionRecord from a VersionRow, or a Core row with its columns (`_VERSION_COLUMNS`)."""
    return VersionRecord(
        artifact_name=name,
        number=row.number,
        manifest_json=row.manifest_json,
        content_key=row.content_key,
        registered_at=_utc(row.registered_at),
        registered_by=row.registered_by,
        source_path=row.source_path,
        stage=row.stage,
        label=row.label,
        semver=row.semver,
        forced=row.forced,
    )
