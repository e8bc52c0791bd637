"""The lung fields of a film from the U-Net's full-size probability map.

The served post-processing (``lung_fields``): the two largest 4-connected components of the
map at 0.5, their holes filled (``two_largest``), split into the patient's right and left
field (``split_lungs``: the two largest parts by their centroids; one merged field is cut at
its narrowest central column).

On a 2000² film the fields cover about half the image, so the work runs on the bounding box
of the map's pixels at threshold with a ring of one background pixel (``bounding_box``): no
component reaches past the box, and the background outside it is one region joined to the
image's border, so labelling, hole filling and erosion there give what the whole image gives.
``Fields`` keeps the crops and pastes them back into a film-sized mask only for the SEG.
OpenCV labels (numbered in raster order as scipy numbers them, 3-4x faster) and fills holes by
flooding the outer background (what ``binary_fill_holes`` leaves outside); the masks are the
scipy ones pixel for pixel (tests/unit/worker/models/lung_cxr/test_field_ops.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.models._masks import fill_holes, label

Mask = npt.NDArray[np.bool_]
Box = tuple[slice, slice]  # rows, columns of the film


def bounding_box(mask: Mask, margin: int = 1) -> Box:
    """The rows and columns holding the mask, widened by ``margin`` inside the image; for an
    empty mask the first pixel (a box with nothing in it)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return slice(0, 1), slice(0, 1)
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, mask.shape[0])),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, mask.shape[1])),
    )


def pixels(mask: Mask) -> int:
    """How many pixels the mask holds."""
    return int(np.count_nonzero(mask))


def _largest(labels: npt.NDArray[np.int32], sizes: npt.NDArray[np.int64]) -> list[int]:
    """The labels of the two largest components, largest first (ties as ``np.argsort``
    orders them)."""
    return [int(i) + 1 for i in np.argsort(sizes)[::-1][:2]]


def _first(mask: Mask) -> int:
    """The flat index of the mask's first pixel in raster order."""
    return int(np.argmax(mask))


def _filled(labels: npt.NDArray[np.int32], kept: list[int]) -> Mask:
    """The components ``kept`` of ``labels``, holes filled."""
    if not kept:
        return np.zeros(labels.shape, dtype=bool)
    union = labels == kept[0]
    for k in kept[1:]:
        union |= labels == k
    return fill_holes(union)


def two_largest(prob: npt.NDArray[np.float32]) -> Mask:
    """Lung fields: the two largest components of the thresholded map, holes filled."""
    raw = prob >= 0.5
    box = bounding_box(raw)
    labels, sizes = label(raw[box])
    out = np.zeros(prob.shape, dtype=bool)
    out[box] = _filled(labels, _largest(labels, sizes))
    return out


