"""The study overlay of a chest radiograph draws the detector's boxes from report.json, and
says NOT FOR CLINICAL USE on the image itself when the result is not for clinical use."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from dicom_gateway.completion import complete_quiet_series
from tests.support.dashboard_data import _record
from worker.core.settings import get_settings
from worker.dashboard.orientation import Edges
from worker.dashboard.overlay import (
    BOX_BGR,
    LEGEND_WIDTH,
    draw_overlay,
    overlay_view,
    read_caution,
    read_findings,
    render_job_overlay,
    wrap_legend,
)
from worker.dashboard.overlay_source import Box, read_statuses
from worker.dashboard.palette import STRUCTURES
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job


def _red(image: np.ndarray) -> np.ndarray:
    return np.all(image == np.array(BOX_BGR, dtype=np.uint8), axis=-1)


def test_boxes_are_drawn_at_their_scaled_place() -> None:
    image = np.full((400, 200, 3), 90, np.uint8)
    canvas = draw_overlay(
        image, {}, {}, max_side=200, boxes=[Box("Pneumonia", 0.9, (20, 300, 60, 360))]
    )
    red = _red(canvas)
    assert canvas.shape[:2] == (200, 100)  # scaled by 0.5
    assert red[150:181, 10].any() and red[150:181, 30].any()  # left and right edges
    assert not red[:100].any()  # nothing drawn far from the box (the caption sits above it)


def test_unreadable_reports_give_no_findings(tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    assert read_findings(bad) == [] and read_findings(tmp_path / "missing.json") == []
    bad.write_text('{"findings": [{"label": "Pneumonia", "score": 0.8, "box_px": [1, 2, 3, 4]}]}')
    assert read_findings(bad) == [Box("Pneumonia", 0.8, (1.0, 2.0, 3.0, 4.0))]
    bad.write_text(
        '{"findings": [{"label": "P", "score": 0.8, "box_px": [1, 2, 3, 4], '
        '"validation": "phantom-only"}]}'
    )
    assert read_findings(bad)[0].validation == "phantom-only"


def test_each_component_says_its_status_on_the_image(tmp_path: Path) -> None:
    """Issue 31: a research detector's boxes under a validated-real result are not facts.
    The band under the image names each component with its status (red below
    validated-real), an unproven box is dashed with its status in its caption, and the
    caption stays on the image at its edge."""
    report = tmp_path / "report.json"
    report.write_text(
        '{"model": "lung-cxr", "validation": "phantom-only", "model_validation": '
        '"validated-real", "components": {"pneumonia-detector": "phantom-only"}}'
    )
    statuses = read_statuses(report)
    assert statuses == [("lung-cxr", "validated-real"), ("pneumonia-detector", "phantom-only")]
    assert read_statuses(tmp_path / "missing.json") == []
    image = np.full((400, 400, 3), 90, np.uint8)
    box = Box("Pneumonia", 0.91, (300.0, 2.0, 399.0, 100.0), "phantom-only")
    canvas = draw_overlay(image, {}, {}, max_side=400, boxes=[box], statuses=statuses)
    assert canvas.shape[0] > 400 and np.array_equal(canvas[:400, :60], image[:, :60]), (
        "the band is under the image, not over it"
    )
    band = canvas[400:]
    white = np.all(band >= 200, axis=-1)
    assert white[:, :130].sum() > 50, "the model's validated-real status in white"
    reddish = (band[..., 2] > 150) & (band[..., 1] < 90) & (band[..., 0] < 90)
    assert reddish[:, 135:].sum() > 50, "the detector's phantom-only status in red"
    assert not reddish[:, :135].any(), "and the model's not"
    cv2.imwrite(str(tmp_path / "statuses.png"), canvas)  # kept with the test, to look at
    red = _red(canvas[:400])
    # The caption, with its status, under the box (no room above it), starting left of the
    # box so that it ends inside the image.
    caption = (canvas[103:125, ..., 2] > 150) & (canvas[103:125, ..., 1] < 90)
    assert caption[:, :298].sum() > 100
    assert not caption[:, 398:].any(), "the caption's end is on the image"
    # Dashed: the top edge of the box has gaps (a solid one is red all along).
    top = red[:4, 300:399].any(axis=0)
    assert 0.3 < top.mean() < 0.9
    solid = draw_overlay(
        image, {}, {}, max_side=400, boxes=[box._replace(validation="validated-real")]
    )
    assert _red(solid)[99:102, 305:395].all(axis=1).any(), "a validated box is drawn solid"


def test_the_legend_never_cuts_a_value() -> None:
    text = "Biparietal diameter (outer-to-outer): 95.8 mm"
    lines = wrap_legend(text)
    assert " ".join(part.strip() for part in lines) == text
    assert all(
        cv2.getTextSize(part, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0] <= LEGEND_WIDTH - 16
        for part in lines
    )
    assert lines[-1].endswith("95.8 mm")


def test_the_caution_is_written_on_the_image(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text('{"validation": "validated-real", "not_for_clinical_use": false}')
    assert read_caution(report) is None and read_caution(tmp_path / "missing.json") is None
    report.write_text(
        '{"validation": "phantom-only", "not_for_clinical_use": true, "findings": '
        '[{"label": "P", "score": 0.7, "box_px": [1, 2, 3, 4], "validation": "phantom-only"}]}'
    )
    caution = read_caution(report)
    assert caution == "NOT FOR CLINICAL USE (phantom-only)"
    image = np.full((400, 400, 3), 90, np.uint8)
    plain = draw_overlay(image, {}, {}, max_side=400)
    marked = draw_overlay(image, {}, {}, max_side=400, caution=caution)
    assert not _red(plain).any() and _red(marked)[20:60].sum() > 100


def test_a_radiograph_overlay_shows_the_findings(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the research detector on (MEDSEG_PNEUMONIA_DETECTOR): boxes, and the caution."""
    path = write_cxr(make_chest_xray(5, opacities=1), tmp_path / "in" / "CR0001.dcm")
    _record(session_factory, [path])
    complete_quiet_series(session_factory, 0.0, 1, now=utcnow() + timedelta(seconds=1))
    with session_factory() as session:
        job_id = session.scalars(select(Job.id)).one()
    monkeypatch.setenv("MEDSEG_PNEUMONIA_DETECTOR", "true")
    get_settings.cache_clear()
    try:
        state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id)
    finally:
        get_settings.cache_clear()
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        report = next(
            o for o in session.get_one(Job, job_id).results[0].outputs if o.kind == "json"
        )
    findings = read_findings(Path(report.path))
    assert findings, "the phantom's opacity should be found"

    png = render_job_overlay(session_factory, job_id)
    assert png is not None
    overlay = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert _red(overlay).sum() > 50  # the box outline and its caption
    assert read_caution(Path(report.path)) == "NOT FOR CLINICAL USE (phantom-only)"
    assert _red(overlay[28:48]).sum() > 50  # the caution's band, on the image itself
    (tmp_path / "cxr-overlay.png").write_bytes(png)  # kept with the test's files, to look at

    # The lungs in the colours they have on CT (the radiograph model numbers them the other
    # way round), each on its side of the film: the patient's right on the image left.
    def lung(name: str, image: np.ndarray) -> int:
        bgr = next(s.bgr for s in STRUCTURES if s.name == name)
        return int(np.all(np.abs(image.astype(int) - bgr) <= 40, axis=2).sum())

    half = overlay.shape[1] // 2
    assert lung("Right lung", overlay[:, :half]) > 200 > lung("Right lung", overlay[:, half:])
    assert lung("Left lung", overlay[:, half:]) > 200 > lung("Left lung", overlay[:, :half])
    view = overlay_view(session_factory, job_id)
    assert view is not None and view.edges == Edges("R", "L", "H", "F")  # PatientOrientation L\F
    assert [e.label for e in view.legend] == ["Right lung", "Left lung"]
