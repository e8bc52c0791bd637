"""The chest X-ray model end to end: phantom CR/DX and the real RG1_UNCI.dcm (pydicom-data)
through the pipeline, SEG and SR valid (dciodvfy), areas; the phantom-only opacity detector off
by default, and when a test turns it on (research), its findings in report.json and SR with
the whole result not for clinical use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.tools import dciodvfy_errors
from worker.core.routing import route
from worker.core.settings import DeliveryPolicy, get_settings
from worker.core.tags import SeriesTags
from worker.delivery.policy import withhold_reason
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
REPO = Path(__file__).resolve().parents[5]  # this checkout's code, in the subprocess too


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache("cpu")


@pytest.fixture(scope="module")
def research_models() -> Iterator[ModelCache]:
    """Models loaded with ``MEDSEG_PNEUMONIA_DETECTOR=true`` (research use)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSEG_PNEUMONIA_DETECTOR", "true")
        get_settings.cache_clear()
        cache = ModelCache("cpu")
        cache.get(SPEC)
    get_settings.cache_clear()
    yield cache


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
    assert lungs["version"] == "2.1.0" and "real chest films" in lungs["trained_on"]
    assert len(lungs["qc_excluded"]) == 11 and lungs["ensemble"]["members"] == [4, 1, 5, 3, 2]
    assert lungs["config"]["arch"] == "unet-ensemble" and lungs["config"]["members"] == 5
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
    # The detector is off by default: the opacity is not looked for, nothing says it is.
    report = json.loads(outputs["json"].read_text())
    assert report["findings"] == [] and "pneumonia_findings" not in values
    assert report["pneumonia_detector"] == "off" and report["components"] == {}
    assert result.validation == report["validation"] == "validated-real"


def test_research_detector_findings_are_not_for_clinical_use(
    research_models: ModelCache, tmp_path: Path
) -> None:
    """MEDSEG_PNEUMONIA_DETECTOR on: the opacity is found and reported, and the result as a
    whole is phantom-only: NOT FOR CLINICAL USE in the SEG's and SR's series descriptions,
    withheld from a destination unless it takes unvalidated output."""
    phantom = make_chest_xray(HELD_OUT_SEED, size=320, opacities=1)
    source = write_cxr(phantom, tmp_path / "in" / "cr.dcm", spacing="pixel")
    result = run_series([source], research_models, tmp_path / "out")
    outputs = {o.kind: o.path for o in result.outputs}
    assert dciodvfy_errors(outputs["seg"]) == []
    assert dciodvfy_errors(outputs["sr"]) == []
    report = json.loads(outputs["json"].read_text())
    assert report["findings"], "no opacity reported"
    best = max(iou(tuple(f["box_px"]), phantom.boxes[0]) for f in report["findings"])
    assert best >= 0.3
    values = {m.key: m.value for m in result.measurements}
    assert values["pneumonia_findings"] == len(report["findings"])
    assert report["model_validation"] == "validated-real"
    assert report["components"] == {"pneumonia-detector": "phantom-only"}
    assert result.validation == report["validation"] == "phantom-only"
    assert report["not_for_clinical_use"] is True
    assert all(f["validation"] == "phantom-only" for f in report["findings"])
    sr = pydicom.dcmread(outputs["sr"])
    seg = pydicom.dcmread(outputs["seg"])
    assert "NOT FOR CLINICAL USE" in str(sr.SeriesDescription)
    assert "NOT FOR CLINICAL USE" in str(seg.SeriesDescription)
    scoords = [item for item in _walk(sr) if item.get("ValueType") == "SCOORD"]
    assert len(scoords) == len(report["findings"])
    assert all(s.GraphicType == "POLYLINE" and len(s.GraphicData) == 10 for s in scoords)
    texts = [str(item.TextValue) for item in _walk(sr) if item.get("ValueType") == "TEXT"]
    assert texts.count("NOT FOR CLINICAL USE") >= len(report["findings"])
    flagged = bool(result.review)
    assert withhold_reason(DeliveryPolicy(), flagged=False, validation=result.validation)
    research = DeliveryPolicy(send_not_validated=True, send_needs_review=True)
    assert withhold_reason(research, flagged=flagged, validation=result.validation) is None


