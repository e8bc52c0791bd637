"""result validation status and a reviewer's decision on a flagged result

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validation", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("review_decision", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("review_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("result", schema=None) as batch_op:
        for column in ("review_note", "reviewed_at", "reviewed_by", "review_decision"):
            batch_op.drop_column(column)
        batch_op.drop_column("validation")
