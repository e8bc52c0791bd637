"""Issue 28 item 8: a gantry-tilted CT (slices sheared along the stack) is processed, its
volume right, its SEG and SR valid, and the result warns that some readers cannot build a
volume from it (docs/conformance.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pydicom

from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

TILT_DEGREES = 15.0


def _tilt(paths: list[Path]) -> None:
    """Shear the stack: each slice moves along the column direction by its distance along
    the normal times tan(tilt); orientation and in-plane pixels stay as they were."""
    first = pydicom.dcmread(paths[0])
    z0 = float(first.ImagePositionPatient[2])
    for path in paths:
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (z - z0) * math.tan(math.radians(TILT_DEGREES)), z]
        ds.GantryDetectorTilt = TILT_DEGREES
        ds.save_as(path)


def test_gantry_tilt_is_processed_with_a_warning(tmp_path: Path) -> None:
    models = ModelCache("cpu")
    plain_paths = chest_series(tmp_path / "plain", 0, slices=12)
    plain = run_series(plain_paths, models, tmp_path / "p", spec=SPEC)
    assert not any("gantry tilt" in w for w in plain.warnings)
    paths = chest_series(tmp_path / "tilted", 0, slices=12)
    _tilt(paths)
    tilted = run_series(paths, models, tmp_path / "t", spec=SPEC)
    (warning,) = [w for w in tilted.warnings if "gantry tilt" in w]
    assert f"{TILT_DEGREES:.1f} degrees" in warning and "dcmqi" in warning
    volume = {m.key: m.value for m in plain.measurements}["lung_volume_ml"]
    assert {m.key: m.value for m in tilted.measurements}["lung_volume_ml"] == volume
    for output in tilted.outputs[:2]:
        assert dciodvfy_errors(output.path) == []
