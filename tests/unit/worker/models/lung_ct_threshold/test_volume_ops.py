"""The whole-volume lung operations against the per-slice code they replaced (issue 29).

Tolerances: the masks are identical voxel for voxel (stricter than the Dice >= 0.99 and 1 %
of volume the speed-up was allowed), the gate's signals equal to 1e-9 and its verdicts the same;
on the real chest CT as on the phantoms.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from tests.support.factories import chest_phantom
from tests.support.tools import need
from worker.models.lung_ct.volume import pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold import gate
from worker.models.lung_ct_threshold.serve import segment_lungs
from worker.models.lung_ct_threshold.volume_ops import (
    IN_PLANE,
    close_and_fill_in_plane,
    fill_holes_in_plane,
    label_sizes,
    mean_index,
)
from worker.pipeline.loading import VolumeGeometry

DATA_DIR = Path(os.environ.get("MEDSEG_TEST_DATA_DIR", Path.home() / ".cache/medseg/data"))
Mask = npt.NDArray[np.bool_]


def _per_slice_fill(mask: Mask) -> Mask:
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]).astype(bool)


def _per_slice_close_and_fill(mask: Mask) -> Mask:
    closed = ndimage.binary_closing(mask, structure=IN_PLANE, iterations=2) | mask
    return _per_slice_fill(closed)


def _blobs(seed: int) -> Mask:
    """Rings, holes, specks and blobs cut by the array's edges."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(7, 64, 80)), sigma=(0, 3, 3))
    mask = noise > 0.02
    mask[2] = False  # an empty slice inside the stack
    mask[3, 20:40, 20:40] = True
    mask[3, 25:35, 25:35] = False  # a hole
    mask[3, 30, 30] = True  # a speck inside it
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_fill_and_close_equal_the_per_slice_scipy_code(seed: int) -> None:
    mask = _blobs(seed)
    assert np.array_equal(fill_holes_in_plane(mask), _per_slice_fill(mask))
    assert np.array_equal(close_and_fill_in_plane(mask, 2), _per_slice_close_and_fill(mask))
    inner = np.zeros((5, 90, 90), dtype=bool)  # away from the edges: the bounding box is used
    inner[:, 30:60, 30:60] = _blobs(seed)[1:6, 15:45, 15:45]
    assert np.array_equal(fill_holes_in_plane(inner), _per_slice_fill(inner))
    assert np.array_equal(close_and_fill_in_plane(inner, 2), _per_slice_close_and_fill(inner))


def test_empty_masks_stay_empty() -> None:
    empty = np.zeros((3, 8, 8), dtype=bool)
    assert not fill_holes_in_plane(empty).any()
    assert not close_and_fill_in_plane(empty, 2).any()


def test_mean_index_is_the_mean_of_the_voxel_indices() -> None:
    mask = _blobs(1)
    assert mean_index(mask) == pytest.approx(tuple(i.mean() for i in np.nonzero(mask)))


def _per_voxel_signals(
    left: Mask, right: Mask, hu: npt.NDArray[np.float32], geometry: VolumeGeometry
) -> tuple[float, float]:
    """side fraction and outside-body fraction as the per-voxel code computed them."""

    def patient_x(mask: Mask) -> npt.NDArray[np.float64]:
        slices, rows, cols = np.nonzero(mask)
        row_mm, col_mm = geometry.pixel_spacing
        x: npt.NDArray[np.float64] = (
            geometry.positions[slices, 0]
            + geometry.row_cosine[0] * cols * col_mm
            + geometry.column_cosine[0] * rows * row_mm
        )
        return x

    dense = hu > gate.BODY_HU
    labels, _ = ndimage.label(dense)
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    body = _per_slice_fill(largest)
    assert np.array_equal(body, gate.body_mask(hu))
    midline = float(np.mean(patient_x(body)))
    shares = [
        float(np.mean(sign * (patient_x(mask) - midline) > 0))
        for mask, sign in ((left, 1.0), (right, -1.0))
    ]
    lungs = left | right
    return min(shares), float((lungs & ~body).sum()) / float(lungs.sum())


