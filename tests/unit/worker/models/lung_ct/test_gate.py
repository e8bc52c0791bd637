"""The U-Net runs the shared lung CT quality gate (worker.models.lung_ct_threshold.gate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.factories import chest_series
from worker.core.registry import get_spec
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series
from worker.pipeline.loading import load_series


def test_a_one_lung_series_comes_back_flagged_and_a_normal_one_accepted(tmp_path: Path) -> None:
    model = get_spec("lung-ct-unet").load("cpu")
    normal = model.predict(load_series(chest_series(tmp_path / "a", 1, slices=20)))
    assert normal.review == [] and isinstance(normal.extras["quality"], dict)

    p = make_chest_phantom(seed=1, slices=24, size=128, pixel_spacing=2.6)
    rng = np.random.default_rng(0)
    p.hu[p.right_lung] = (40 + rng.normal(0, 18, int(p.right_lung.sum()))).astype(np.int16)
    flagged = model.predict(load_series(write_chest_series(p, tmp_path / "b")))
    codes = {r.split("(")[0].strip() for r in flagged.review}
    assert "two lungs not found on their own sides" in codes
    quality = flagged.extras["quality"]
    assert isinstance(quality, dict) and quality["side_fraction"] < 0.9
