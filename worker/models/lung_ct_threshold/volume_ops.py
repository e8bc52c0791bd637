"""Whole-volume array operations for the lung masks and the gate, instead of per-slice loops.

Each works on the mask's bounding box (with the margin its structure needs, so the result is
the one the whole array gives) and on all slices at once:

- ``fill_holes_in_plane``: what ``scipy.ndimage.binary_fill_holes`` gives slice by slice (holes
  4-connected in the slice), as one labelling of the background;
- ``close_and_fill_in_plane``: ``binary_closing`` with an in-plane structure (OpenCV, slice
  by slice), then the fill, on the box only;
- ``mean_index``: the mean voxel index along each axis, from the mask's projections (no
  ``np.nonzero`` over millions of voxels);
- ``slice_counts``: voxels per slice;
- ``label_sizes``: voxels per label, a slice at a time.

The equivalence with the per-slice code is held by tests/unit/worker/models/lung_ct_threshold/
test_volume_ops.py (identical masks).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._masks import closing

Mask = npt.NDArray[np.bool_]
Box = tuple[slice, slice, slice]

#: 8-connected within a slice, nothing across slices (the structure of the in-plane closing).
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = True
#: 4-connected within a slice: binary_fill_holes' default structure for one 2D slice.
IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)


def bounding_box(mask: Mask, margin: int = 0) -> Box | None:
    """Slices with any of the mask (no margin: in-plane structures never cross slices), and
    its rows and columns widened by ``margin`` inside the array; None for an empty mask."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if slices.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    return (
        slice(int(slices[0]), int(slices[-1]) + 1),
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, mask.shape[1])),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, mask.shape[2])),
    )


def _fill_box(mask: Mask) -> Mask:
    """Holes filled in every slice of ``mask``: background not 4-connected, within its
    slice, to the array's rows or columns border."""
    labels, count = ndimage.label(~mask, structure=IN_PLANE_CROSS)
    border = np.concatenate(
        [labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]], axis=1
    )
    outside = np.zeros(count + 1, dtype=bool)
    outside[border] = True
    outside[0] = False  # the mask itself
    filled: Mask = ~outside[labels]
    return filled


def fill_holes_in_plane(mask: Mask) -> Mask:
    """``binary_fill_holes`` on each slice (axis 0), for the whole volume at once."""
    box = bounding_box(mask, margin=1)  # a background ring joins what lies outside the box
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = _fill_box(mask[box])
    return out


def close_and_fill_in_plane(mask: Mask, iterations: int) -> Mask:
    """``fill_holes_in_plane(binary_closing(mask, IN_PLANE, iterations) | mask)``, on the
    mask's box: the closing's dilation stays inside a margin of ``iterations``, so its
    erosion sees the zeros the whole array has there."""
    box = bounding_box(mask, margin=iterations + 1)
    out = np.zeros(mask.shape, dtype=bool)
    if box is None:
        return out
    out[box] = _fill_box(_close_in_plane(mask[box], iterations))
    return out


def _close_in_plane(mask: Mask, iterations: int) -> Mask:
    """``binary_closing(mask, IN_PLANE, iterations) | mask``, slice by slice by OpenCV
    (``_masks.closing``, ten times faster than scipy on a CT's lungs)."""
    closed = np.empty_like(mask)
    for k, plane in enumerate(mask):
        np.logical_or(closing(plane, iterations), plane, out=closed[k])
    return closed


def slice_counts(mask: Mask) -> npt.NDArray[np.int64]:
    """Voxels of the mask in each slice (axis 0): a count per slice is several times faster
    than numpy's sum over the other axes of a boolean volume."""
    return np.fromiter((np.count_nonzero(s) for s in mask), dtype=np.int64, count=len(mask))


def mean_index(mask: Mask) -> tuple[float, float, float]:
    """Mean (slice, row, column) index of the mask's voxels (the mask must not be empty)."""
    means = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = mask.sum(axis=others, dtype=np.int64)
        means.append(float(counts @ np.arange(counts.size)) / float(counts.sum()))
    return means[0], means[1], means[2]


def label_sizes(labels: npt.NDArray[np.integer], count: int) -> npt.NDArray[np.int64]:
    """``np.bincount(labels.ravel(), minlength=count + 1)`` (index 0: the background), one
    slice at a time: numpy first casts int32 labels to int64, a copy of the whole volume
    (0.24-0.57 s for a 300-slice CT's lungs, 0.13 s by slices; the same counts)."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    for plane in labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels[None]:
        counts = np.bincount(plane)
        sizes[: counts.size] += counts
    return sizes
