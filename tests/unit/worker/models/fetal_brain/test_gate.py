"""The fetal brain quality gate: normal phantom stacks pass; an empty stack, a fragmented
prediction, a gap or a jump between slices, an implausible volume are flagged; flagged stacks
come back from ``predict`` with review reasons, not as failures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from worker.core.registry import get_spec
from worker.models.fetal_brain.gate import DEFAULT_THRESHOLDS, Signals, reasons, signals
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import FetalBrainStack, make_fetal_brain_stack
from worker.pipeline.loading import VolumeGeometry, load_series

HELD_OUT = 820000  # training used seeds 0-499
SMALL = 820064  # held out too: 21 slices of 192x192 for the served runs (the suite's time)


def _geometry(stack: FetalBrainStack) -> VolumeGeometry:
    positions = np.array([[0.0, 0.0, k * stack.slice_mm] for k in range(len(stack.image))])
    return VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(stack.pixel_mm, stack.pixel_mm),
    )


def _codes(why: list[str]) -> set[str]:
    return {r.split("(")[0].strip() for r in why}


def _middle_brain_slice(brain: np.ndarray) -> int:
    present = np.nonzero(brain.any(axis=(1, 2)))[0]
    return int(present[len(present) // 2])


@pytest.mark.parametrize("seed", range(HELD_OUT, HELD_OUT + 6))
def test_phantom_brains_pass(seed: int) -> None:
    stack = make_fetal_brain_stack(seed)
    assert reasons(signals(stack.brain, stack.brain, _geometry(stack))) == []


def test_an_empty_prediction_is_no_brain_found() -> None:
    empty = np.zeros((20, 64, 64), dtype=bool)
    stack = make_fetal_brain_stack(HELD_OUT)
    assert signals(empty, empty, _geometry(replace(stack, image=stack.image[:20]))) is None
    assert reasons(None) == ["no fetal brain found"]


def test_marking_tissue_beyond_the_search_region_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    g = _geometry(stack)
    none = np.zeros_like(stack.brain)
    s = signals(stack.brain, stack.brain, g, none)
    assert s is not None and s.outside_ratio == 0 and reasons(s) == []
    elsewhere = np.zeros_like(stack.brain)
    elsewhere[:, : stack.brain.shape[1] // 2, :] = True  # half the field: a look-alike
    elsewhere &= ~stack.brain
    s = signals(stack.brain, stack.brain, g, elsewhere)
    assert s is not None and s.outside_ratio > DEFAULT_THRESHOLDS.max_outside_ratio
    assert "the network also marked tissue away from the brain it kept" in _codes(reasons(s))


def test_two_stages_that_disagree_are_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    g = _geometry(stack)
    s = signals(stack.brain, stack.brain, g, stage_agreement=0.95)
    assert s is not None and reasons(s) == []
    s = signals(stack.brain, stack.brain, g, stage_agreement=0.7)
    assert s is not None and s.stage_agreement == 0.7
    assert "the two stages disagree on the brain's extent" in _codes(reasons(s))
    without = signals(stack.brain, stack.brain, g)  # one stage: nothing to compare
    assert without is not None and without.stage_agreement == 1.0


def test_an_outline_drawn_by_the_localisations_reach_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    g = _geometry(stack)
    s = signals(stack.brain, stack.brain, g, stage_agreement=0.95, cut_share=0.1)
    assert s is not None and reasons(s) == []
    s = signals(stack.brain, stack.brain, g, stage_agreement=0.95, cut_share=0.6)
    assert s is not None and s.cut_share == 0.6
    why = reasons(s)
    assert why and why[0].startswith("the brain's outline was drawn by the localisation's reach")


def test_a_fragmented_prediction_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    raw = stack.brain.copy()
    raw[:, :12, :12] = True  # blobs the clean-up throws away
    s = signals(raw, stack.brain, _geometry(stack))
    assert s is not None and s.fragment_ratio > DEFAULT_THRESHOLDS.max_fragment_ratio
    assert "brain prediction fragmented" in _codes(reasons(s))


def test_a_gap_between_slices_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT + 1)
    brain = stack.brain.copy()
    brain[_middle_brain_slice(brain)] = False
    why = _codes(reasons(signals(brain, brain, _geometry(stack))))
    assert {"brain mask has gaps between slices", "brain area jumps between slices"} <= why


def test_a_slice_leaking_beyond_its_neighbours_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT + 1)
    brain = stack.brain.copy()
    k = _middle_brain_slice(brain)
    brain[k] = np.roll(brain[k], 40, axis=1) | brain[k] | np.roll(brain[k], -40, axis=1)
    assert "brain area jumps between slices" in _codes(
        reasons(signals(brain, brain, _geometry(stack)))
    )


def test_implausible_volumes_are_flagged() -> None:
    normal = Signals(0.0, 150.0, 0.02, 0, 0.02)
    assert reasons(normal) == []
    for volume in (8.0, 1700.0):  # a speck; an adult brain (Colin27's is about 1,700 mL)
        assert _codes(reasons(replace(normal, volume_ml=volume))) == {
            "brain volume outside the fetal range"
        }
    for fraction in (0.0005, 0.5):
        assert _codes(reasons(replace(normal, fov_fraction=fraction))) == {
            "brain volume implausible for the field of view"
        }


def test_predict_flags_an_empty_stack_and_a_missing_slice(tmp_path: Path) -> None:
    model = get_spec("fetal-brain-unet").load("cpu")
    stack = make_fetal_brain_stack(SMALL, plane="TRA")
    blank = replace(stack, image=np.full_like(stack.image, 300))
    empty = model.predict(load_series(write_mr_stack(blank, tmp_path / "empty")))
    assert empty.review == ["no fetal brain found"] and empty.extras["quality"] is None
    assert empty.extras["weights"] == {"first": model.weights_sha256}  # 1.0.0: one checkpoint

    image = stack.image.copy()
    image[_middle_brain_slice(stack.brain)] = 0  # a lost slice
    gap = model.predict(load_series(write_mr_stack(replace(stack, image=image), tmp_path / "gap")))
    # The lost slice cuts the brain in two; the clean-up keeps the larger part, and the gate
    # sees what it discarded.
    assert "brain prediction fragmented" in _codes(gap.review)
    quality = gap.extras["quality"]
    assert isinstance(quality, dict) and quality["fragment_ratio"] > 0.3


def test_a_brain_cut_by_the_field_of_view_is_flagged() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    rows = np.nonzero(stack.brain.any(axis=(0, 2)))[0]
    middle = (rows[0] + rows[-1]) // 2
    cut = stack.brain[:, middle:]  # the image's top edge runs through the brain
    s = signals(cut, cut, _geometry(replace(stack, image=stack.image[:, middle:])))
    assert s is not None and s.edge_fraction > DEFAULT_THRESHOLDS.max_edge_fraction
    assert "brain cut by the field of view" in _codes(reasons(s))


def test_a_stack_ending_in_the_brains_widest_part_is_flagged_a_partial_one_is_not() -> None:
    stack = make_fetal_brain_stack(HELD_OUT)
    areas = stack.brain.sum(axis=(1, 2))
    widest = int(np.argmax(areas))
    half = stack.brain[: widest + 1]
    s = signals(half, half, _geometry(replace(stack, image=stack.image[: widest + 1])))
    assert s is not None and s.end_slice_fraction == 1.0
    assert "stack ends inside the brain's widest part" in _codes(reasons(s))
    # Ending where the brain is a third of its widest, as real stacks do, is accepted.
    present = np.nonzero(areas)[0]
    last = next(i for i in present[::-1] if areas[i] >= areas.max() / 3)
    partial = stack.brain[: last + 1]
    s = signals(partial, partial, _geometry(replace(stack, image=stack.image[: last + 1])))
    assert s is not None and s.end_slice_fraction < DEFAULT_THRESHOLDS.max_end_slice_fraction
    assert reasons(s) == []
