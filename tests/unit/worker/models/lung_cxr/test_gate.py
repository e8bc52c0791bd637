"""The chest radiograph quality gate on phantom lung fields: passes them, flags them altered
(a lung removed, fields merged, a field at the border, fragments, a box off the lungs), and
its thresholds fitted from out-of-fold signals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from worker.models.lung_cxr.gate import (
    DEFAULT_THRESHOLDS,
    Signals,
    Thresholds,
    box_reason,
    boxes_outside,
    reasons,
    signals,
)
from worker.models.lung_cxr.gate_fit import BOUNDS, fit_thresholds, gate_entry
from worker.models.lung_cxr.phantoms import make_chest_xray


def _prob(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    return np.where(mask, 0.97, 0.02).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_phantom_lung_fields_pass(seed: int) -> None:
    p = make_chest_xray(seed)
    s = signals(_prob(p.lungs), p.right_lung, p.left_lung)
    assert s.fields == 2 and s.side_purity > 0.95
    assert reasons(s) == []


def test_a_missing_lung_is_flagged() -> None:
    p = make_chest_xray(1)
    empty = np.zeros_like(p.left_lung)
    s = signals(_prob(p.right_lung), p.right_lung, empty)
    found = reasons(s)
    assert any(r.startswith("lung fields merged or one missing") for r in found)
    assert any(r.startswith("right/left lung field ratio implausible") for r in found)


def test_fields_at_the_border_and_fragments_are_flagged() -> None:
    p = make_chest_xray(2)
    right = p.right_lung.copy()
    right[:, :40] |= right.any(axis=1)[:, None]  # the right field spills to the left edge
    s = signals(_prob(right | p.left_lung), right, p.left_lung)
    assert any(r.startswith("a lung field touches the image border") for r in reasons(s))
    specks = np.zeros_like(p.lungs)
    specks[5:60, p.lungs.shape[1] // 2 - 30 : p.lungs.shape[1] // 2 + 30] = True  # the neck
    s = signals(_prob(p.lungs | specks), p.right_lung, p.left_lung)
    assert s.fields == 3
    found = reasons(s)
    assert any(r.startswith("more than two fields") for r in found)
    assert any(r.startswith("lung-like regions outside the two fields") for r in found)


def test_a_field_across_the_midline_is_flagged() -> None:
    p = make_chest_xray(3)
    cols = p.lungs.shape[1]
    shifted = np.roll(p.right_lung, cols // 4, axis=1)  # the right field pushed across
    s = signals(_prob(shifted | p.left_lung), shifted, p.left_lung & ~shifted)
    assert any(r.startswith("a lung field crosses the midline") for r in reasons(s))


def test_calibrated_areas_are_checked_against_adult_bounds() -> None:
    p = make_chest_xray(0)
    s = signals(_prob(p.lungs), p.right_lung, p.left_lung)
    assert reasons(s, field_cm2=(180.0, 150.0)) == []
    found = reasons(s, field_cm2=(12.0, 150.0))
    assert found == ["right lung field area implausible for an adult (12 cm², accepted 40-600 cm²)"]


def test_opacity_boxes_must_lie_in_a_lung_field() -> None:
    p = make_chest_xray(4, opacities=1)
    assert p.boxes and boxes_outside(p.boxes, p.lungs) == 0
    cols = p.lungs.shape[1]
    off = (cols / 2 - 10, 2.0, cols / 2 + 10, 20.0)  # the neck, between the apices
    assert boxes_outside([*p.boxes, off], p.lungs) == 1
    assert box_reason(1, 2) == ["opacity box outside the lung fields (1 of 2)"]
    assert box_reason(0, 2) == []


def _signals(**changes: float) -> Signals:
    base = dict(
        fields=2,
        side_purity=0.99,
        area_fraction=0.3,
        right_left_ratio=1.1,
        border_fraction=0.0,
        confidence=0.95,
        fragment_ratio=0.0,
    )
    return Signals(**{**base, **changes})  # type: ignore[arg-type]


def test_fitted_thresholds_bracket_the_good_films_and_stay_in_bounds() -> None:
    rng = np.random.default_rng(0)
    good = [
        _signals(
            area_fraction=float(rng.uniform(0.22, 0.38)),
            right_left_ratio=float(rng.uniform(0.95, 1.3)),
            confidence=float(rng.uniform(0.93, 0.98)),
        )
        for _ in range(20)
    ]
    t = fit_thresholds(good)
    assert all(reasons(s, t) == [] for s in good)
    for name, (lo, hi) in BOUNDS.items():
        assert lo <= getattr(t, name) <= hi
    with pytest.raises(ValueError, match="too few"):
        fit_thresholds(good[:5])
    entry = gate_entry([*good, _signals(fields=1)], [0.97] * 20 + [0.5])
    assert entry["out_of_fold_flagged"] == "1 of 21"
    assert entry["fitted_on"].startswith("20 of 21 films")
    assert Thresholds.from_metadata(entry).as_dict() == t.as_dict()
    assert Thresholds.from_metadata(None) == DEFAULT_THRESHOLDS
