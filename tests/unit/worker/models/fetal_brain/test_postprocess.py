"""The fetal brain clean-up: the post-processing recipe read from a checkpoint, the flip
average, and the localisation that keeps the brain and drops what the network also marks
on maternal tissue."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from worker.models.fetal_brain.predict import (
    PostProcess,
    clean_volume,
    search_region,
    segment_stack,
    stack_probabilities,
)

SPACING = (3.0, 1.0, 1.0)  # slice, row, column mm


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius_mm: float) -> Any:
    z, y, x = np.indices(shape).astype(float)
    d = ((z - centre[0]) * SPACING[0]) ** 2 + ((y - centre[1]) * SPACING[1]) ** 2
    return d + ((x - centre[2]) * SPACING[2]) ** 2 <= radius_mm**2


def _scene() -> tuple[npt.NDArray[np.float32], Any, Any]:
    """A confident brain-sized ball, and a lukewarm flat slab of 'maternal tissue' touching
    it through a thin bridge, larger in voxels than the brain."""
    shape = (24, 128, 128)
    brain = _ball(shape, (12, 50, 50), 30.0)
    slab = np.zeros(shape, dtype=bool)
    slab[4:20, 90:120, 5:125] = True
    bridge = np.zeros(shape, dtype=bool)
    bridge[11:13, 78:92, 49:51] = True
    p = np.zeros(shape, dtype=np.float32)
    p[slab | bridge] = 0.7
    p[brain] = 0.97
    return p, brain, slab


def test_recipe_comes_from_the_checkpoint_metadata_and_defaults_to_the_old_one() -> None:
    assert PostProcess.from_metadata({}) == PostProcess()
    assert PostProcess().core_mm == 0  # 1.0.0: the largest component, no localisation
    given = {"postprocess": {"flips": True, "core_mm": 6.0, "margin_mm": 8.0, "unknown": 1}}
    recipe = PostProcess.from_metadata(given)
    assert (recipe.flips, recipe.core_mm, recipe.margin_mm) == (True, 6.0, 8.0)
    assert PostProcess.from_metadata({"postprocess": recipe.as_dict()}) == recipe


def test_the_largest_component_alone_keeps_the_slab_the_localisation_drops_it() -> None:
    p, brain, slab = _scene()
    assert slab.sum() > brain.sum()
    plain = clean_volume(p)
    assert (plain & slab).sum() == slab.sum()  # brain, bridge and slab are one component

    region = search_region(p, SPACING, PostProcess(core_mm=6.0, margin_mm=8.0))
    assert region is not None
    kept = clean_volume(np.where(region, p, 0).astype(np.float32))
    assert (kept & brain).sum() == brain.sum()
    assert (kept & slab).sum() < 0.02 * slab.sum()


def test_no_deep_component_means_no_region() -> None:
    p = np.zeros((4, 32, 32), dtype=np.float32)
    p[:, 10:12, 10:12] = 0.9  # a 2 mm wide streak: nothing 6 mm deep
    assert search_region(p, SPACING, PostProcess(core_mm=6.0)) is None


class _Echo:
    """A predictor stand-in whose 'probability' is the frame itself over 255: a flip
    average of a symmetric operation gives the same map back."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {"postprocess": {"flips": True, "core_mm": 6.0}}

    def probabilities(self, images: list[Any]) -> list[Any]:
        return [np.asarray(i, dtype=np.float32) / 255 for i in images]


def test_flip_average_returns_maps_in_the_stack_orientation() -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (3, 40, 56)).astype(np.uint8)
    averaged = stack_probabilities(_Echo(), stack, flips=True)  # type: ignore[arg-type]
    # transposing a non-square slice and back, and each flip and back, restore the pixels
    assert averaged.shape == stack.shape
    np.testing.assert_allclose(averaged, stack / 255, atol=1e-6)


def test_segment_stack_localises_only_with_spacing() -> None:
    p, _, slab = _scene()
    image = (p * 255).astype(np.uint8).astype(np.float32)
    image[0, 0, 0] = 255  # the 99.5th percentile scaling keeps the values
    with_spacing = segment_stack(_Echo(), image, SPACING)  # type: ignore[arg-type]
    assert (with_spacing.mask & slab).sum() < 0.02 * slab.sum()
    assert with_spacing.outside.sum() > 0.9 * slab.sum()
    without = segment_stack(_Echo(), image)  # type: ignore[arg-type]
    assert (without.mask & slab).sum() > 0.9 * slab.sum()
