"""Lifecycle (seed 003): stages, lineage and semantic versions on versions; aliases, approvals,
validation reports and status events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("stage", sa.String(20), nullable=False, server_default="raw"))
        batch.add_column(sa.Column("semver", sa.String(100), nullable=True))
        batch.add_column(sa.Column("derived_from_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("label", sa.String(300), nullable=True))
        batch.add_column(sa.Column("checkpoint", sa.String(300), nullable=True))
        batch.add_column(sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_foreign_key(
            "fk_versions_derived_from", "versions", ["derived_from_id"], ["id"], ondelete="RESTRICT"
        )
        batch.create_unique_constraint("uq_versions_artifact_semver", ["artifact_id", "semver"])
        batch.create_index("ix_versions_stage", ["artifact_id", "stage"])
        batch.create_index("ix_versions_label", ["label"])
        batch.create_index("ix_versions_derived_from", ["derived_from_id"])
    op.create_table(
        "aliases",
        sa.Column("artifact_id", sa.Integer(), sa.ForeignKey("artifacts.id", ondelete="RESTRICT"), primary_key=True),
        sa.Column("alias", sa.String(63), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("os_user", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_approvals_version", "approvals", ["version_id"])
    op.create_table(
        "validation_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("checkpoint", sa.String(300), nullable=True),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_validation_reports_version", "validation_reports", ["version_id"])
    op.create_table(
        "version_status",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_version_status_version", "version_status", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_version_status_version", table_name="version_status")
    op.drop_table("version_status")
    op.drop_index("ix_validation_reports_version", table_name="validation_reports")
    op.drop_table("validation_reports")
    op.drop_index("ix_approvals_version", table_name="approvals")
    op.drop_table("approvals")
    op.drop_table("aliases")
    with op.batch_alter_table("versions") as batch:
        batch.drop_index("ix_versions_derived_from")
        batch.drop_index("ix_versions_label")
        batch.drop_index("ix_versions_stage")
        batch.drop_constraint("uq_versions_artifact_semver", type_="unique")
        batch.drop_constraint("fk_versions_derived_from", type_="foreignkey")
        for column in ("forced", "checkpoint", "label", "derived_from_id", "semver", "stage"):
            batch.drop_column(column)
