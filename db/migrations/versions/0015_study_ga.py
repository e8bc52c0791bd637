"""study GA by dates: a reviewer's entered last menstrual period or GA on the study date,
who entered it and when (worker.ops.dating)

Revision ID: 0015_study_ga
Revises: 0013_corrections
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# A name, not the next number: other revisions made in parallel can follow it or precede it.
revision: str = "0015_study_ga"
down_revision: str | None = "0013_corrections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ga_lmp", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("ga_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ga_by", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("ga_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        for column in ("ga_at", "ga_by", "ga_days", "ga_lmp"):
            batch_op.drop_column(column)
