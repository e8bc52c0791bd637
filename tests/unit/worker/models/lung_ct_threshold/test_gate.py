"""The lung CT quality gate: normal phantoms and the real pyradiomics CTs pass; one lung, a mask
outside the body, a gap or a jump between slices, an implausible volume are flagged; a flagged
series comes back from ``predict`` with review reasons."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.support.factories import chest_phantom, chest_series
from tests.support.tools import need
from worker.models.lung_ct.phantoms import ChestPhantom, make_chest_phantom, write_chest_series
from worker.models.lung_ct.volume import pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold.gate import (
    DEFAULT_THRESHOLDS,
    Signals,
    body_mask,
    reasons,
    signals,
)
from worker.models.lung_ct_threshold.serve import SPEC, segment_lungs
from worker.pipeline.loading import VolumeGeometry, load_series

DATA_DIR = Path(os.environ.get("MEDSEG_TEST_DATA_DIR", Path.home() / ".cache/medseg/data"))


def _geometry(p: ChestPhantom) -> VolumeGeometry:
    x0, y0, z0 = p.origin
    positions = np.array([[x0, y0, z0 + k * p.slice_spacing] for k in range(len(p.hu))])
    return VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(p.pixel_spacing, p.pixel_spacing),
    )


def _judge(p: ChestPhantom, left: np.ndarray, right: np.ndarray) -> list[str]:
    return reasons(signals(left, right, p.hu.astype(np.float32), _geometry(p)))


def _codes(why: list[str]) -> set[str]:
    return {r.split("(")[0].strip() for r in why}


@pytest.mark.parametrize("seed", [2000, 2001, 2002])
def test_full_size_phantoms_pass(seed: int) -> None:
    p = make_chest_phantom(seed=seed)
    assert _judge(p, p.left_lung, p.right_lung) == []


@pytest.mark.parametrize("slices", [4, 6, 8, 10, 12, 20, 24])
def test_the_short_phantoms_other_tests_send_pass_with_the_threshold_model(slices: int) -> None:
    """Other tests expect these series to succeed: the gate must not flag them."""
    for seed in range(3):
        p = chest_phantom(seed, slices)
        left, right = segment_lungs(p.hu.astype(np.float32), _geometry(p))
        assert _judge(p, left, right) == [], (slices, seed)


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_the_real_chest_cts_pass(case: str) -> None:
    path = pyradiomics_case(DATA_DIR, case)
    need(f"{path} (make test-data)", path.exists())
    volume = read_nrrd(path)
    hu = volume.hu.astype(np.float32)
    left, right = segment_lungs(hu, volume.geometry)
    s = signals(left, right, hu, volume.geometry)
    assert reasons(s) == [], s


def test_one_lung_missing_is_flagged() -> None:
    p = chest_phantom(0, 24)
    why = _codes(_judge(p, p.left_lung, np.zeros_like(p.right_lung)))
    assert "two lungs not found on their own sides" in why
    assert "left/right lung volume ratio implausible" in why


def test_one_lung_cut_in_two_is_flagged() -> None:
    """The left/right split of a single lung: both parts on the same side."""
    p = chest_phantom(0, 24)
    upper, lower = p.right_lung.copy(), p.right_lung.copy()
    upper[:12], lower[12:] = False, False
    assert "two lungs not found on their own sides" in _codes(_judge(p, upper, lower))


def test_a_mask_spilling_outside_the_body_is_flagged() -> None:
    p = chest_phantom(0, 24)
    spill = p.left_lung.copy()
    spill[:, :, -20:] = True  # to the image border, through the room air
    assert "lung mask outside the body" in _codes(_judge(p, spill, p.right_lung))


def test_the_body_mask_encloses_the_lungs_and_not_the_room_air() -> None:
    p = chest_phantom(0, 24)
    body = body_mask(p.hu.astype(np.float32))
    assert body[p.left_lung | p.right_lung].all()
    assert not body[:, 0, :].any() and not body[:, :, 0].any()


def test_a_gap_between_slices_is_flagged() -> None:
    p = chest_phantom(0, 24)
    left, right = p.left_lung.copy(), p.right_lung.copy()
    left[12] = right[12] = False
    why = _codes(_judge(p, left, right))
    assert {"lung mask has gaps between slices", "lung area jumps between slices"} <= why


def test_a_slice_losing_half_its_lung_is_flagged() -> None:
    p = chest_phantom(0, 24)
    left = p.left_lung.copy()
    left[12, :, : left.shape[2] * 3 // 4] = False  # keep the lateral part only
    assert "lung area jumps between slices" in _codes(_judge(p, left, p.right_lung))


def test_implausible_volumes_are_flagged() -> None:
    normal = Signals(1.0, 0.85, 0.12, 3000.0, 250.0, 0.0, 0, 0.05)
    assert reasons(normal) == []
    small_adult = replace(normal, total_ml=600.0)
    assert "lung volume outside the adult range" in _codes(reasons(small_adult))
    # The same volume over a short stack (partial coverage, a test phantom): not judged in mL.
    assert reasons(replace(small_adult, lung_height_mm=100.0)) == []
    assert "lung volume outside the adult range" in _codes(reasons(replace(normal, total_ml=12e3)))
    for fraction in (0.01, 0.6):
        why = reasons(replace(normal, fov_fraction=fraction))
        assert _codes(why) == {"lung volume implausible for the field of view"}
    assert DEFAULT_THRESHOLDS.max_gap_slices == 0


def test_predict_puts_the_gate_in_review_and_extras(tmp_path: Path) -> None:
    model = SPEC.load("cpu")
    normal = model.predict(load_series(chest_series(tmp_path / "a", 0, slices=24)))
    assert normal.review == []
    quality = normal.extras["quality"]
    assert isinstance(quality, dict) and quality["side_fraction"] == 1.0

    p = make_chest_phantom(seed=0, slices=24, size=128, pixel_spacing=2.6)
    rng = np.random.default_rng(0)
    p.hu[p.right_lung] = (40 + rng.normal(0, 18, int(p.right_lung.sum()))).astype(np.int16)
    flagged = model.predict(load_series(write_chest_series(p, tmp_path / "b")))
    assert "two lungs not found on their own sides" in _codes(flagged.review)
