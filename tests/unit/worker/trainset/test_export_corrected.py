"""``medseg export-training --decision corrected``: a corrected fetal head is exported with the
reviewer's ellipse in the HC18 layout (read back by the HC18 training reader), a corrected
SEG with the reviewer's masks; without the correction reader such cases are skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import CorrectionState, Result
from tests.support.corrections import seg_correction, write_corrected_seg
from tests.support.fetal_cases import fetal_brain_result, fetal_head_result
from worker.corrections.apply import execute_correction
from worker.corrections.reference import install
from worker.models.fetal_head.biometry import fit_ellipse_mm, ramanujan_perimeter
from worker.ops.corrections import request_ellipse
from worker.trainset.export import export_training
from worker.trainset.reviewed import set_correction_reader

BRAIN = hd.sr.CodedConcept("12738006", "SCT", "Brain")
SECRET = "a site secret of more than 16 characters"


@pytest.fixture
def reader() -> Iterator[None]:
    install()
    yield
    set_correction_reader(None)


def _corrected_head(session_factory: sessionmaker[Session], tmp_path: Path) -> dict[str, float]:
    result_id, truth = fetal_head_result(
        session_factory,
        tmp_path,
        31,
        patient_id="PID-C",
        decision=None,  # flagged, undecided: the reviewer corrects it
    )
    mm = truth.pixel_mm
    values = {  # the reviewer's head: 10 % larger, turned by 20 degrees, moved 3 mm
        "cx": truth.cx * mm + 3.0,
        "cy": truth.cy * mm,
        "a": truth.a * mm * 1.1,
        "b": truth.b * mm * 1.1,
        "angle": (truth.angle_deg + 20.0) % 180.0,
    }
    with session_factory() as session:
        job_id = session.get_one(Result, result_id).job_id
    correction = request_ellipse(session_factory, job_id, values, by="alice")
    assert execute_correction(session_factory, correction, tmp_path / "r") is (
        CorrectionState.APPLIED
    )
    return values | {"pixel_mm": mm, "model_hc": truth.hc_mm}


def test_a_corrected_fetal_head_is_exported_with_the_reviewers_ellipse(
    session_factory: sessionmaker[Session], tmp_path: Path, reader: None
) -> None:
    from worker.models.fetal_head.hc18 import load_mask, read_index

    drawn = _corrected_head(session_factory, tmp_path)
    corrected_hc = ramanujan_perimeter(drawn["a"], drawn["b"])
    assert corrected_hc > 1.05 * drawn["model_hc"]

    summary = export_training(
        session_factory, "fetal-head", tmp_path / "x", secret=SECRET, decisions=["corrected"]
    )

    assert summary.written == 1, summary.skipped
    (item,) = read_index(tmp_path / "x")
    assert item.pixel_mm == pytest.approx(drawn["pixel_mm"])
    assert item.hc_mm == pytest.approx(corrected_hc, abs=0.01)
    # The annotation is the reviewer's ellipse: refitted by the training reader, its centre,
    # axes and angle come back (pixels -> mm).
    fitted = fit_ellipse_mm(load_mask(item.annotation), (item.pixel_mm, item.pixel_mm))
    assert fitted is not None
    assert fitted.circumference == pytest.approx(corrected_hc, rel=0.01)
    assert (fitted.cx, fitted.cy) == pytest.approx((drawn["cx"], drawn["cy"]), abs=item.pixel_mm)
    assert fitted.angle_deg == pytest.approx(drawn["angle"], abs=2.0)
    case = json.loads((tmp_path / "x" / "manifest.json").read_text())["cases"][0]
    assert case["decision"] == "corrected" and case["reviewer_role"] == "reviewer"
    assert case["measurements"]["head_circumference_mm"] == pytest.approx(corrected_hc, abs=1e-3)


def test_without_the_reader_a_corrected_case_is_skipped(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _corrected_head(session_factory, tmp_path)
    set_correction_reader(None)

    summary = export_training(
        session_factory, "fetal-head", tmp_path / "x", secret=SECRET, decisions=["corrected"]
    )

    assert summary.written == 0
    assert sum(summary.skipped.values()) == 1


def test_a_corrected_seg_is_exported_with_the_reviewers_mask(
    session_factory: sessionmaker[Session], tmp_path: Path, reader: None
) -> None:
    from worker.models.fetal_brain.data import nifti_pairs

    case = fetal_brain_result(session_factory, tmp_path, "PID-B", decision=None)
    stack, model = case.stack, case.brain
    ordered = [Path(ds.filename) for ds in case.series.datasets]  # the loader's order
    corrected = model.copy()
    corrected[:, : len(corrected[0]) // 2] = False  # the reviewer removed the upper half
    assert corrected.any() and corrected.sum() < model.sum()
    seg = write_corrected_seg(
        ordered, [("Fetal brain", BRAIN, corrected)], tmp_path / "slicer" / "seg.dcm"
    )
    correction_id = seg_correction(session_factory, seg, "SLICER")
    assert execute_correction(session_factory, correction_id, tmp_path / "r") is (
        CorrectionState.APPLIED
    )

    summary = export_training(
        session_factory, "fetal-brain-unet", tmp_path / "x", secret=SECRET, decisions=["corrected"]
    )

    assert summary.written == 1, summary.skipped
    ((_, _, mask, _),) = list(nifti_pairs(tmp_path / "x"))
    assert np.array_equal(mask, corrected)
    case = json.loads((tmp_path / "x" / "manifest.json").read_text())["cases"][0]
    assert case["decision"] == "corrected"
    assert case["measurements"]["brain_volume_ml"] < stack.brain_volume_ml
