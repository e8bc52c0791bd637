"""The lung CT quality gate, shared by the threshold model and the U-Net: reference-free signals
measured on the left/right masks and the CT, and a verdict with reasons.

A result is accepted only when every signal is inside its threshold; otherwise it is
``needs_review`` with one reason per failed check. The signals:

- ``side_fraction``: the smaller of the two lungs' shares of voxels on their own side of the
  body's midline (patient x). Two lungs give about 1; one lung cut in two by the left/right
  split puts one "lung" on the wrong side.
- ``left_right_ratio``: left over right lung volume (the right lung is the larger, about
  0.8-0.9 in health).
- ``fov_fraction``: both lungs' volume over the imaged volume (rows x columns x slices). A mask
  that takes in the room air or finds a speck is implausible for any field of view.
- ``total_ml`` against an adult's range, and ``lung_height_mm`` (the lungs' extent along the
  stack): the lower mL bound only applies to a series that covers an adult's lung height, so a
  partial scan (or a short test phantom) is judged by the other checks.
- ``outside_body_fraction``: lung voxels outside the body (CT above -500 HU, largest
  component, holes filled slice by slice) over all lung voxels.

The body (for the midline and ``outside_body_fraction``) is found on a grid of every
``body_step``-th row and column, about the lung U-Net's 128² input (``BODY_GRID``): on a
512² CT that is 1/16 of the voxels, where labelling the whole volume took 2.3 s of a
300-slice series. Against the full-size body, on lung1, lung2 and phantoms: the side
fraction within 0.005, the outside fraction within 0.002, the verdicts the same
(tests/unit/worker/models/lung_ct_threshold/test_body_grid.py).
- ``gap_slices`` and ``max_jump``: continuity of each lung's per-slice area profile
  (``worker.models._gate.profile``), the worse lung.

Thresholds were measured on the two real chest CTs of pyradiomics and on phantoms
(``benchmarks/quality_gates.py``; docs/lung.md, "Quality gate") with a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._gate.profile import profile, profile_reasons, slice_areas
from worker.models._gate.thresholds import Rounded, StoredThresholds
from worker.models.lung_ct_threshold.volume_ops import (
    bounding_box,
    fill_holes_in_plane,
    label_sizes,
    mean_index,
    slice_counts,
)
from worker.pipeline.loading import VolumeGeometry

Mask = npt.NDArray[np.bool_]

BODY_HU = -500.0
#: Rows and columns of the grid the body is found on (at least): the lung U-Net's input.
BODY_GRID = 128


@dataclass(frozen=True)
class Signals(Rounded):
    side_fraction: float
    left_right_ratio: float
    fov_fraction: float
    total_ml: float
    lung_height_mm: float
    outside_body_fraction: float
    gap_slices: int
    max_jump: float


@dataclass(frozen=True)
class Thresholds(StoredThresholds):
    # Observed on normal inputs (both models; lung1, lung2, 40-slice and short phantoms,
    # benchmarks/quality_gates.py) and the margin kept:
    min_side_fraction: float = 0.9  # lowest 0.983 (lung1)
    min_left_right_ratio: float = 0.4  # 0.61 (lung1) .. 0.90 (phantoms)
    max_left_right_ratio: float = 1.5
    min_fov_fraction: float = 0.03  # 0.086 (short phantoms) .. 0.141 (lung1)
    max_fov_fraction: float = 0.45
    # Adult lungs on CT: about 1.5 L (residual volume, a small adult) to 8 L (total lung
    # capacity, a tall man); the bounds leave a margin. The lower one is judged only when the
    # lungs span at least ``adult_lung_height_mm`` of the stack (lung1 215 mm, lung2 260 mm).
    min_total_ml: float = 1000.0  # lung1 2,896 mL, lung2 3,998 mL
    max_total_ml: float = 9000.0
    adult_lung_height_mm: float = 150.0
    max_outside_body_fraction: float = 0.01  # 0 on every normal input
    max_gap_slices: int = 0
    max_jump: float = 0.3  # highest 0.176 (lung2, U-Net; the diaphragm's dome)


DEFAULT_THRESHOLDS = Thresholds()


def body_step(shape: tuple[int, ...]) -> int:
    """The step between the rows and columns the body is found on: 4 for 512², 1 up to 255²."""
    return max(1, min(shape[1], shape[2]) // BODY_GRID)


def body_mask(hu: npt.NDArray[np.floating], step: int = 1) -> Mask:
    """The patient: above -500 HU, the largest 3D component, holes filled slice by slice; on
    every ``step``-th row and column (shape (slices, ceil(rows/step), ceil(columns/step)))."""
    dense = hu[:, ::step, ::step] > BODY_HU
    labels, count = ndimage.label(dense)
    if count == 0:
        return dense
    largest = labels == int(np.argmax(label_sizes(labels, count)[1:])) + 1
    return fill_holes_in_plane(largest)


def _mean_patient_x(mask: Mask, geometry: VolumeGeometry, step: int = 1) -> float:
    """Mean patient x (LPS: + is the patient's left) of the voxels of a non-empty mask, from
    its projections: x is affine in the slice, row and column index. ``step``: the mask holds
    every step-th row and column of the volume."""
    per_slice = slice_counts(mask)
    _, rows, cols = mean_index(mask)
    rows, cols = rows * step, cols * step
    row_mm, col_mm = geometry.pixel_spacing
    slice_x = float(per_slice @ geometry.positions[:, 0]) / float(per_slice.sum())
    return (
        slice_x
        + float(geometry.row_cosine[0]) * cols * col_mm
        + float(geometry.column_cosine[0]) * rows * row_mm
    )


def _share_beyond(mask: Mask, geometry: VolumeGeometry, midline: float, sign: float) -> float:
    """Share of a mask's voxels whose patient x lies beyond ``midline`` (``sign`` +1: on the
    patient's left), computed on the mask's bounding box."""
    box = bounding_box(mask)
    if box is None:
        return 0.0
    sub = mask[box]
    row_mm, col_mm = geometry.pixel_spacing
    slices = geometry.positions[box[0], 0]
    rows = np.arange(box[1].start, box[1].stop) * (geometry.column_cosine[0] * row_mm)
    cols = np.arange(box[2].start, box[2].stop) * (geometry.row_cosine[0] * col_mm)
    # x = (slice + column) + row, summed in this order for every voxel (the same floats as
    # one broadcast over the box, which allocated eight bytes a voxel).
    if not rows.any():  # axial: x does not change along a column, count the columns
        per_column = sub.sum(axis=1, dtype=np.int64)
        x_plane = slices[:, None] + cols[None, :]
        hits = int(per_column[sign * (x_plane - midline) > 0].sum())
    else:
        hits = sum(
            int(np.count_nonzero((sign * ((s + cols)[None, :] + rows[:, None] - midline) > 0) & k))
            for s, k in zip(slices, sub, strict=True)
        )
    return float(hits) / float(np.count_nonzero(sub))


def _extent_mm(present_in: npt.NDArray[np.bool_], geometry: VolumeGeometry) -> float:
    """Extent of a mask along the stack, from the first to the last slice with any of it
    (``present_in``, per slice; each counting its own thickness)."""
    present = np.nonzero(present_in)[0]
    if present.size == 0:
        return 0.0
    return float(geometry.slice_thicknesses()[present[0] : present[-1] + 1].sum())


def _outside_fraction(left: Mask, right: Mask, body: Mask, step: int) -> float:
    """Share of the lung voxels (on the body's grid) outside the body."""
    lungs = left[:, ::step, ::step] | right[:, ::step, ::step]
    n_lung = np.count_nonzero(lungs)
    return float(np.count_nonzero(lungs & ~body)) / n_lung if n_lung else 0.0


def signals(
    left: Mask,
    right: Mask,
    hu: npt.NDArray[np.floating],
    geometry: VolumeGeometry,
    step: int | None = None,
) -> Signals:
    """The gate's signals; the body on every ``step``-th row and column (None: ``body_step``;
    1: the full-size body)."""
    step = body_step(hu.shape) if step is None else step
    body = body_mask(hu, step)
    midline = _mean_patient_x(body, geometry, step) if body.any() else 0.0
    shares = [
        _share_beyond(left, geometry, midline, 1.0),
        _share_beyond(right, geometry, midline, -1.0),
    ]
    voxel_ml = geometry.voxel_volumes_ml()
    areas = [slice_areas(mask) for mask in (left, right)]
    left_ml, right_ml = (float(a @ voxel_ml) for a in areas)
    imaged_ml = float(voxel_ml.sum() * hu.shape[1] * hu.shape[2])
    profiles = [profile(a) for a in areas]
    return Signals(
        side_fraction=min(shares),
        left_right_ratio=left_ml / right_ml if right_ml > 0 else float("inf"),
        fov_fraction=(left_ml + right_ml) / imaged_ml if imaged_ml > 0 else 0.0,
        total_ml=left_ml + right_ml,
        lung_height_mm=_extent_mm((areas[0] > 0) | (areas[1] > 0), geometry),
        outside_body_fraction=_outside_fraction(left, right, body, step),
        gap_slices=sum(p.gap_slices for p in profiles),
        max_jump=max(p.max_jump for p in profiles),
    )


def reasons(s: Signals, t: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """Why a lung CT result needs review (empty: accepted)."""
    out: list[str] = []
    if s.side_fraction < t.min_side_fraction:
        out.append(
            f"two lungs not found on their own sides ({s.side_fraction:.0%} of a lung on its "
            f"side of the midline, < {t.min_side_fraction:.0%})"
        )
    if not t.min_left_right_ratio <= s.left_right_ratio <= t.max_left_right_ratio:
        out.append(
            f"left/right lung volume ratio implausible ({s.left_right_ratio:.2f}, accepted "
            f"{t.min_left_right_ratio}-{t.max_left_right_ratio})"
        )
    if not t.min_fov_fraction <= s.fov_fraction <= t.max_fov_fraction:
        out.append(
            f"lung volume implausible for the field of view ({s.fov_fraction:.1%} of the "
            f"imaged volume, accepted {t.min_fov_fraction:.0%}-{t.max_fov_fraction:.0%})"
        )
    too_small = s.total_ml < t.min_total_ml and s.lung_height_mm >= t.adult_lung_height_mm
    if too_small or s.total_ml > t.max_total_ml:
        out.append(
            f"lung volume outside the adult range ({s.total_ml:.0f} mL over "
            f"{s.lung_height_mm:.0f} mm, accepted {t.min_total_ml:.0f}-{t.max_total_ml:.0f} mL)"
        )
    if s.outside_body_fraction > t.max_outside_body_fraction:
        out.append(
            f"lung mask outside the body ({s.outside_body_fraction:.1%} of its voxels, "
            f"> {t.max_outside_body_fraction:.0%})"
        )
    out += profile_reasons("lung", s.gap_slices, s.max_jump, t.max_gap_slices, t.max_jump)
    return out
