"""model_install and shadow_result: model versions installed in shadow or promoted live, and
what a shadow version made of each series its live version ran on

Revision ID: 0013_shadow
Revises: 0012
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_shadow"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_install",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("weights_path", sa.Text(), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("installed_by", sa.String(128), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.UniqueConstraint("model_name", "version", name="uq_model_install_version"),
    )
    op.create_index("ix_model_install_model_name", "model_install", ["model_name"])
    op.create_index("ix_model_install_role", "model_install", ["role"])
    op.create_table(
        "shadow_result",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "result_id",
            sa.Integer(),
            sa.ForeignKey("result.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "install_id",
            sa.Integer(),
            sa.ForeignKey("model_install.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("review", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("inference_seconds", sa.Float(), nullable=False),
        sa.Column("measurements", sa.Text(), nullable=False),
        sa.Column("seg_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shadow_result_result_id", "shadow_result", ["result_id"])
    op.create_index("ix_shadow_result_install_id", "shadow_result", ["install_id"])
    op.create_index("ix_shadow_result_model_name", "shadow_result", ["model_name"])


def downgrade() -> None:
    op.drop_table("shadow_result")
    op.drop_table("model_install")
