"""The chest X-ray model end to end: phantom CR/DX and the real RG1_UNCI.dcm (pydicom-data)
through the pipeline, SEG and SR valid (dciodvfy), areas, findings in report.json and SR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.tools import dciodvfy_errors
from worker.core.routing import route
from worker.core.tags import SeriesTags
from worker.models._nn.checkpoint import read_metadata, sha256_of
from worker.models._nn.metrics import dice, iou
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.detector import DEFAULT_DETECTOR_WEIGHTS
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.models.lung_cxr.serve import DEFAULT_WEIGHTS, SPEC, accepts
from worker.pipeline.batch import process_paths
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

HELD_OUT_SEED = 600001  # training used seeds below 1000


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache("cpu")


def _rg1() -> Path:
    """RG1_UNCI.dcm: pydicom's data manager finds it offline in the installed pydicom-data."""
    path = get_testdata_file("RG1_UNCI.dcm")
    if path is None:
        pytest.fail("RG1_UNCI.dcm not found: pip install pydicom-data (dev extra)")
    return Path(str(path))


def test_shipped_weights_carry_checksums_and_say_what_they_were_trained_on() -> None:
    for weights in (DEFAULT_WEIGHTS, DEFAULT_DETECTOR_WEIGHTS):
        assert read_metadata(weights)["sha256"] == sha256_of(weights)
    assert "NOT real patients" in read_metadata(DEFAULT_DETECTOR_WEIGHTS)["trained_on"]
    lungs = read_metadata(DEFAULT_WEIGHTS)
    assert lungs["version"] == "2.0.0" and "real chest films" in lungs["trained_on"]
    assert len(lungs["qc_excluded"]) == 11 and lungs["train_images"] == 46
    cv = lungs["cross_validation"]
    assert len(cv["folds"]) == 5 and cv["out_of_fold"]["films"] == 57
    assert cv["out_of_fold_qc_passed"]["sides_ok"] == cv["out_of_fold_qc_passed"]["films"]
    assert lungs["quality_gate"]["fitted_on"].endswith("(out-of-fold, Dice >= 0.9)")


def test_routing_takes_chest_cr_and_dx_only() -> None:
    assert accepts(SeriesTags.of("CR", body_part_examined="CHEST"))
    assert accepts(SeriesTags.of("DX", series_description="Thorax PA"))
    assert not accepts(SeriesTags.of("CR", body_part_examined="HAND"))
    assert not accepts(SeriesTags.of("CT", body_part_examined="CHEST"))
    assert route(SeriesTags.of("DX", body_part_examined="CHEST")) is SPEC


def test_phantom_with_opacity_end_to_end(models: ModelCache, tmp_path: Path) -> None:
    phantom = make_chest_xray(HELD_OUT_SEED, size=320, opacities=1)
    source = write_cxr(phantom, tmp_path / "in" / "cr.dcm", spacing="pixel")
    result = run_series([source], models, tmp_path / "out")
    assert result.spec is SPEC and result.warnings == []
    values = {m.key: m.value for m in result.measurements}
    # Trained on real films, the network meets phantoms as a domain gap: +18 % area on
    # average against their projected fields (docs/lung.md). These tests hold the plumbing
    # (scale, SEG geometry, findings), the real-film numbers come from cross-validation.
    truth_cm2 = float(phantom.fields.sum()) * phantom.pixel_mm**2 / 100
    assert values["lung_area_cm2"] == pytest.approx(truth_cm2, rel=0.35)
    assert values["lung_area_cm2"] == pytest.approx(
        values["right_lung_area_cm2"] + values["left_lung_area_cm2"]
    )
    outputs = {o.kind: o.path for o in result.outputs}
    seg = hd.seg.segread(outputs["seg"])
    right = seg.get_pixels_by_source_instance(
        [str(pydicom.dcmread(source).SOPInstanceUID)], segment_numbers=[1]
    )
    assert phantom.right_field is not None
    assert dice(np.squeeze(right).astype(bool), phantom.right_field) > 0.8
    assert dciodvfy_errors(outputs["seg"]) == []
    assert dciodvfy_errors(outputs["sr"]) == []
    # The opacity is found, where it is, and reported in report.json and the SR.
    report = json.loads(outputs["json"].read_text())
    assert report["findings"], "no opacity reported"
    best = max(iou(tuple(f["box_px"]), phantom.boxes[0]) for f in report["findings"])
    assert best >= 0.3
    assert values["pneumonia_findings"] == len(report["findings"])
    sr = pydicom.dcmread(outputs["sr"])
    scoords = [item for item in _walk(sr) if item.get("ValueType") == "SCOORD"]
    assert len(scoords) == len(report["findings"])
    assert all(s.GraphicType == "POLYLINE" and len(s.GraphicData) == 10 for s in scoords)
    # The lung fields are validated on real films; each finding carries the phantom-only
    # detector's status.
    assert result.validation == report["validation"] == "validated-real"
    assert all(f["validation"] == "phantom-only" for f in report["findings"])
    assert "NOT FOR CLINICAL USE" not in str(sr.SeriesDescription)
    texts = [str(item.TextValue) for item in _walk(sr) if item.get("ValueType") == "TEXT"]
    assert texts.count("NOT FOR CLINICAL USE") >= len(report["findings"])


