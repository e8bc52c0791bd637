"""The fetal head ellipse a result shows now, to prefill a reviewer's correction: the
reviewer's own ellipse when the result is a correction, else the ellipse the model measured,
refitted to its SEG on the measured frame (``biometry.fit_ellipse_mm``), in the model's units (mm
when the image is calibrated, pixels otherwise)."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Correction, CorrectionState, Result, Series
from worker.corrections import ellipse as head
from worker.export.seg_read import read_seg_masks
from worker.models.fetal_head.biometry import Ellipse, fit_ellipse_mm
from worker.ops.corrections import HEAD_KEYS
from worker.pipeline.calibration import image_calibration

logger = logging.getLogger(__name__)


def is_fetal_head(result: Result) -> bool:
    return any(m.key in HEAD_KEYS for m in result.measurements)


def current_ellipse(session: Session, result: Result, series: Series) -> Ellipse | None:
    """The ellipse ``result`` (a fetal head's, on ``series``) shows; None when it has none
    or its files cannot be read."""
    if not is_fetal_head(result):
        return None
    drawn = session.scalar(
        select(Correction.ellipse).where(
            Correction.result_id == result.id,
            Correction.state == CorrectionState.APPLIED,
            Correction.kind == "ellipse",
        )
    )
    if drawn:
        return head.from_json(drawn)
    seg = next((Path(o.path) for o in result.outputs if o.kind == "seg"), None)
    if seg is None or not series.instances:
        return None
    try:
        masks = read_seg_masks(seg)
        source = pydicom.dcmread(series.instances[0].path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError, KeyError, AttributeError) as exc:
        logger.warning("result %s: no ellipse to prefill: %s", result.id, exc)
        return None
    if not masks.frames:
        return None
    key = max(masks.frames, key=lambda k: int(masks.union(k).sum()))
    calibration = image_calibration(source)
    spacing = (calibration.row_mm, calibration.column_mm) if calibration else (1.0, 1.0)
    return fit_ellipse_mm(masks.union(key), spacing)