def _mean_column(part: Mask, first_column: int) -> float:
    """``np.nonzero(part)[1].mean()`` in the film's columns, from the column counts (the
    integer sum is exact either way, so the mean is the same float)."""
    import cv2

    counts = cv2.reduce(part.view(np.uint8), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
    columns = np.arange(first_column, first_column + counts.size, dtype=np.int64)
    return int(counts.astype(np.int64) @ columns) / int(counts.sum(dtype=np.int64))


def _sides(
    largest: list[Mask], sizes: list[int], first_column: int, *, patient_left_on_image_right: bool
) -> tuple[Mask, Mask]:
    """(right, left) from a mask's two largest components, largest first (ties in the order
    ``np.argsort`` gives) with their ``sizes``: the two by their centroids, or the largest
    cut in two."""
    if len(largest) == 2 and sizes[1] >= 0.1 * sizes[0]:
        largest = sorted(largest, key=lambda m: _mean_column(m, first_column))
        image_left, image_right = largest
    else:
        only = largest[0]
        columns = np.nonzero(only.any(axis=0))[0]
        lo, hi = columns.min(), columns.max()
        width = hi - lo + 1
        centre = slice(lo + width // 3, lo + 2 * width // 3 + 1)
        counts = only.sum(axis=0)[centre]
        cut = int(centre.start + np.argmin(counts))
        image_left, image_right = only.copy(), only.copy()
        image_left[:, cut:] = False
        image_right[:, :cut] = False
    if patient_left_on_image_right:
        return image_left, image_right
    return image_right, image_left


def split_lungs(mask: Mask, *, patient_left_on_image_right: bool = True) -> tuple[Mask, Mask]:
    """(right lung, left lung) from a lung-field mask: the two largest components, each
    side by its centroid; a single merged component is cut at its narrowest central column."""
    right, left = np.zeros_like(mask), np.zeros_like(mask)
    box = bounding_box(mask, margin=0)
    labels, sizes = label(mask[box])
    if sizes.size == 0:
        return right, left
    kept = _largest(labels, sizes)
    right[box], left[box] = _sides(
        [labels == k for k in kept],
        [int(sizes[k - 1]) for k in kept],
        box[1].start,
        patient_left_on_image_right=patient_left_on_image_right,
    )
    return right, left


def _filled_components(
    filled: Mask, labels: npt.NDArray[np.int32], kept: list[int]
) -> tuple[list[Mask], list[int]]:
    """The components of ``_filled(labels, kept)`` in label order (raster order of their
    first pixel) and their sizes, without labelling it: each holds one of the ``kept``
    components (a filled hole touches the ones around it), so flooding from the first
    finds its own, and the rest, if any, is the other's."""
    if len(kept) < 2:
        return ([filled], [pixels(filled)]) if kept else ([], [])
    import cv2

    plane = filled.view(np.uint8).copy()
    row, col = divmod(_first(labels == kept[0]), labels.shape[1])
    area = int(cv2.floodFill(plane, None, (col, row), 2, flags=4)[0])
    first = plane == 2
    if first.flat[_first(labels == kept[1])]:  # the holes joined the two
        return [first], [area]
    other = plane == 1
    sizes = [area, pixels(filled) - area]
    if _first(other) < _first(first):
        return [other, first], sizes[::-1]
    return [first, other], sizes


@dataclass(frozen=True)
class Fields:
    """A film's lung fields as crops on ``box`` of the film's ``shape``: the map, its pixels
    at threshold (``raw``) and their components' sizes, and the patient's right and left
    field. The box holds every pixel of ``raw``, ``right`` and ``left`` with a background
    ring (or the image's edge) around them."""

    shape: tuple[int, int]
    box: Box
    prob: npt.NDArray[np.float32]
    raw: Mask
    raw_sizes: npt.NDArray[np.int64]
    right: Mask
    left: Mask
    patient_left_on_image_right: bool

    @classmethod
    def of(
        cls,
        prob: npt.NDArray[np.float32],
        right: Mask,
        left: Mask,
        *,
        patient_left_on_image_right: bool = True,
    ) -> Fields:
        """Given full-size fields (any masks, as the gate's tests and its fitting give)."""
        raw = prob >= 0.5
        box = bounding_box(raw | right | left)
        _, sizes = label(raw[box])
        return cls(
            (prob.shape[0], prob.shape[1]),
            box,
            prob[box],
            raw[box],
            sizes,
            right[box],
            left[box],
            patient_left_on_image_right,
        )

    def full(self, crop: Mask) -> Mask:
        """A crop of this box as a film-sized mask."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.box] = crop
        return out


def lung_fields(prob: npt.NDArray[np.float32], *, patient_left_on_image_right: bool) -> Fields:
    """The served post-processing of a full-size map: ``split_lungs(two_largest(prob))`` and
    what the gate needs, with one labelling of the map."""
    raw_full = prob >= 0.5
    box = bounding_box(raw_full)
    raw = raw_full[box]
    labels, sizes = label(raw)
    kept = _largest(labels, sizes)
    parts, part_sizes = _filled_components(_filled(labels, kept), labels, kept)
    order = [int(i) for i in np.argsort(np.asarray(part_sizes, dtype=np.int64))[::-1]]
    empty = np.zeros(raw.shape, dtype=bool)
    right, left = (
        _sides(
            [parts[i] for i in order],
            [part_sizes[i] for i in order],
            box[1].start,
            patient_left_on_image_right=patient_left_on_image_right,
        )
        if parts
        else (empty, empty.copy())
    )
    return Fields(
        (prob.shape[0], prob.shape[1]),
        box,
        prob[box],
        raw,
        sizes,
        right,
        left,
        patient_left_on_image_right,
    )
