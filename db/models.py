"""Study → series → instance, jobs with a state machine, results with measurements and outputs."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SeriesStatus(enum.StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    UNROUTED = "unrouted"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: The model ran and its outputs are written, but its quality gate refused to vouch for
    #: them: a person must look (Result.review says why).
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"
    #: Nothing wrong, nothing to do: the series is not for its model (one slice for a model
    #: that needs a volume, not an image). Job.error says why.
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"
    CANCELLED = "cancelled"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    #: Not sent by the destination's delivery policy (a flagged result not yet accepted, a
    #: not-for-clinical-use result, a rejected one); ``error`` says why. A reviewer's
    #: acceptance may make it pending again.
    WITHHELD = "withheld"


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    #: Patient ID (0010,0020) as sent, for the study browser's search (shown to logged-in
    #: operators only, never in a URL or a log line).
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    #: The GA by dates a reviewer entered (worker.ops.dating): a last menstrual period (DICOM
    #: DA, YYYYMMDD) or the GA in days on the study date, never both; who and when.
    ga_lmp: Mapped[str | None] = mapped_column(String(8))
    ga_days: Mapped[int | None] = mapped_column(Integer)
    ga_by: Mapped[str | None] = mapped_column(String(128))
    ga_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")
    image_type: Mapped[str] = mapped_column(String(128), default="")
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="", index=True)
    calling_host: Mapped[str | None] = mapped_column(String(64))
    #: Images in Acquisition (0020,1002) when the sender gives it: complete at that count.
    expected_instances: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[SeriesStatus] = mapped_column(
        _enum(SeriesStatus, "series_status"), default=SeriesStatus.RECEIVING, index=True
    )
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the gateway (re)started while the series was receiving: its sender may have been
    #: cut off mid-series, so its quiet period counts from here, not from the last arrival.
    interrupted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")
    jobs: Mapped[list[Job]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: When retention removed the file (the record stays).
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(16))
    state: Mapped[JobState] = mapped_column(
        _enum(JobState, "job_state"), default=JobState.QUEUED, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text)
    #: What caused the latest failure: ``input`` (the series as received: it fails again),
    #: ``permanent`` (no such model, ...), ``retryable`` (attempts used up); None: none, or a
    #: row older than this column.
    error_kind: Mapped[str | None] = mapped_column(String(16))
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    # The Celery node running it (e.g. medseg@host): its restart gives the job back at once.
    worker: Mapped[str | None] = mapped_column(String(255), index=True)
    #: sha256 of the sorted SOP Instance UIDs + model name + version: same input, same job.
    input_key: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    #: When the job last entered the queue: made (on completion or by a re-run), retried by
    #: an operator, or given back after an attempt. Queue-wait metrics start here.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When its series gained an instance after the job was made: its input was partial. A
    #: queued job is cancelled; the results of a running or finished one are superseded (not
    #: delivered) by the job made when the series is complete again (``db.supersede``).
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    series: Mapped[Series] = relationship(back_populates="jobs")
    results: Mapped[list[Result]] = relationship(back_populates="job")


class Result(Base):
    __tablename__ = "result"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    inference_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: Why the model's quality gate flagged the result, one reason a line; None: accepted.
    review: Mapped[str | None] = mapped_column(Text)
    #: The model card's validation status for the weights that made this result
    #: (worker.core.card.ValidationStatus); None: a result older than model cards.
    validation: Mapped[str | None] = mapped_column(String(32))
    #: A reviewer's decision on a flagged result: "accepted" or "rejected"; None: undecided.
    review_decision: Mapped[str | None] = mapped_column(String(16))
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="results")
    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="result", cascade="all, delete-orphan"
    )
    outputs: Mapped[list[OutputFile]] = relationship(
        back_populates="result", cascade="all, delete-orphan"
    )
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="result", cascade="all, delete-orphan"
    )


class Measurement(Base):
    __tablename__ = "measurement"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))

    result: Mapped[Result] = relationship(back_populates="measurements")


class OutputFile(Base):
    __tablename__ = "output_file"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))

    result: Mapped[Result] = relationship(back_populates="outputs")


class Delivery(Base):
    """The outputs of one result sent to one destination: attempts, outcome, timings."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState, "delivery_state"), default=DeliveryState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    result: Mapped[Result] = relationship(back_populates="deliveries")


