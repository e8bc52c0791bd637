"""Flagged or reviewed fetal head and fetal brain results over phantoms, with the phantom's
own truth as the model's SEG: what the export and correction tests start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pydicom
from sqlalchemy.orm import Session, sessionmaker

from tests.support.reviewed import reviewed_result, stamp_phi
from worker.export.outputs import FETAL_BRAIN, FETAL_HEAD
from worker.models.fetal_head.biometry import ellipse_mask

if TYPE_CHECKING:
    from worker.models.fetal_brain.phantoms import FetalBrainStack
    from worker.models.fetal_head.phantoms import FetalHeadTruth
    from worker.pipeline.loading import LoadedSeries


def fetal_head_result(
    session_factory: sessionmaker[Session],
    folder: Path,
    seed: int,
    *,
    patient_id: str | None = None,
    decision: str | None = "accepted",
    reviewer: str = "alice",
) -> tuple[int, FetalHeadTruth]:
    """A fetal head result on the US phantom ``seed`` (written in ``folder``), the phantom's
    head as its SEG; with ``patient_id``, the phantom carries that ID and the patient data of
    ``PHI``. Returns (result id, the phantom's truth)."""
    from worker.models.fetal_head.us_dicom import write_us_phantom

    path = folder / f"us{seed}.dcm"
    if patient_id is None:
        phantom = write_us_phantom(path, seed)
    else:
        phantom = write_us_phantom(path, seed, patient_id=patient_id)
        stamp_phi([phantom.path], patient_id)
    truth = phantom.truth
    rows, cols = pydicom.dcmread(phantom.path).pixel_array.shape[:2]
    mask = ellipse_mask((rows, cols), (truth.cx, truth.cy, truth.a, truth.b, truth.angle_deg))
    result_id = reviewed_result(
        session_factory,
        [phantom.path],
        "fetal-head-unet",
        FETAL_HEAD,
        mask[None],
        {"head_circumference_mm": (truth.hc_mm, "mm")},
        folder / f"out{seed}",
        decision=decision,
        reviewer=reviewer,
    )
    return result_id, truth


@dataclass(frozen=True)
class BrainCase:
    stack: FetalBrainStack
    series: LoadedSeries  # as the loader reads it (sorted by position)
    brain: npt.NDArray[np.bool_]  # the phantom's brain in the loaded series' order: the SEG


def fetal_brain_result(
    session_factory: sessionmaker[Session],
    folder: Path,
    patient_id: str,
    *,
    decision: str | None = "accepted",
) -> BrainCase:
    """A fetal brain result on an axial MR phantom stack (written in ``folder``, with
    ``patient_id`` and the patient data of ``PHI``), the phantom's brain as its SEG."""
    from worker.models.fetal_brain.mr_dicom import write_mr_stack
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
    from worker.pipeline.loading import load_series

    stack = make_fetal_brain_stack(3, plane="TRA")
    paths = write_mr_stack(stack, folder / "mr", patient_id=patient_id)
    stamp_phi(paths, patient_id)
    series = load_series(paths)
    brain = np.zeros(series.frames.shape, dtype=bool)
    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): i for i, p in enumerate(paths)}
    for index, ds in enumerate(series.datasets):
        brain[index] = stack.brain[by_uid[str(ds.SOPInstanceUID)]]
    reviewed_result(
        session_factory,
        paths,
        "fetal-brain-unet",
        FETAL_BRAIN,
        brain,
        {"brain_volume_ml": (stack.brain_volume_ml, "mL")},
        folder / "out",
        decision=decision,
    )
    return BrainCase(stack, series, brain)
