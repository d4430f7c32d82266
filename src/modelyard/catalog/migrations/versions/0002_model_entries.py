"""Model entries: each version's typed configuration from inspection (seed 002), and its tags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_entries",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_type", sa.String(20), nullable=False),
        sa.Column("task", sa.String(100), nullable=True),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("architecture", sa.String(200), nullable=True),
        sa.Column("family", sa.String(100), nullable=True),
        sa.Column("base_model", sa.String(300), nullable=True),
        sa.Column("quantization", sa.String(50), nullable=True),
        sa.Column("parameter_count", sa.BigInteger(), nullable=True),
        sa.Column("dtype", sa.String(30), nullable=True),
        sa.Column("license", sa.String(100), nullable=True),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("pickle_verdict", sa.String(20), nullable=False),
        sa.Column("inspector_version", sa.Integer(), nullable=False),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
    )
    for column in ("model_type", "architecture", "family", "base_model", "quantization"):
        op.create_index(f"ix_model_entries_{column}", "model_entries", [column])
    op.create_table(
        "model_tags",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_model_tags_tag", "model_tags", ["tag"])


def downgrade() -> None:
    op.drop_index("ix_model_tags_tag", table_name="model_tags")
    op.drop_table("model_tags")
    for column in ("model_type", "architecture", "family", "base_model", "quantization"):
        op.drop_index(f"ix_model_entries_{column}", table_name="model_entries")
    op.drop_table("model_entries")