def _check_signals(hu: npt.NDArray[np.float32], geometry: VolumeGeometry) -> None:
    left, right = segment_lungs(hu, geometry)
    signals = gate.signals(left, right, hu, geometry)
    side, outside = _per_voxel_signals(left, right, hu, geometry)
    assert signals.side_fraction == pytest.approx(side, abs=1e-9)
    assert signals.outside_body_fraction == pytest.approx(outside, abs=1e-9)
    assert gate.reasons(signals) == []  # the verdict: accepted, as before


def test_gate_signals_equal_the_per_voxel_code_on_a_phantom() -> None:
    phantom = chest_phantom(0)
    n = len(phantom.hu)
    geometry = VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=np.array([[-150.0, -120.0, k * phantom.slice_spacing] for k in range(n)]),
        pixel_spacing=(phantom.pixel_spacing, phantom.pixel_spacing),
    )
    _check_signals(phantom.hu.astype(np.float32), geometry)


def test_gate_signals_equal_the_per_voxel_code_on_a_real_chest_ct() -> None:
    path = DATA_DIR / "lung2_image.nrrd"
    need(f"{path} (make test-data)", path.exists())
    volume = read_nrrd(pyradiomics_case(DATA_DIR, "lung2"))
    _check_signals(volume.hu.astype(np.float32), volume.geometry)


def test_label_sizes_are_bincounts() -> None:
    rng = np.random.default_rng(4)
    for shape in [(7, 30, 40), (1, 5, 5), (3, 1, 200)]:
        labels, count = ndimage.label(rng.random(shape) < 0.4)
        expected = np.bincount(labels.ravel(), minlength=count + 1)
        np.testing.assert_array_equal(label_sizes(labels, count), expected)
    empty, count = ndimage.label(np.zeros((2, 3, 3), dtype=bool))
    np.testing.assert_array_equal(label_sizes(empty, count), [18])


def _reference_share_beyond(
    mask: Mask, geometry: VolumeGeometry, midline: float, sign: float
) -> float:
    """The broadcast over the mask's box that ``_share_beyond`` replaced."""
    rows_i, cols_i = np.nonzero(mask.any(axis=(0, 2)))[0], np.nonzero(mask.any(axis=(0, 1)))[0]
    slices_i = np.nonzero(mask.any(axis=(1, 2)))[0]
    box = (
        slice(slices_i[0], slices_i[-1] + 1),
        slice(rows_i[0], rows_i[-1] + 1),
        slice(cols_i[0], cols_i[-1] + 1),
    )
    row_mm, col_mm = geometry.pixel_spacing
    slices = geometry.positions[box[0], 0]
    rows = np.arange(box[1].start, box[1].stop) * (geometry.column_cosine[0] * row_mm)
    cols = np.arange(box[2].start, box[2].stop) * (geometry.row_cosine[0] * col_mm)
    x = slices[:, None, None] + cols[None, None, :] + rows[None, :, None]
    beyond = sign * (x - midline) > 0
    sub = mask[box]
    return float(np.count_nonzero(beyond & sub)) / float(np.count_nonzero(sub))


@pytest.mark.parametrize("oblique", [False, True])
def test_the_share_beyond_the_midline_is_the_broadcast_one(oblique: bool) -> None:
    rng = np.random.default_rng(8)
    mask = ndimage.gaussian_filter(rng.normal(size=(12, 40, 50)), 2) > 0.1
    turn = np.radians(20.0 if oblique else 0.0)
    row_cosine = np.array([np.cos(turn), np.sin(turn), 0.0])
    column_cosine = np.array([-np.sin(turn), np.cos(turn), 0.0])
    positions = np.array([[-20.0 + 0.3 * k, -15.0, 2.5 * k] for k in range(12)])
    geometry = VolumeGeometry(row_cosine, column_cosine, positions, (0.8, 0.7))
    for midline in (-5.0, 0.0, 3.3):
        for sign in (1.0, -1.0):
            assert gate._share_beyond(mask, geometry, midline, sign) == _reference_share_beyond(
                mask, geometry, midline, sign
            )
