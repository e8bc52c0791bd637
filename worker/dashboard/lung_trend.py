"""A patient's lung volumes over time: every CT lung result of every study with the same
Patient ID, oldest first, as a table for the study page and a chart (PNG for the page, PDF
for a report). There is no normative curve: the chart shows the patient against themself.

A result the quality gate flagged (needs review) is kept and marked so; a superseded job
(rerun) is left out, its rerun stands for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import Job, Result, Series, Study
from worker.dashboard.plotting import new_figure, to_bytes

KEYS = {"right": "right_lung_volume_ml", "left": "left_lung_volume_ml", "total": "lung_volume_ml"}


@dataclass(frozen=True)
class LungRow:
    study_id: int
    study_date: str | None  # DICOM DA as received
    job_id: int
    model: str
    right_ml: float | None
    left_ml: float | None
    total_ml: float
    flagged: bool

    @property
    def date_text(self) -> str:
        da = self.study_date or ""
        return f"{da[:4]}-{da[4:6]}-{da[6:]}" if len(da) == 8 and da.isdigit() else da or "-"


def patient_rows(session: Session, study_id: int) -> list[LungRow]:
    """The lung volumes of the study's patient, all studies, oldest study date first (no
    date last); empty when the study has no Patient ID or the patient no lung volume."""
    study = session.get(Study, study_id)
    if study is None or not study.patient_id:
        return []
    jobs = session.scalars(
        select(Job)
        .join(Series)
        .join(Study)
        .where(Study.patient_id == study.patient_id, Job.superseded_at.is_(None))
        .options(
            selectinload(Job.series).selectinload(Series.study),
            selectinload(Job.results).selectinload(Result.measurements),
        )
    ).all()
    rows = []
    for job in jobs:
        if not job.results:
            continue
        result = job.results[-1]
        values = {m.key: m.value for m in result.measurements}
        right, left = values.get(KEYS["right"]), values.get(KEYS["left"])
        total = values.get(KEYS["total"])
        if total is None and right is not None and left is not None:
            total = right + left
        if total is None:
            continue
        rows.append(
            LungRow(
                job.series.study.id,
                job.series.study.study_date,
                job.id,
                f"{job.model_name} {job.model_version}",
                right,
                left,
                total,
                bool(result.review),
            )
        )
    return sorted(rows, key=lambda r: (r.study_date is None, r.study_date or "", r.job_id))


def lung_chart(rows: list[LungRow], fmt: str = "png") -> bytes:
    """Right, left and total lung volume per study, in study order (dates as labels)."""
    figure = new_figure(6.4, 4.0)
    axes = figure.add_subplot()
    x = list(range(len(rows)))
    for name, values, style in (
        ("total", [r.total_ml for r in rows], "o-"),
        ("right", [r.right_ml for r in rows], "s--"),
        ("left", [r.left_ml for r in rows], "^--"),
    ):
        shown = [(i, v) for i, v in zip(x, values, strict=True) if v is not None]
        if shown:
            axes.plot([i for i, _ in shown], [v for _, v in shown], style, label=f"{name} lung")
    flagged = [(i, r.total_ml) for i, r in zip(x, rows, strict=True) if r.flagged]
    if flagged:
        axes.plot(
            [i for i, _ in flagged],
            [v for _, v in flagged],
            "x",
            color="#b36b00",
            markersize=12,
            label="needs review",
        )
    axes.set_xticks(x, [f"{r.date_text}\nstudy {r.study_id}" for r in rows], fontsize=7)
    axes.set_xlim(-0.5, len(rows) - 0.5)
    axes.set_ylabel("volume (mL)")
    axes.set_title("Lung volumes of this patient, all studies (CT)", fontsize=9)
    axes.grid(True, color="0.9")
    axes.legend(loc="best", fontsize=8)
    return to_bytes(figure, fmt)
