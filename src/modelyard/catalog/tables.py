"""The catalog's tables (SQLAlchemy 2 ORM). Rows never leave `modelyard.catalog`.

Surrogate integer keys throughout; names and version numbers are unique constraints, so the
database itself refuses two versions with the same number under one name.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ArtifactRow(Base):
    """An artifact name; its versions hang off it."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The highest version number handed out; bumped under the row's lock.
    version_count: Mapped[int] = mapped_column(Integer, default=0)


class VersionRow(Base):
    """One immutable version. `manifest_json` is the manifest as validated and exported.

    Lifecycle (seed 003): `stage` raw, validated or production; `derived_from_id` the version it
    was promoted from; `semver` a production version's semantic version; `label` the session id
    (raw), validated id or production id its layout directory is named by; `checkpoint` the raw
    checkpoint a validated version was built from; `forced` a promotion that skipped a gate."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("artifact_id", "number", name="uq_versions_artifact_number"),
        UniqueConstraint("artifact_id", "semver", name="uq_versions_artifact_semver"),
        Index("ix_versions_artifact_content", "artifact_id", "content_key"),
        Index("ix_versions_task", "task"),
        Index("ix_versions_base_model", "base_model"),
        Index("ix_versions_stage", "artifact_id", "stage"),
        Index("ix_versions_label", "label"),
        Index("ix_versions_derived_from", "derived_from_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="RESTRICT"))
    number: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    registered_by: Mapped[str] = mapped_column(String(200))
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    content_key: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest_json: Mapped[str] = mapped_column(Text)
    # Copies of manifest fields that listings filter on.
    component: Mapped[str | None] = mapped_column(String(100))
    task: Mapped[str | None] = mapped_column(String(100))
    node_type: Mapped[str | None] = mapped_column(String(50))
    base_model: Mapped[str | None] = mapped_column(String(300))
    precision: Mapped[str | None] = mapped_column(String(20))
    quantized: Mapped[bool] = mapped_column(Boolean)
    file_count: Mapped[int] = mapped_column(Integer)
    total_size: Mapped[int] = mapped_column(BigInteger)
    stage: Mapped[str] = mapped_column(String(20), default="raw", server_default="raw")
    semver: Mapped[str | None] = mapped_column(String(100))
    derived_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("versions.id", ondelete="RESTRICT", name="fk_versions_derived_from")
    )
    label: Mapped[str | None] = mapped_column(String(300))
    checkpoint: Mapped[str | None] = mapped_column(String(300))
    forced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class VersionTagRow(Base):
    """A version's train_data_tags, one row each, for `list --tag`."""

    __tablename__ = "version_tags"
    __table_args__ = (Index("ix_version_tags_tag", "tag"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)


class FileRow(Base):
    """A file of a version. `sha256` names its blob; gc keeps every blob named here."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_sha256", "sha256"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class EventRow(Base):
    """Append-only audit log: who did what to which version, when."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_artifact", "artifact_name", "version_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    artifact_name: Mapped[str | None] = mapped_column(String(200))
    version_number: Mapped[int | None] = mapped_column(Integer)
    details_json: Mapped[str] = mapped_column(Text, default="{}")


class ModelEntryRow(Base):
    """A version's typed configuration (seed 002), with copies of the fields `list` filters on.

    Unlike the manifest it may be refreshed: a newer inspector (`reinspect`) or marketplace
    metadata (`import`) rewrites it, each time with an audit event; the files never change."""

    __tablename__ = "model_entries"
    __table_args__ = (
        Index("ix_model_entries_model_type", "model_type"),
        Index("ix_model_entries_architecture", "architecture"),
        Index("ix_model_entries_family", "family"),
        Index("ix_model_entries_base_model", "base_model"),
        Index("ix_model_entries_quantization", "quantization"),
    )

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    model_type: Mapped[str] = mapped_column(String(20))
    task: Mapped[str | None] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(20))
    architecture: Mapped[str | None] = mapped_column(String(200))
    family: Mapped[str | None] = mapped_column(String(100))
    base_model: Mapped[str | None] = mapped_column(String(300))
    quantization: Mapped[str | None] = mapped_column(String(50))
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    dtype: Mapped[str | None] = mapped_column(String(30))
    license: Mapped[str | None] = mapped_column(String(100))
    author: Mapped[str | None] = mapped_column(String(200))
    pickle_verdict: Mapped[str] = mapped_column(String(20))
    inspector_version: Mapped[int] = mapped_column(Integer)
    inspected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    config_json: Mapped[str] = mapped_column(Text)


