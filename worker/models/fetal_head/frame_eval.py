"""Frames of an ``HC18Frames`` set measured from network-size probabilities, the way the service
measures them (full-size map, clean mask, ellipse in mm, the gate's signals and verdict), and
compared with the sonographer's ellipse: what training scores its tuning folds and held-out
subjects with when it has the arrays but not the image files (a pack).

One difference from ``evaluate.evaluate_frame``, which reads the files: the gate's skull-echo
check, which needs the full-size frame, is not judged here (its threshold is not fitted either).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from worker.models._nn.metrics import dice
from worker.models._nn.predictor import full_size
from worker.models._nn.threads import thread_map
from worker.models.fetal_head.biometry import ellipse_mask, fit_ellipse_mm
from worker.models.fetal_head.evaluate import FrameRecord, hausdorff_mm
from worker.models.fetal_head.frames import HC18Frames
from worker.models.fetal_head.gate import DEFAULT_THRESHOLDS, Thresholds, reasons, signals
from worker.models.fetal_head.predictor import clean_mask


def measure(
    frames: HC18Frames,
    i: int,
    prob: npt.NDArray[np.float32],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> FrameRecord:
    """Frame ``i`` measured from its network-size probability map ``prob``."""
    shape = frames.shape_of(i)
    full = full_size(prob, shape)
    mask = clean_mask(full)
    spacing = (float(frames.pixel_mm[i]), float(frames.pixel_mm[i]))
    e = fit_ellipse_mm(mask, spacing) if mask.any() else None
    found = signals(full, mask, e, spacing)
    truth = frames.truth(i)
    fitted = (
        ellipse_mask(shape, (e.cx, e.cy, e.a, e.b, e.angle_deg), spacing) if e is not None else None
    )
    return FrameRecord(
        name=frames.names[i],
        subject=frames.subjects[i],
        pixel_mm=spacing[0],
        hc_reference_mm=float(frames.hc_mm[i]),
        hc_mm=e.circumference if e is not None else None,
        dice=dice(fitted, truth) if fitted is not None else 0.0,
        hausdorff_mm=hausdorff_mm(fitted, truth, spacing[0]) if fitted is not None else None,
        signals=found.as_dict() if found else None,
        review=reasons(found, e.circumference if e is not None else None, thresholds),
    )


def measure_all(
    frames: HC18Frames,
    indices: Sequence[int],
    probabilities: Sequence[npt.NDArray[np.float32]],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[FrameRecord]:
    pairs = list(zip(indices, probabilities, strict=True))
    return thread_map(lambda pair: measure(frames, pair[0], pair[1], thresholds), pairs)