def test_dx_monochrome1_imager_spacing(models: ModelCache, tmp_path: Path) -> None:
    phantom = make_chest_xray(HELD_OUT_SEED + 1, size=288, opacities=0)
    source = write_cxr(
        phantom, tmp_path / "dx.dcm", modality="DX", spacing="imager", monochrome1=True
    )
    result = run_series([source], models, tmp_path / "out")
    values = {m.key: m.value for m in result.measurements}
    truth_cm2 = float(phantom.fields.sum()) * phantom.pixel_mm**2 / 100
    assert values["lung_area_cm2"] == pytest.approx(truth_cm2, rel=0.35)  # see above
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "ImagerPixelSpacing" in report["scale"]
    assert values["pneumonia_findings"] == 0


def test_rg1_unci_real_radiograph_pixels_not_invented_cm2(
    models: ModelCache, tmp_path: Path
) -> None:
    """PixelSpacing 0\\0 and no ImagerPixelSpacing: areas in pixels with a warning."""
    rows, skipped = process_paths([_rg1()], tmp_path / "out", models)
    assert skipped == [] and len(rows) == 1
    row = rows[0].as_json()
    assert row["status"] == "succeeded" and row["model"] == "lung-cxr"
    assert set(row["measurements"]) == {
        "lung_area_px",
        "right_lung_area_px",
        "left_lung_area_px",
        "pneumonia_findings",
    }
    assert any("pixels" in w for w in row["warnings"])
    image_px = 1955 * 1841
    both = row["measurements"]["lung_area_px"]
    assert 0.12 * image_px < both < 0.6 * image_px  # no ground truth: only sensible bounds
    ratio = row["measurements"]["right_lung_area_px"] / row["measurements"]["left_lung_area_px"]
    assert 0.6 < ratio < 1.8
    assert isinstance(row["findings"], list)
    seg_path, sr_path = (Path(p) for p in row["outputs"][:2])
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []
    seg = hd.seg.segread(seg_path)  # read back despite the source's zero PixelSpacing
    assert seg.PatientOrientation == ["L", "F"]
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]


def _walk(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    items = []
    for item in ds.get("ContentSequence", []):
        items.append(item)
        items.extend(_walk(item))
    return items


def test_medseg_process_json_lists_findings(tmp_path: Path) -> None:
    """As a user runs it: a subprocess on an opacity phantom, findings in the JSON row."""
    phantom = make_chest_xray(HELD_OUT_SEED + 2, size=320, opacities=1)
    write_cxr(phantom, tmp_path / "in" / "cxr.dcm", modality="DX", spacing="both")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "worker.cli", "--log-level", "WARNING", "process"),
            *(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["model"] == "lung-cxr" and row["measurements"]["lung_area_cm2"] > 0
    assert row["findings"], "no opacity reported"
    finding = max(row["findings"], key=lambda f: iou(tuple(f["box_px"]), phantom.boxes[0]))
    assert set(finding) == {"label", "score", "box_px", "validation"}
    assert finding["score"] >= 0.5 and finding["validation"] == "phantom-only"
    assert iou(tuple(finding["box_px"]), phantom.boxes[0]) >= 0.3
