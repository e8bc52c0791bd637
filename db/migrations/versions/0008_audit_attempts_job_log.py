"""audit trail of operators' actions; job attempts with their own errors; per-job log lines

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 06:10:00

Jobs that ran before this revision get one attempt row from what the job row kept (its
last start, end, worker and error), so their history does not start empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("timings", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_attempt_job_id"), ["job_id"], unique=False)
    op.create_table(
        "job_log_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_log_line", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_log_line_job_id"), ["job_id"], unique=False)
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_study_id"), ["study_id"], unique=False)
    op.execute(
        "INSERT INTO job_attempt (job_id, number, started_at, finished_at, worker, outcome, error)"
        " SELECT id, 1, started_at, finished_at, worker,"
        " CASE state WHEN 'running' THEN NULL WHEN 'queued' THEN 'requeued' ELSE state END,"
        " error FROM job WHERE started_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_study_id"))
        batch_op.drop_index(batch_op.f("ix_audit_event_job_id"))
        batch_op.drop_index(batch_op.f("ix_audit_event_action"))
        batch_op.drop_index(batch_op.f("ix_audit_event_actor"))
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))
    op.drop_table("audit_event")
    with op.batch_alter_table("job_log_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_log_line_job_id"))
    op.drop_table("job_log_line")
    with op.batch_alter_table("job_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_attempt_job_id"))
    op.drop_table("job_attempt")
