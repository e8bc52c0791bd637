"""What a corrected result teaches: the reader ``worker.trainset.reviewed`` asks for a
``corrected`` result's reference (``medseg export-training``, ``medseg compare``).

A correction is applied as a new result (worker.corrections.apply) with the recomputed
measurements and the corrected SEG as its outputs, so those are the reference; for a fetal
head the reviewer's ellipse, kept on the correction, comes with them so the HC18 layout
draws the reviewer's ellipse rather than one refitted to its mask.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Correction, CorrectionState, Result
from worker.corrections import ellipse as head
from worker.trainset.reviewed import CORRECTED, Reference, set_correction_reader


def corrected_reference(session: Session, result: Result) -> Reference | None:
    """The reference of ``result`` when it is the outcome of an applied correction, else
    None (e.g. a result marked corrected by hand, with no correction behind it)."""
    if result.review_decision != CORRECTED:
        return None
    row = session.scalar(
        select(Correction)
        .where(Correction.result_id == result.id, Correction.state == CorrectionState.APPLIED)
        .order_by(Correction.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    seg = next((Path(o.path) for o in result.outputs if o.kind == "seg"), None)
    drawn = None
    if row.kind == "ellipse" and row.ellipse:
        e = head.from_json(row.ellipse)
        drawn = (e.cx, e.cy, e.a, e.b, e.angle_deg)
    return Reference(CORRECTED, {m.key: m.value for m in result.measurements}, seg, drawn)


def install() -> None:
    """Let exports and comparisons read corrections (called by the entry points that run
    them: the ``medseg`` commands and the dashboard)."""
    set_correction_reader(corrected_reference)
