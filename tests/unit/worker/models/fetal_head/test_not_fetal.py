"""Issue 28: what is not a measurable fetal head never reports a gestational age.

Every ultrasound file of pydicom's test files and pydicom-data (an adult echo, a TEE, kidney,
lymph node, pelvis, empty OB frames ...) relabelled "FETAL HEAD" is flagged or has no head
found; a mask outside the ultrasound fan is clipped and flagged; "no fetal head found" is an
outcome of its own (``no_finding``, exit code 0), and a 2-frame image of the single-frame
ultrasound class is refused with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.tools import dciodvfy_errors
from worker.models.fetal_head.fan import imaged_region
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.batch import BatchRow, process_paths
from worker.pipeline.cache import ModelCache

REPO = Path(__file__).resolve().parents[5]
pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom's test files are odd on purpose


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache("cpu")


def _testdata(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"{name} not found: pip install pydicom-data (dev extra)")
    return Path(str(path))


def _ultrasound_files() -> list[Path]:
    import data_store  # pydicom-data
    import pydicom.data

    found = []
    for root in (Path(pydicom.data.__file__).parent, Path(data_store.__file__).parent):
        for path in sorted(root.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:  # pydicom ships deliberately broken files
                continue
            if ds.get("Modality") == "US":
                found.append(path)
    return found


def _as_fetal_head(source: Path, folder: Path) -> Path:
    ds = pydicom.dcmread(source)
    ds.SeriesDescription = "FETAL HEAD"
    copy = folder / source.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(copy)
    return copy


def _run(source: Path, tmp_path: Path, models: ModelCache) -> BatchRow:
    copy = _as_fetal_head(source, tmp_path / "in" / source.stem)
    (row,), _ = process_paths([copy], tmp_path / "out" / source.stem, models)
    return row


def test_an_adult_echo_is_not_a_fetal_head(models: ModelCache, tmp_path: Path) -> None:
    """color3d_jpeg_baseline.dcm (pydicom-data, 120-frame adult echo) labelled FETAL HEAD."""
    row = _run(_testdata("color3d_jpeg_baseline.dcm"), tmp_path, models)
    assert row.status == "needs_review", row.error
    assert "gestational_age_days" not in row.measurements
    assert row.review and any("withheld" in w for w in row.warnings)
    for path in row.outputs[:2]:
        assert dciodvfy_errors(Path(path)) == []


#: Copies of an image in another transfer syntax (same pixels, same answer), and the 120-frame
#: echo that has a test of its own: left out here to keep the test short on a small CPU;
#: benchmarks/fetal_head_not_fetal.py runs every file.
_SAME_PIXELS = ("_expb.", "_expb_2frame", "_big", "US1_J2K", "US1_UNCR", "color-px", "color3d")


def test_no_non_fetal_ultrasound_reports_a_gestational_age(
    models: ModelCache, tmp_path: Path
) -> None:
    files = _ultrasound_files()
    assert len(files) >= 15, "pydicom-data's ultrasound files are missing"
    outcomes = {}
    for source in files:
        if any(part in source.name for part in _SAME_PIXELS):
            continue
        row = _run(source, tmp_path, models)
        outcomes[source.name] = row.status
        assert "gestational_age_days" not in row.measurements, source.name
        assert row.status in ("needs_review", "no_finding", "failed"), (source.name, row.status)
        if row.status == "failed":  # 2-frame stills of the single-frame class, retired classes
            refused = ("single-frame SOP class", "retired SOP class")
            assert any(r in str(row.error) for r in refused), (source.name, row.error)
        for path in row.outputs[:2]:
            assert dciodvfy_errors(Path(path)) == [], (source.name, path)
    assert outcomes["examples_ybr_color.dcm"] == "needs_review"
    assert outcomes["OBXXXX1A.dcm"] == "no_finding"  # an empty OB frame


def test_a_two_frame_still_of_the_single_frame_class_is_refused(
    models: ModelCache, tmp_path: Path
) -> None:
    """OBXXXX1A_2frame.dcm: 2 frames in Ultrasound Image Storage, whose frames a SEG or SR
    may not reference (dciodvfy): refused with that reason."""
    row = _run(_testdata("OBXXXX1A_2frame.dcm"), tmp_path, models)
    assert row.status == "failed" and row.outputs == []
    assert "2 frames in a single-frame SOP class" in str(row.error)


def test_a_mask_outside_the_fan_is_clipped_and_flagged(models: ModelCache, tmp_path: Path) -> None:
    """Phantom us100000: the network's mask runs as a wedge beyond the sector; the SEG holds
    only what was imaged, and the result needs review."""
    phantom = write_us_phantom(tmp_path / "in" / "us.dcm", 100000)
    (row,), _ = process_paths([phantom.path], tmp_path / "out", models)
    assert row.status == "needs_review"
    assert any(r.startswith("head mask leaves the imaged region") for r in row.review)
    assert "gestational_age_days" not in row.measurements
    seg_path, sr_path = (Path(p) for p in row.outputs[:2])
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    source = pydicom.dcmread(phantom.path)
    seg = hd.seg.segread(seg_path)
    mask = np.squeeze(
        seg.get_pixels_by_source_instance([str(source.SOPInstanceUID)], segment_numbers=[1])
    ).astype(bool)
    fan = imaged_region(source.pixel_array.astype(np.uint8), source)
    assert mask.any() and not (mask & ~fan).any()
    report = json.loads(Path(row.outputs[2]).read_text())
    assert report["mask_outside_fan"] > 0.02


def test_no_fetal_head_is_an_answer_not_a_failure(tmp_path: Path) -> None:
    """A frame without a head: status ``no_finding`` with the reason, exit code 0 (a damaged
    file is ``failed``, exit code 1)."""
    phantom = write_us_phantom(tmp_path / "in" / "us.dcm", 200014)
    ds = pydicom.dcmread(phantom.path)
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint8).tobytes()
    ds.save_as(phantom.path)
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
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["status"] == "no_finding" and row["outputs"] == []
    assert row["error"] == "no fetal head found in any frame"
