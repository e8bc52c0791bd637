"""job key, series sender, expected count, purge

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:59:17.914405
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_key", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_input_key"), ["input_key"], unique=False)

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calling_host", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("expected_instances", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("expected_instances")
        batch_op.drop_column("calling_host")

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_input_key"))
        batch_op.drop_column("input_key")

    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
