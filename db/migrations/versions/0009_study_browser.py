"""study browser: the study's patient ID; indexes for searching and sorting studies

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column): each gets the index ``ix_<table>_<column>`` SQLAlchemy names for index=True.
INDEXED = [
    ("study", "patient_id"),
    ("study", "accession_number"),
    ("study", "study_date"),
    ("study", "created_at"),
    ("series", "modality"),
    ("series", "calling_ae"),
    ("job", "model_name"),
]


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_id", sa.String(length=64), nullable=True))
    for table, column in INDEXED:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXED):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("patient_id")