class JobAttempt(Base):
    """One run of a job: opened when it starts running, closed with its outcome. Its error
    stays here when the job is retried (``Job.error`` is the latest one's)."""

    __tablename__ = "job_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    #: 1, 2, ... over the job's whole life (``Job.attempts`` restarts at a retry).
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(255))
    #: The job state it ended in; ``requeued``: it failed and will be tried again; ``lost``:
    #: its worker died and the job was run again; None: still running.
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    #: Seconds per stage (load, infer, export, ...) as JSON, when the run got that far.
    timings: Mapped[str | None] = mapped_column(Text)


class JobLogLine(Base):
    """A line logged while a job ran (stage timings, warnings): bounded per attempt, no PHI."""

    __tablename__ = "job_log_line"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)  # JobAttempt.number
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(String(500))


class AuditEvent(Base):
    """What an operator did (retry, cancel, rerun, review, re-deliver), who, when, from where
    and with what outcome. Targets are plain IDs, not foreign keys: the trail outlives them."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    #: The dashboard login, or for the CLI ``--user`` / MEDSEG_OPERATOR / the OS user.
    actor: Mapped[str] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(16))  # dashboard or cli
    action: Mapped[str] = mapped_column(String(32), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    delivery_id: Mapped[int | None] = mapped_column(Integer)
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: ``done``, or ``refused`` (the action did not apply; ``detail`` says why).
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class Account(Base):
    """A named person who may use the dashboard (and whom the CLI's ``--user`` may name): a
    role (viewer, operator, reviewer, admin: worker.ops.people) and either a local password
    (scrypt hash) or a single sign-on identity (``origin`` oidc, no password). Never deleted,
    only disabled: the audit trail names them."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    #: ``local`` (password here) or ``oidc`` (signed in through the identity provider).
    origin: Mapped[str] = mapped_column(String(16), default="local")
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CorrectionState(enum.StrEnum):
    #: Recorded (a reviewer's ellipse, a corrected SEG received); the worker applies it.
    RECEIVED = "received"
    #: Applied: ``result_id`` is the corrected result, the one delivered now.
    APPLIED = "applied"
    #: A received SEG no result could be found for (``reason`` says why); kept, never lost.
    UNMATCHED = "unmatched"
    #: It could not be applied (``reason``): bad values, unreadable files.
    FAILED = "failed"


class Correction(Base):
    """A reviewer's correction of a result: a fetal head ellipse moved on the study page or by
    ``medseg review JOB correct``, or a corrected DICOM SEG sent back over C-STORE. The worker
    applies it (worker.corrections): a new result on the same job, with the recomputed
    measurements and a new SEG/SR that reference the ones they replace."""

    __tablename__ = "correction"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``ellipse`` (the fetal head's ellipse) or ``seg`` (a corrected segmentation).
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[CorrectionState] = mapped_column(
        _enum(CorrectionState, "correction_state"), default=CorrectionState.RECEIVED, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Who corrected (a reviewer's name; for a SEG its Content Creator's Name or the sender's
    #: AE title) and from where: dashboard, cli or dicom.
    by: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    #: The job whose result is corrected (given for an ellipse, found for a SEG).
    job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: The result it replaces and the corrected result (plain IDs, as in the audit trail).
    replaces_result_id: Mapped[int | None] = mapped_column(Integer)
    result_id: Mapped[int | None] = mapped_column(Integer)
    #: The ellipse as JSON ({"cx", "cy", "a", "b", "angle"}, the model's units).
    ellipse: Mapped[str | None] = mapped_column(Text)
    #: A received SEG: its series row, file and SOP Instance UID.
    series_id: Mapped[int | None] = mapped_column(Integer, index=True)
    path: Mapped[str | None] = mapped_column(Text)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    #: Why it is unmatched or failed.
    reason: Mapped[str | None] = mapped_column(Text)
    #: What changed, JSON: {key: [old, new]}.
    changes: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The outbox's columns (dicom_gateway.outbox): published once, when due.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Tables kept in modules of their own, registered on Base.metadata with the rest.
from db import shadow_models as _shadow_models  # noqa: E402, F401
