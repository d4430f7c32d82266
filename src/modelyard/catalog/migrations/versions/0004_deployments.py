"""Fleet distribution: what each node holds of each artifact, and in which state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node", sa.String(63), nullable=False),
        sa.Column("target_name", sa.String(200), nullable=False),
        sa.Column("version_dir", sa.String(100), nullable=False),
        sa.Column("artifact_name", sa.String(200), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("serving_path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("checks_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("files_json", sa.Text(), nullable=False),
        sa.Column("load_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("node", "target_name", "version_dir", name="uq_deployments_node_target_version"),
    )
    op.create_index("ix_deployments_artifact", "deployments", ["artifact_name", "version_number"])


def downgrade() -> None:
    op.drop_index("ix_deployments_artifact", table_name="deployments")
    op.drop_table("deployments")
