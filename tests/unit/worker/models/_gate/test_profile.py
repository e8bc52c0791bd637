"""Per-slice area profile signals: gaps and jumps inside the extent, smooth ends allowed."""

from __future__ import annotations

import numpy as np
import pytest

from worker.models._gate.profile import MIN_JUDGED_SLICES, profile, slice_areas


def _ellipsoid_areas(slices: int) -> np.ndarray:
    z = np.linspace(-1, 1, slices + 2)[1:-1]
    return np.clip(1 - z**2, 0, None) * 1000


def test_a_smooth_profile_has_no_gap_and_a_small_jump() -> None:
    p = profile(np.concatenate([[0, 0], _ellipsoid_areas(30), [0]]))
    assert p.gap_slices == 0 and p.max_jump < 0.01 and p.extent_slices == 30


def test_an_empty_slice_inside_is_a_gap_and_a_jump() -> None:
    areas = _ellipsoid_areas(30)
    areas[15] = 0
    p = profile(areas)
    assert p.gap_slices == 1
    assert p.max_jump == pytest.approx(1.0, abs=0.02) and p.jump_slice == 15


def test_a_slice_that_leaks_is_a_jump() -> None:
    areas = _ellipsoid_areas(30)
    areas[5] *= 1.8
    p = profile(areas)
    assert p.max_jump > 0.3 and p.jump_slice == 5


def test_empty_and_short_profiles_are_not_judged() -> None:
    assert profile(np.zeros(10)) == profile([])
    assert profile([0, 300, 1000, 1000, 300, 0]).max_jump == 0.0  # 4 slices < MIN_JUDGED_SLICES
    assert MIN_JUDGED_SLICES == 5


def test_slice_areas_count_voxels_per_slice() -> None:
    mask = np.zeros((3, 4, 4), bool)
    mask[1, :2, :3] = True
    assert slice_areas(mask).tolist() == [0.0, 6.0, 0.0]
