"""Fetal brain inference on one stack: normalise, per-slice U-Net (optionally averaged over
flips), then the clean-up: an optional localisation to the most confident brain-like blob,
the largest 3D component, holes filled.

The post-processing recipe travels with the weights (the checkpoint's ``postprocess``
metadata, :class:`PostProcess`), so a checkpoint is served the way it was validated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._nn.metrics import dice
from worker.models._nn.predictor import UNetPredictor
from worker.models.fetal_brain.context import with_context
from worker.models.fetal_brain.convention import of_checkpoint
from worker.pipeline.geometry import VolumeGeometry

Mask = npt.NDArray[np.bool_]
#: A stack of the service's 8-bit scaling to the brain's probability at every voxel.
Region = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
Spacing = tuple[float, float, float]  # (slice, row, column) mm
_CONNECTED = np.ones((3, 3, 3), dtype=bool)


def normalise_stack(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A stack to uint8 by its 99.5th percentile (MR intensities have no fixed scale)."""
    data = np.asarray(image, dtype=np.float32)
    top = float(np.percentile(data, 99.5)) or 1.0
    scaled: npt.NDArray[np.uint8] = np.clip(data / top * 255.0, 0, 255).astype(np.uint8)
    return scaled


@dataclass(frozen=True)
class PostProcess:
    """How a checkpoint's probabilities become a brain mask.

    ``flips``: average the probabilities over the slice as given, flipped left-right,
    flipped up-down and transposed (the training augmentations). ``core_mm`` > 0 turns on
    the localisation: the thresholded prediction is eroded by ``core_mm`` (in mm, so it
    parts blobs joined by thin bridges), the deep component with the most probability mass
    is taken as the brain's core, and only what lies within ``core_mm + margin_mm`` of it is
    kept. 0 (1.0.0's recipe) keeps the largest component of the whole stack.
    """

    threshold: float = 0.5
    flips: bool = False
    core_mm: float = 0.0
    margin_mm: float = 10.0
    # A second stage (``refine``: a checkpoint file beside this one): a network trained on
    # brain-centred windows of ``window_mm`` re-segments a window that size around the
    # localised core, slice by slice; what it marks beyond ``refine_margin_mm`` of the core
    # is dropped.
    refine: str | None = None
    window_mm: float = 160.0
    refine_margin_mm: float = 30.0
    # A coarse 3D localiser (``locator.py``: a checkpoint file beside this one): the first
    # stage's probabilities count only within ``locator_margin_mm`` of the localiser's brain
    # (its largest component above ``locator_threshold``); what the first stage marked
    # beyond still counts as ``outside`` for the gate.
    locator: str | None = None
    locator_threshold: float = 0.5
    locator_margin_mm: float = 10.0
    # An ensemble first stage: further checkpoints beside this one (``members``, files of the
    # same architecture and input size); the first stage's probabilities are the mean of this
    # checkpoint's and theirs, so a blob only some members mark counts for less.
    members: tuple[str, ...] = ()

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> PostProcess:
        given = dict(metadata.get("postprocess") or {})
        given["members"] = tuple(given.get("members") or ())
        return cls(**{k: v for k, v in given.items() if k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "flips": self.flips,
            "core_mm": self.core_mm,
            "margin_mm": self.margin_mm,
            "refine": self.refine,
            "window_mm": self.window_mm,
            "refine_margin_mm": self.refine_margin_mm,
            "locator": self.locator,
            "locator_threshold": self.locator_threshold,
            "locator_margin_mm": self.locator_margin_mm,
            "members": list(self.members),
        }


def clean_volume(probabilities: npt.NDArray[np.float32], threshold: float = 0.5) -> Mask:
    """Largest 3D connected component, holes filled in 3D and slice by slice."""
    return clean_mask(probabilities >= threshold)


def clean_mask(mask: Mask) -> Mask:
    """``clean_volume`` of a thresholded prediction."""
    labels, count = ndimage.label(mask, structure=_CONNECTED)
    if count == 0:
        return mask
    largest = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    filled = ndimage.binary_fill_holes(largest)
    per_slice: Mask = np.stack([ndimage.binary_fill_holes(s) for s in filled]).astype(bool)
    return per_slice


def brain_core(
    probabilities: npt.NDArray[np.float32], spacing: Spacing, recipe: PostProcess
) -> Mask | None:
    """The deep component (eroded by ``core_mm``) of the prediction with the most
    probability mass; None when nothing is that deep."""
    mask = probabilities >= recipe.threshold
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    labels, count = ndimage.label(depth > recipe.core_mm, structure=_CONNECTED)
    if count == 0:
        return None
    mass = ndimage.sum(probabilities, labels, index=np.arange(1, count + 1))
    core: Mask = labels == int(np.argmax(mass)) + 1
    return core


def near(core: Mask, spacing: Spacing, within_mm: float) -> Mask:
    """Voxels within ``within_mm`` of ``core``."""
    distance = ndimage.distance_transform_edt(~core, sampling=spacing)
    region: Mask = distance <= within_mm
    return region


def window_probabilities(
    predict: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]],
    stack: npt.NDArray[np.uint8],
    centre: tuple[float, float],
    pixel_mm: tuple[float, float],
    window_mm: float,
) -> npt.NDArray[np.float32]:
    """``predict`` (a stack of windows to their probabilities) run on a ``window_mm`` square
    around ``centre`` (row, column pixel) of every slice, zero-padded beyond the field; the
    probabilities pasted back into a full-size stack, zero outside the window."""
    n, rows, cols = stack.shape
    size = (round(window_mm / pixel_mm[0]), round(window_mm / pixel_mm[1]))
    top = round(centre[0] - size[0] / 2)
    left = round(centre[1] - size[1] / 2)
    pad = max(0, -top, -left, top + size[0] - rows, left + size[1] - cols)
    padded = np.pad(stack, ((0, 0), (pad, pad), (pad, pad)))
    window = padded[:, top + pad : top + pad + size[0], left + pad : left + pad + size[1]]
    probabilities = predict(np.ascontiguousarray(window))
    out = np.zeros((n, rows + 2 * pad, cols + 2 * pad), dtype=np.float32)
    out[:, top + pad : top + pad + size[0], left + pad : left + pad + size[1]] = probabilities
    return out[:, pad : pad + rows, pad : pad + cols]


