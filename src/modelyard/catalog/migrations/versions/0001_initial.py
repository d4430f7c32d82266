"""Initial catalog: artifacts, versions, their files and tags, and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("artifact_id", sa.Integer(), sa.ForeignKey("artifacts.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("component", sa.String(100), nullable=True),
        sa.Column("task", sa.String(100), nullable=True),
        sa.Column("node_type", sa.String(50), nullable=True),
        sa.Column("base_model", sa.String(300), nullable=True),
        sa.Column("precision", sa.String(20), nullable=True),
        sa.Column("quantized", sa.Boolean(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("total_size", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("artifact_id", "number", name="uq_versions_artifact_number"),
    )
    op.create_index("ix_versions_artifact_content", "versions", ["artifact_id", "content_key"])
    op.create_index("ix_versions_task", "versions", ["task"])
    op.create_index("ix_versions_base_model", "versions", ["base_model"])
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_version_tags_tag", "version_tags", ["tag"])
    op.create_table(
        "files",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.Text(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("artifact_name", sa.String(200), nullable=True),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_artifact", "events", ["artifact_name", "version_number"])


def downgrade() -> None:
    op.drop_index("ix_events_artifact", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_files_sha256", table_name="files")
    op.drop_table("files")
    op.drop_index("ix_version_tags_tag", table_name="version_tags")
    op.drop_table("version_tags")
    op.drop_index("ix_versions_base_model", table_name="versions")
    op.drop_index("ix_versions_task", table_name="versions")
    op.drop_index("ix_versions_artifact_content", table_name="versions")
    op.drop_table("versions")
    op.drop_table("artifacts")
