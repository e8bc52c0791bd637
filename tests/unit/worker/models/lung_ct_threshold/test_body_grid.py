"""The gate's body mask on a grid of about the U-Net's input size (issue 29) against the
full-size body it replaced (``signals(..., step=1)``).

Tolerances, decided before the change: the side fraction within 0.005 and the outside-body
fraction within 0.002 (its threshold is 0.01; 1 % of the value for a mask far outside the
body, which the grid samples), every other signal equal (they do not use the body) and the
verdicts the same; on the two real chest CTs (both models' masks), on
phantoms at 512² and on phantoms made to fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.tools import need
from worker.models.lung_ct.phantoms import ChestPhantom, make_chest_phantom
from worker.models.lung_ct.serve import LungCtUNet
from worker.models.lung_ct.volume import pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold import gate
from worker.models.lung_ct_threshold.serve import segment_lungs, split_left_right
from worker.pipeline.loading import VolumeGeometry

DATA_DIR = Path(os.environ.get("MEDSEG_TEST_DATA_DIR", Path.home() / ".cache/medseg/data"))
Mask = npt.NDArray[np.bool_]


def _verdict(signals: gate.Signals) -> list[str]:
    """The reasons without the measured values they quote."""
    return [reason.split("(")[0] for reason in gate.reasons(signals)]


def _compare(left: Mask, right: Mask, hu: npt.NDArray[np.float32], g: VolumeGeometry) -> None:
    assert gate.body_step(hu.shape) == max(1, min(hu.shape[1:]) // gate.BODY_GRID)
    grid = gate.signals(left, right, hu, g)
    full = gate.signals(left, right, hu, g, step=1)
    assert grid.side_fraction == pytest.approx(full.side_fraction, abs=0.005)
    assert grid.outside_body_fraction == pytest.approx(
        full.outside_body_fraction, abs=0.002, rel=0.01
    )
    for name in ("left_right_ratio", "fov_fraction", "total_ml", "lung_height_mm", "max_jump"):
        assert getattr(grid, name) == getattr(full, name), name
    assert grid.gap_slices == full.gap_slices
    assert _verdict(grid) == _verdict(full)


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_real_chest_cts_both_models(case: str) -> None:
    path = pyradiomics_case(DATA_DIR, case)
    need(f"{path} (make test-data)", path.exists())
    volume = read_nrrd(path)
    hu = volume.hu.astype(np.float32)
    assert gate.body_step(hu.shape) == 4  # 512²: the grid is 128²
    _compare(*segment_lungs(hu, volume.geometry), hu, volume.geometry)
    unet = split_left_right(LungCtUNet("cpu").lungs(hu), volume.geometry)
    _compare(*unet, hu, volume.geometry)


def _phantom(seed: int) -> tuple[ChestPhantom, npt.NDArray[np.float32], VolumeGeometry]:
    p = make_chest_phantom(seed=seed, slices=24, size=512, pixel_spacing=0.7)
    x0, y0, z0 = p.origin
    positions = np.array([[x0, y0, z0 + k * p.slice_spacing] for k in range(len(p.hu))])
    geometry = VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(p.pixel_spacing, p.pixel_spacing),
    )
    return p, p.hu.astype(np.float32), geometry


@pytest.mark.parametrize("seed", [0, 1])
def test_phantoms_normal_and_made_to_fail(seed: int) -> None:
    p, hu, g = _phantom(seed)
    _compare(p.left_lung, p.right_lung, hu, g)
    assert gate.reasons(gate.signals(p.left_lung, p.right_lung, hu, g)) == []
    spill = p.left_lung.copy()
    spill[:, :, -80:] = True  # through the room air to the border
    _compare(spill, p.right_lung, hu, g)
    assert any(
        "outside the body" in r for r in gate.reasons(gate.signals(spill, p.right_lung, hu, g))
    )
    _compare(p.left_lung, np.zeros_like(p.right_lung), hu, g)
