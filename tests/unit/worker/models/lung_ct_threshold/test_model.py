from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.factories import chest_phantom, chest_series
from worker.core.errors import InputError
from worker.models._nn.metrics import dice
from worker.models.lung_ct.phantoms import phantom_volume_ml
from worker.models.lung_ct_threshold.serve import SPEC, segment_lungs
from worker.pipeline.loading import VolumeGeometry, load_series


def _geometry(
    n: int, spacing: float, slice_gap: float, row_cosine: tuple[float, float, float]
) -> VolumeGeometry:
    positions = np.array([[0.0, 0.0, k * slice_gap] for k in range(n)])
    return VolumeGeometry(
        row_cosine=np.array(row_cosine),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(spacing, spacing),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_phantom_dice_and_volumes(tmp_path: Path, seed: int) -> None:
    phantom = chest_phantom(seed)
    series = load_series(chest_series(tmp_path, seed))
    output = SPEC.load("cpu").predict(series)
    left, right = (s.mask for s in output.segments)
    assert dice(left, phantom.left_lung) >= 0.97
    assert dice(right, phantom.right_lung) >= 0.97
    measured = {m.key: m.value for m in output.measurements}
    truth_left = phantom_volume_ml(phantom.left_lung, phantom)
    truth_right = phantom_volume_ml(phantom.right_lung, phantom)
    assert measured["left_lung_volume_ml"] == pytest.approx(truth_left, rel=0.03)
    assert measured["right_lung_volume_ml"] == pytest.approx(truth_right, rel=0.03)
    assert measured["lung_volume_ml"] == pytest.approx(
        measured["left_lung_volume_ml"] + measured["right_lung_volume_ml"]
    )


def test_left_is_named_from_patient_coordinates_not_columns() -> None:
    phantom = chest_phantom(0)
    flipped = phantom.hu[:, :, ::-1].astype(np.float32)
    geometry = _geometry(
        len(flipped), phantom.pixel_spacing, phantom.slice_spacing, (-1.0, 0.0, 0.0)
    )
    left, right = segment_lungs(flipped, geometry)
    assert dice(left, phantom.left_lung[:, :, ::-1]) >= 0.97
    assert dice(right, phantom.right_lung[:, :, ::-1]) >= 0.97


def test_touching_lungs_are_split() -> None:
    phantom = chest_phantom(1)
    hu = phantom.hu.astype(np.float32)
    lungs = phantom.left_lung | phantom.right_lung
    # An anterior junction: a lung-density bridge joining the two lungs on a few slices.
    middle = hu.shape[2] // 2
    bridge = np.zeros_like(lungs)
    rows = np.nonzero(lungs.any(axis=(0, 2)))[0]
    bridge[8:14, rows.min() + 4 : rows.min() + 8, middle - 30 : middle + 30] = True
    bridge &= ~lungs
    hu[bridge] = -850.0
    geometry = _geometry(len(hu), phantom.pixel_spacing, phantom.slice_spacing, (1.0, 0.0, 0.0))
    left, right = segment_lungs(hu, geometry)
    assert not (left & right).any()
    assert dice(left, phantom.left_lung) >= 0.9
    assert dice(right, phantom.right_lung) >= 0.9


def test_volume_follows_slice_positions_not_slice_thickness() -> None:
    geometry = _geometry(5, 1.0, 2.5, (1.0, 0.0, 0.0))
    assert geometry.slice_thicknesses() == pytest.approx([2.5] * 5)
    assert geometry.voxel_volumes_ml() == pytest.approx([0.0025] * 5)
    uneven = VolumeGeometry(
        row_cosine=np.array([1.0, 0, 0]),
        column_cosine=np.array([0, 1.0, 0]),
        positions=np.array([[0, 0, 0.0], [0, 0, 2.0], [0, 0, 6.0]]),
        pixel_spacing=(1.0, 1.0),
    )
    assert uneven.slice_thicknesses() == pytest.approx([2.0, 3.0, 4.0])


def test_a_volume_without_lungs_is_an_input_error() -> None:
    hu = np.full((10, 64, 64), -1000.0, dtype=np.float32)
    hu[:, 8:56, 8:56] = 40.0  # a body of soft tissue, no air inside
    with pytest.raises(InputError, match="no lungs"):
        segment_lungs(hu, _geometry(10, 2.0, 5.0, (1.0, 0.0, 0.0)))


def test_missing_pixel_spacing_is_an_input_error(tmp_path: Path) -> None:
    import pydicom

    paths = chest_series(tmp_path, 0, slices=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    series = load_series(paths)
    with pytest.raises(InputError, match="geometry"):
        SPEC.load("cpu").predict(series)