@dataclass(frozen=True)
class StackPrediction:
    raw: Mask  # every voxel above the threshold inside the search region, before the clean-up
    mask: Mask  # the cleaned brain
    outside: Mask  # voxels above the threshold beyond the search region (localisation only)
    # With a second stage: the Dice between the first stage's localised brain and the
    # second's, two networks' independent views of one brain (None without a second stage).
    stage_agreement: float | None = None
    # With localisation: the share of the brain's surface where the network's brain goes on
    # beyond the region the recipe keeps, so the region's edge, not the brain's, drew the
    # outline there (``reach_cut``).
    cut_share: float = 0.0


def frames_of(
    predictor: UNetPredictor, stack: npt.NDArray[np.uint8]
) -> list[npt.NDArray[np.uint8]]:
    """The stack's slices as the network takes them: alone, or (rows, cols, channels) with
    their neighbours when the checkpoint was trained so (``context.py``)."""
    if predictor.in_channels == 1:
        return list(np.ascontiguousarray(stack))
    wide = with_context(stack, predictor.in_channels // 2).transpose(0, 2, 3, 1)
    return list(np.ascontiguousarray(wide))


def stack_probabilities(
    predictor: UNetPredictor, stack: npt.NDArray[np.uint8], flips: bool
) -> npt.NDArray[np.float32]:
    """Per-slice probabilities, averaged over the four flips when ``flips``."""

    def run(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.stack(predictor.probabilities(frames_of(predictor, frames)))

    probabilities = run(stack)
    if not flips:
        return probabilities
    total = probabilities + run(stack[:, :, ::-1])[:, :, ::-1]
    total += run(stack[:, ::-1, :])[:, ::-1, :]
    total += run(stack.transpose(0, 2, 1)).transpose(0, 2, 1)
    averaged: npt.NDArray[np.float32] = (total / 4).astype(np.float32)
    return averaged


def ensemble_probabilities(
    predictors: Sequence[UNetPredictor], stack: npt.NDArray[np.uint8], flips: bool
) -> npt.NDArray[np.float32]:
    """The mean of ``stack_probabilities`` over ``predictors`` (one: its own)."""
    total = stack_probabilities(predictors[0], stack, flips)
    for member in predictors[1:]:
        total += stack_probabilities(member, stack, flips)
    if len(predictors) > 1:
        total /= np.float32(len(predictors))
    return total


def stack_spacing(geometry: VolumeGeometry) -> Spacing | None:
    """(slice, row, column) mm of a stack; None for a single slice (no depth to measure)."""
    if len(geometry.positions) < 2:
        return None
    thickness = float(np.median(geometry.slice_thicknesses()))
    return (thickness, geometry.pixel_spacing[0], geometry.pixel_spacing[1])


def segment_stack(
    predictor: UNetPredictor,
    image: npt.NDArray[Any],
    spacing: Spacing | None = None,
    recipe: PostProcess | None = None,
    refiner: UNetPredictor | None = None,
    *,
    locator: Region | None = None,
    members: Sequence[UNetPredictor] = (),
) -> StackPrediction:
    """The cleaned mask, and the raw one the quality gate compares it with. ``spacing``
    (slice, row, column mm) is needed for the localisation; without it none is done.
    ``refiner``: the recipe's second stage, run on a window around the localised core;
    ``locator``: the recipe's 3D localiser (the brain's probability at every voxel of the
    8-bit stack), which bounds where the first stage's core is looked for; ``members``: the
    recipe's further first-stage checkpoints, averaged with ``predictor``."""
    recipe = recipe or PostProcess.from_metadata(predictor.metadata)
    stack = normalise_stack(image)
    probabilities = ensemble_probabilities([predictor, *members], stack, recipe.flips)
    marked = probabilities >= recipe.threshold  # the first stage's marks, for ``outside``
    if locator is not None and spacing is not None:
        located = clean_volume(locator(stack), recipe.locator_threshold)
        if located.any():
            region = near(located, spacing, recipe.locator_margin_mm)
            probabilities = np.where(region, probabilities, np.float32(0))
    raw = probabilities >= recipe.threshold
    outside = np.zeros_like(raw)
    if recipe.core_mm > 0 and spacing is not None:
        core = brain_core(probabilities, spacing, recipe)
        if core is not None:
            region = near(core, spacing, recipe.core_mm + recipe.margin_mm)
            if refiner is not None:
                row, col = np.argwhere(core).mean(0)[1:]
                refined = window_probabilities(
                    lambda w: stack_probabilities(refiner, w, recipe.flips),
                    stack,
                    (float(row), float(col)),
                    (spacing[1], spacing[2]),
                    recipe.window_mm,
                )
                within = near(core, spacing, recipe.core_mm + recipe.refine_margin_mm)
                first = clean_mask(raw & region)
                outside = marked & ~within
                second = refined >= recipe.threshold
                raw = second & within
                mask = clean_mask(raw)
                cut = reach_cut(mask, second & ~within)
                return StackPrediction(raw, mask, outside, dice(first, mask), cut)
            outside = marked & ~region
            raw = raw & region
            mask = clean_mask(raw)
            return StackPrediction(raw, mask, outside, cut_share=reach_cut(mask, outside))
    return StackPrediction(raw, clean_mask(raw), outside)


def reach_cut(mask: Mask, beyond: Mask) -> float:
    """The share of ``mask``'s surface voxels (those with a 6-neighbour outside it) that
    touch ``beyond``, the brain the network marked past the region kept: where the outline
    was drawn by the region's edge rather than by the network. 0 for an empty mask."""
    surface = mask & ~ndimage.binary_erosion(mask, border_value=1)
    total = int(surface.sum())
    if total == 0 or not beyond.any():
        return 0.0
    touching = surface & ndimage.binary_dilation(beyond)
    return float(touching.sum()) / total


class StackSegmenter:
    """A fetal brain checkpoint and, when its recipe names one, its second stage (a file
    beside it, sha256-checked like every checkpoint), served the way they were validated."""

    def __init__(self, weights: Path, device: str = "cpu") -> None:
        self.predictor = UNetPredictor(weights, device)
        self.recipe = PostProcess.from_metadata(self.predictor.metadata)
        self.members = [UNetPredictor(weights.parent / m, device) for m in self.recipe.members]
        self.refiner = (
            UNetPredictor(weights.parent / self.recipe.refine, device)
            if self.recipe.refine
            else None
        )
        self.locator: Region | None = None
        #: Every checkpoint the recipe serves, by its part, with its verified sha256.
        self.checkpoints = {"first": self.predictor.sha256}
        self.checkpoints |= {f"member{k}": m.sha256 for k, m in enumerate(self.members, 1)}
        if self.refiner is not None:
            self.checkpoints["refine"] = self.refiner.sha256
        if self.recipe.locator:
            from worker.models.fetal_brain import locator

            model, meta = locator.load(weights.parent / self.recipe.locator, device)
            self.locator = lambda stack: locator.region_probability(model, stack)
            self.checkpoints["locator"] = str(meta["sha256"])
        self.sha256 = self.predictor.sha256
        #: What the mask's outline holds, as the checkpoint states it (convention.py).
        self.convention = of_checkpoint(self.predictor.metadata)

    def segment(self, image: npt.NDArray[Any], spacing: Spacing | None) -> StackPrediction:
        return segment_stack(
            self.predictor,
            image,
            spacing,
            self.recipe,
            self.refiner,
            locator=self.locator,
            members=self.members,
        )