def test_findings_count_is_what_the_list_holds_on_every_image(
    research_models: ModelCache, tmp_path: Path
) -> None:
    """Two images of one series, an opacity on each: ``pneumonia_findings`` counts every
    finding listed (both images), not those of the first image only."""
    phantom = make_chest_xray(HELD_OUT_SEED, size=320, opacities=1)  # one size for both
    paths = [write_cxr(phantom, tmp_path / "in" / f"cr{k}.dcm", spacing="pixel") for k in (0, 1)]
    first, second = (pydicom.dcmread(p) for p in paths)
    second.SeriesInstanceUID = first.SeriesInstanceUID
    second.StudyInstanceUID = first.StudyInstanceUID
    second.save_as(paths[1])
    result = run_series(paths, research_models, tmp_path / "out")
    values = {m.key: m.value for m in result.measurements}
    frames = {f.frame for f in result.findings}
    assert frames == {0, 1}, "an opacity on each image"
    assert values["pneumonia_findings"] == len(result.findings)
    label = next(m.label for m in result.measurements if m.key == "pneumonia_findings")
    assert "2 images" in label and "not for clinical use" in label


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
    assert "pneumonia_findings" not in values  # the detector is off by default


def test_rg1_unci_real_radiograph_pixels_not_invented_cm2(
    models: ModelCache, tmp_path: Path
) -> None:
    """PixelSpacing 0\\0 and no ImagerPixelSpacing: areas in pixels with a warning."""
    rows, skipped = process_paths([_rg1()], tmp_path / "out", models)
    assert skipped == [] and len(rows) == 1
    row = rows[0].as_json()
    assert row["status"] == "succeeded" and row["model"] == "lung-cxr"
    # Default settings: the phantom-only detector does not run, so nothing a reader could take
    # for a pneumonia finding is reported, written into the SR or delivered (issue 28).
    assert set(row["measurements"]) == {"lung_area_px", "right_lung_area_px", "left_lung_area_px"}
    assert row["findings"] == [] and row["validation"] == "validated-real"
    assert any("pixels" in w for w in row["warnings"])
    image_px = 1955 * 1841
    both = row["measurements"]["lung_area_px"]
    assert 0.12 * image_px < both < 0.6 * image_px  # no ground truth: only sensible bounds
    ratio = row["measurements"]["right_lung_area_px"] / row["measurements"]["left_lung_area_px"]
    assert 0.6 < ratio < 1.8
    seg_path, sr_path = (Path(p) for p in row["outputs"][:2])
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []
    codes = {str(i.ConceptCodeSequence[0].CodeValue) for i in _walk(pydicom.dcmread(sr_path))
             if "ConceptCodeSequence" in i}  # fmt: skip
    assert "233604007" not in codes  # SNOMED Pneumonia
    seg = hd.seg.segread(seg_path)  # read back despite the source's zero PixelSpacing
    assert seg.PatientOrientation == ["L", "F"]
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]


def _walk(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    items = []
    for item in ds.get("ContentSequence", []):
        items.append(item)
        items.extend(_walk(item))
    return items


def _process(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "worker.cli", "--log-level", "WARNING", "process"),
            *(str(tmp_path / "in"), "--out", str(tmp_path / "out"), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "MEDSEG_PNEUMONIA_DETECTOR": "true", "PYTHONPATH": str(REPO)},
    )


def test_medseg_process_json_lists_findings(tmp_path: Path) -> None:
    """As a user runs it for research (MEDSEG_PNEUMONIA_DETECTOR on): a subprocess on an
    opacity phantom, findings in the JSON row, the row not for clinical use; the table marks
    every finding NOT FOR CLINICAL USE."""
    phantom = make_chest_xray(HELD_OUT_SEED + 2, size=320, opacities=1)
    write_cxr(phantom, tmp_path / "in" / "cxr.dcm", modality="DX", spacing="both")
    done = _process(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["validation"] == "phantom-only" and row["not_for_clinical_use"] is True
    assert row["model"] == "lung-cxr" and row["measurements"]["lung_area_cm2"] > 0
    assert row["findings"], "no opacity reported"
    finding = max(row["findings"], key=lambda f: iou(tuple(f["box_px"]), phantom.boxes[0]))
    assert set(finding) == {"label", "score", "box_px", "validation"}
    assert finding["score"] >= 0.5 and finding["validation"] == "phantom-only"
    assert iou(tuple(finding["box_px"]), phantom.boxes[0]) >= 0.3
    table = _process(tmp_path)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "finding: " in line]
    assert len(lines) == len(row["findings"])
    assert all("phantom-only (NOT FOR CLINICAL USE)" in line for line in lines)
    assert "validation: phantom-only (NOT FOR CLINICAL USE)" in table.stdout
