"""The fetal brain clean-up: the post-processing recipe read from a checkpoint, the flip
average, and the localisation that keeps the brain and drops what the network also marks
on maternal tissue."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from worker.models.fetal_brain.predict import (
    PostProcess,
    brain_core,
    clean_volume,
    near,
    segment_stack,
    stack_probabilities,
    window_probabilities,
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

    core = brain_core(p, SPACING, PostProcess(core_mm=6.0, margin_mm=8.0))
    assert core is not None
    region = near(core, SPACING, 6.0 + 8.0)  # core_mm + margin_mm
    kept = clean_volume(np.where(region, p, 0).astype(np.float32))
    assert (kept & brain).sum() == brain.sum()
    assert (kept & slab).sum() < 0.02 * slab.sum()


def test_no_deep_component_means_no_region() -> None:
    p = np.zeros((4, 32, 32), dtype=np.float32)
    p[:, 10:12, 10:12] = 0.9  # a 2 mm wide streak: nothing 6 mm deep
    assert brain_core(p, SPACING, PostProcess(core_mm=6.0)) is None


class _Echo:
    """A predictor stand-in whose 'probability' is the frame itself over 255: a flip
    average of a symmetric operation gives the same map back."""

    in_channels = 1  # one slice at a time (UNetPredictor's, from its checkpoint)

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


def test_a_window_is_cut_around_the_centre_padded_beyond_the_field_and_pasted_back() -> None:
    stack = np.arange(2 * 30 * 40, dtype=np.uint8).reshape(2, 30, 40)
    seen: list[Any] = []

    def predict(window: Any) -> Any:
        seen.append(window)
        return np.ones(window.shape, dtype=np.float32)

    # 20 mm at 1 x 2 mm pixels: 20 rows x 10 columns, centred on row 5, column 36
    out = window_probabilities(predict, stack, (5.0, 36.0), (1.0, 2.0), 20.0)
    assert seen[0].shape == (2, 20, 10)
    assert seen[0][0, 5, 0] == stack[0, 0, 31]  # row 0 of the field is row 5 of the window
    assert (seen[0][:, :5] == 0).all() and (seen[0][:, :, 9:] == 0).all()  # padding
    assert out.shape == stack.shape
    assert out[:, :15, 31:].all() and out.sum() == 2 * 15 * 9


class _Window:
    """A second stage that marks every pixel of the window it is given but its border."""

    in_channels = 1

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}

    def probabilities(self, images: list[Any]) -> list[Any]:
        out = []
        for i in images:
            p = np.zeros(i.shape, dtype=np.float32)
            p[2:-2, 2:-2] = 1.0
            out.append(p)
        return out


def test_the_second_stage_replaces_the_first_within_reach_of_the_core() -> None:
    p, brain, slab = _scene()
    image = (p * 255).astype(np.uint8).astype(np.float32)
    image[0, 0, 0] = 255
    recipe = PostProcess(core_mm=6.0, margin_mm=8.0, window_mm=40.0, refine_margin_mm=12.0)
    refined = segment_stack(_Echo(), image, SPACING, recipe, _Window())  # type: ignore[arg-type]
    # the window (40 mm around the brain's centre, minus its border) within 18 mm of the
    # core: the first stage's probabilities no longer decide, the slab stays out
    window = np.zeros(p.shape, dtype=bool)
    window[:, 32:68, 32:68] = True
    assert refined.mask[window & brain].all()
    assert not refined.mask[~window].any()
    assert (refined.mask & slab).sum() == 0
    assert refined.outside.sum() > 0.9 * slab.sum()
    # the first stage's localised brain (the ball) against the second's (the window's square)
    first = brain
    expected = 2 * (first & refined.mask).sum() / (first.sum() + refined.mask.sum())
    assert refined.stage_agreement == pytest.approx(expected, abs=0.02)
    assert segment_stack(_Echo(), image, SPACING, recipe).stage_agreement is None  # type: ignore[arg-type]
    assert refined.cut_share < 0.05  # the second stage's brain ends (nearly) inside the reach
    # a reach of 2 mm: the second stage's brain goes on past the kept region's edge
    short = replace(recipe, refine_margin_mm=2.0)
    cut = segment_stack(_Echo(), image, SPACING, short, _Window())  # type: ignore[arg-type]
    assert cut.mask.sum() < refined.mask.sum() and cut.cut_share > 0.5


def test_reach_cut_is_the_share_of_the_surface_touching_the_brain_beyond() -> None:
    from worker.models.fetal_brain.predict import reach_cut

    mask = np.zeros((10, 20, 20), dtype=bool)
    mask[2:8, 5:15, 5:15] = True  # a 6x10x10 box: 600 voxels, 4x8x8 inside, 344 on its surface
    assert reach_cut(mask, np.zeros_like(mask)) == 0.0
    assert reach_cut(np.zeros_like(mask), mask) == 0.0
    beyond = np.zeros_like(mask)
    beyond[8:, 5:15, 5:15] = True  # the brain goes on past the last slice only
    assert reach_cut(mask, beyond) == pytest.approx(100 / 344)  # the last slice's 100


def test_the_two_stage_candidate_serves_a_stack_with_both_its_checkpoints() -> None:
    from pathlib import Path

    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
    from worker.models.fetal_brain.predict import StackSegmenter

    weights = Path(__file__).parents[5] / "worker/models/fetal_brain/candidates"
    segmenter = StackSegmenter(weights / "fetal_brain_unet.pt")
    assert segmenter.refiner is not None  # named by the first stage's recipe, sha256-checked
    assert "NOT FOR CLINICAL USE" in segmenter.predictor.metadata["status"]
    stack = make_fetal_brain_stack(820001).central(12)  # 12 of 31 slices: the suite's time
    spacing = (stack.slice_mm, stack.pixel_mm, stack.pixel_mm)
    served = segmenter.segment(stack.image, spacing)
    assert served.stage_agreement is not None and 0.0 <= served.stage_agreement <= 1.0
    assert served.mask.any() and (served.mask & stack.brain).sum() > 0.5 * stack.brain.sum()


def test_a_localiser_bounds_where_the_core_is_looked_for_and_outside_still_counts() -> None:
    from worker.models._nn.metrics import dice

    p, brain, slab = _scene()
    p[slab] = 0.97  # a look-alike as confident as the brain, with more deep mass
    image = (p * 255).astype(np.uint8).astype(np.float32)
    image[0, 0, 0] = 255
    recipe = PostProcess(core_mm=6.0, margin_mm=8.0, locator_margin_mm=5.0)
    alone = segment_stack(_Echo(), image, SPACING, recipe)  # type: ignore[arg-type]
    assert (alone.mask & slab).sum() > 0.5 * slab.sum()  # the look-alike's core wins
    seen: list[Any] = []

    def region(stack: Any) -> Any:
        seen.append(stack)
        return brain.astype(np.float32)

    located = segment_stack(_Echo(), image, SPACING, recipe, locator=region)  # type: ignore[arg-type]
    assert seen[0].dtype == np.uint8 and seen[0].shape == p.shape  # the 8-bit stack
    assert dice(located.mask, brain) > 0.95 and not (located.mask & slab).any()
    assert located.outside.sum() > 0.9 * slab.sum()  # what the first stage marked elsewhere
    empty = np.zeros(p.shape, np.float32)
    nothing = segment_stack(_Echo(), image, SPACING, recipe, locator=lambda s: empty)  # type: ignore[arg-type]
    assert (nothing.mask == alone.mask).all()  # an empty region bounds nothing


class _Blind(_Echo):
    """A first stage that never marks ``blind`` (per slice, in stack order; no flips)."""

    def __init__(self, blind: Any) -> None:
        super().__init__()
        self.keep = (~blind).astype(np.float32)

    def probabilities(self, images: list[Any]) -> list[Any]:
        return [p * k for p, k in zip(super().probabilities(images), self.keep, strict=True)]


def test_ensemble_members_average_so_a_blob_one_member_marks_falls_below_the_threshold() -> None:
    from worker.models._nn.metrics import dice

    p, brain, slab = _scene()
    p[slab] = 0.9  # a look-alike nearly as confident as the brain, with more deep mass
    image = (p * 255).astype(np.uint8).astype(np.float32)
    recipe = PostProcess(core_mm=6.0, margin_mm=8.0, members=("other.pt",))
    assert PostProcess.from_metadata({"postprocess": recipe.as_dict()}) == recipe
    alone = segment_stack(_Echo(), image, SPACING, recipe)  # type: ignore[arg-type]
    assert (alone.mask & slab).sum() > 0.5 * slab.sum()  # the look-alike's core wins alone
    # a member that never marks the slab halves its probability there, below 0.5
    both = segment_stack(_Echo(), image, SPACING, recipe, members=[_Blind(slab)])  # type: ignore[list-item, arg-type]
    assert dice(both.mask, brain) > 0.95 and not (both.mask & slab).any()
    assert not (both.outside & slab).any()  # the slab is no longer marked at all


def test_an_ensemble_first_stage_is_served_from_its_member_files(tmp_path: Any) -> None:
    from pathlib import Path

    from worker.models._nn.checkpoint import read_metadata
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
    from worker.models.fetal_brain.predict import StackSegmenter
    from worker.models.fetal_brain.score_pairs import CANDIDATE, served_pair

    refine = CANDIDATE.with_name("fetal_brain_refine.pt")
    recipe = dict(read_metadata(CANDIDATE)["postprocess"])
    pair = served_pair(CANDIDATE, refine, recipe, Path(tmp_path) / "one")
    twice = served_pair(Path(f"{CANDIDATE}+{CANDIDATE}"), refine, recipe, Path(tmp_path) / "two")
    assert read_metadata(twice)["postprocess"]["members"] == ["member1.pt"]
    assert (Path(tmp_path) / "two" / "member1.pt").read_bytes() == CANDIDATE.read_bytes()
    single, double = StackSegmenter(pair), StackSegmenter(twice)
    assert len(single.members) == 0 and len(double.members) == 1
    assert set(double.checkpoints) == {"first", "member1", "refine"}  # each one's sha256
    assert double.checkpoints["member1"] == double.checkpoints["first"] == single.sha256
    stack = make_fetal_brain_stack(820001).central(8)  # any stack will do: the suite's time
    spacing = (stack.slice_mm, stack.pixel_mm, stack.pixel_mm)
    # a checkpoint averaged with itself is itself: the same mask, voxel for voxel
    once, averaged = single.segment(stack.image, spacing), double.segment(stack.image, spacing)
    assert (once.mask == averaged.mask).all()
