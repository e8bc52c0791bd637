"""The reviewed results of a model and what the reviewer said is right about each.

A reviewer's decision is on ``Result.review_decision``: ``accepted`` (the result is right as
it is: its own measurements and SEG are the reference) or ``corrected`` (the reviewer changed
it: the corrected measurements and mask are the reference). Corrections are stored by their
own module; it plugs in here through ``set_correction_reader`` and this module needs nothing
else from it. Without a reader a corrected result has no reference (it is left out, counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Account, Job, Result, Series, Study

ACCEPTED = "accepted"
CORRECTED = "corrected"
#: Decisions whose result can be learnt from (a rejected result has no right answer).
USABLE = (ACCEPTED, CORRECTED)


@dataclass(frozen=True)
class Reference:
    """What the reviewer holds to be right: measurements (key -> value), the SEG whose
    masks are right (None: no mask, e.g. a correction of measurements only), and for a fetal
    head the reviewer's own ellipse when they drew one: (cx, cy, a, b, angle) in the model's
    units (worker.corrections.ellipse), which a layout uses rather than refitting the mask."""

    decision: str
    measurements: dict[str, float]
    seg_path: Path | None
    ellipse: tuple[float, float, float, float, float] | None = None


#: (session, result) -> the corrected reference, or None when there is no correction.
CorrectionReader = Callable[[Session, Result], Reference | None]
_correction_reader: list[CorrectionReader] = []


def set_correction_reader(reader: CorrectionReader | None) -> None:
    """Install (or with None remove) the function that reads a result's correction."""
    _correction_reader.clear()
    if reader is not None:
        _correction_reader.append(reader)


def _seg_of(result: Result) -> Path | None:
    return next((Path(o.path) for o in result.outputs if o.kind == "seg"), None)


def reference_for(session: Session, result: Result) -> Reference | None:
    """The reviewer's reference for ``result``, or None (undecided, rejected, or a
    correction no reader can read)."""
    if result.review_decision == ACCEPTED:
        return Reference(ACCEPTED, {m.key: m.value for m in result.measurements}, _seg_of(result))
    if result.review_decision == CORRECTED and _correction_reader:
        return _correction_reader[0](session, result)
    return None


@dataclass(frozen=True)
class Case:
    """One reviewed result: where its input is, who decided (by role), and the reference."""

    result_id: int
    model_name: str
    model_version: str
    weights_sha256: str | None
    reviewer_role: str
    patient_id: str | None
    study_uid: str
    series_uid: str
    paths: list[Path]  # the source instances still on disk
    purged: int  # source instances retention removed
    reference: Reference | None
    decision: str


def _role_of(session: Session, name: str | None) -> str:
    if not name:
        return "unknown"
    role = session.scalar(select(Account.role).where(Account.name == name))
    return role or "no account"


def reviewed_cases(
    session_factory: sessionmaker[Session],
    model: str,
    decisions: Sequence[str] = USABLE,
    since: datetime | None = None,
) -> list[Case]:
    """The results of ``model`` a reviewer decided one of ``decisions`` on (reviewed at or
    after ``since``), oldest first, with their references."""
    query = (
        select(Result, Series, Study)
        .join(Job, Job.id == Result.job_id)
        .join(Series, Series.id == Job.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Result.model_name == model, Result.review_decision.in_(list(decisions)))
        .options(
            selectinload(Result.measurements),
            selectinload(Result.outputs),
            selectinload(Series.instances),
        )
        .order_by(Result.reviewed_at, Result.id)
    )
    if since is not None:
        query = query.where(Result.reviewed_at >= since)
    cases: list[Case] = []
    with session_factory() as session:
        for result, series, study in session.execute(query).all():
            kept = [Path(i.path) for i in series.instances if i.purged_at is None]
            cases.append(
                Case(
                    result_id=result.id,
                    model_name=result.model_name,
                    model_version=result.model_version,
                    weights_sha256=result.weights_sha256,
                    reviewer_role=_role_of(session, result.reviewed_by),
                    patient_id=study.patient_id,
                    study_uid=study.study_instance_uid,
                    series_uid=series.series_instance_uid,
                    paths=sorted(p for p in kept if p.exists()),
                    purged=len(series.instances) - len(kept),
                    reference=reference_for(session, result),
                    decision=str(result.review_decision),
                )
            )
    return cases