class ModelTagRow(Base):
    """Tags the model itself carries (model card, ModelSpec, marketplace), for `list --tag`."""

    __tablename__ = "model_tags"
    __table_args__ = (Index("ix_model_tags_tag", "tag"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)


class AliasRow(Base):
    """A free alias (`NAME@champion`) pointing at a version; moved only by approvers, audited."""

    __tablename__ = "aliases"

    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="RESTRICT"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(63), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="RESTRICT"))
    set_by: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApprovalRow(Base):
    """An approval of a validated version for production (seed 003: manual approval)."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_version", "version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="RESTRICT"))
    approved_by: Mapped[str] = mapped_column(String(200))
    os_user: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)


class ValidationReportRow(Base):
    """One run of a policy's gates over a version (and checkpoint)."""

    __tablename__ = "validation_reports"
    __table_args__ = (Index("ix_validation_reports_version", "version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    checkpoint: Mapped[str | None] = mapped_column(String(300))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    report_json: Mapped[str] = mapped_column(Text)


class VersionStatusRow(Base):
    """Append-only status changes (demoted, deprecated, restored): never an edit of the version."""

    __tablename__ = "version_status"
    __table_args__ = (Index("ix_version_status_version", "version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class DeploymentRow(Base):
    """One version of one artifact on one node at one serving path, and where it stands
    (pending, transferring, verifying, verified, activated, failed, rolled_back)."""

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("node", "target_name", "version_dir", name="uq_deployments_node_target_version"),
        Index("ix_deployments_artifact", "artifact_name", "version_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(63))
    target_name: Mapped[str] = mapped_column(String(200))
    version_dir: Mapped[str] = mapped_column(String(100))
    artifact_name: Mapped[str] = mapped_column(String(200))
    version_number: Mapped[int] = mapped_column(Integer)
    serving_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    checks_json: Mapped[str] = mapped_column(Text, default="{}")
    files_json: Mapped[str] = mapped_column(Text)
    load_json: Mapped[str] = mapped_column(Text, default="{}")
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))


class ApiKeyRow(Base):
    """A server API key: its owner's name, role and the SHA-256 of the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class JobDefinitionRow(Base):
    """A saved training job definition (the learning form plus what to run), immutable once saved.

    `artifact_name` and `training_config_hash` are what its preview said when it was saved."""

    __tablename__ = "job_definitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(100), unique=True)
    artifact_name: Mapped[str] = mapped_column(String(200))
    training_config_hash: Mapped[str] = mapped_column(String(64))
    definition_json: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    """A training job submitted to the queue, and where it stands (queued, running, succeeded,
    failed, cancelled, timed_out). A worker claims a queued job with a conditional update, keeps
    `heartbeat_at` fresh and `lease_expires_at` ahead of it; a running job whose lease expired
    lost its worker and is failed, never run again."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status", "status", "id"),
        Index("ix_jobs_submitted_by", "submitted_by", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition_json: Mapped[str] = mapped_column(Text)
    definition_id: Mapped[int | None] = mapped_column(
        ForeignKey("job_definitions.id", ondelete="RESTRICT", name="fk_jobs_definition")
    )
    artifact_name: Mapped[str] = mapped_column(String(200))
    training_config_hash: Mapped[str] = mapped_column(String(64))
    submitted_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    worker: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    log_tail: Mapped[str] = mapped_column(Text, default="")
    run_dir: Mapped[str | None] = mapped_column(Text)
    registered_json: Mapped[str] = mapped_column(Text, default="[]")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cancel_requested_by: Mapped[str | None] = mapped_column(String(200))
