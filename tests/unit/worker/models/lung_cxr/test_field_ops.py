"""The lung-field post-processing and the gate's signals, computed on the fields' bounding box
with OpenCV (issue 29), against the whole-image scipy code they replaced (kept here as the
reference): identical masks and signals, on maps with holes, specks, fields cut by the image's
edges, a field inside the other's hole, one field, none, and equal-sized components."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from worker.models._masks import fill_holes
from worker.models.lung_cxr.fields import (
    Fields,
    label,
    lung_fields,
    split_lungs,
    two_largest,
)
from worker.models.lung_cxr.gate import Signals, _eroded, field_signals, signals

Mask = npt.NDArray[np.bool_]


def _reference_two_largest(prob: npt.NDArray[np.float32]) -> Mask:
    labels, count = ndimage.label(prob >= 0.5)
    if count == 0:
        return np.zeros(prob.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    filled: Mask = ndimage.binary_fill_holes(np.isin(labels, keep))
    return filled


def _reference_split(mask: Mask, *, patient_left_on_image_right: bool) -> tuple[Mask, Mask]:
    labels, count = ndimage.label(mask)
    empty = np.zeros_like(mask)
    if count == 0:
        return empty, empty.copy()
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    parts = [labels == (int(i) + 1) for i in order[:2]]
    if len(parts) == 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        parts.sort(key=lambda m: float(np.nonzero(m)[1].mean()))
        image_left, image_right = parts
    else:
        only = parts[0]
        columns = np.nonzero(only.any(axis=0))[0]
        lo, hi = columns.min(), columns.max()
        width = hi - lo + 1
        centre = slice(lo + width // 3, lo + 2 * width // 3 + 1)
        cut = int(centre.start + np.argmin(only.sum(axis=0)[centre]))
        image_left, image_right = only.copy(), only.copy()
        image_left[:, cut:] = False
        image_right[:, :cut] = False
    if patient_left_on_image_right:
        return image_left, image_right
    return image_right, image_left


def _reference_signals(
    prob: npt.NDArray[np.float32], right: Mask, left: Mask, *, patient_left_on_image_right: bool
) -> Signals:
    raw = prob >= 0.5
    labels, count = ndimage.label(raw)
    sizes = np.bincount(labels.ravel())[1:] if count else np.zeros(0, dtype=np.int64)
    n_fields = int((sizes >= 0.05 * max(int(raw.sum()), 1)).sum())
    kept = right | left
    kept_area = max(int(kept.sum()), 1)
    rows, cols = prob.shape
    half = cols // 2
    image_left, image_right = (right, left) if patient_left_on_image_right else (left, right)
    purity_left = image_left[:, :half].sum() / max(int(image_left.sum()), 1)
    purity_right = image_right[:, half:].sum() / max(int(image_right.sum()), 1)
    band = max(1, round(0.01 * min(rows, cols)))
    inner = np.zeros_like(kept)
    inner[band:-band, band:-band] = True
    edge = kept & ~ndimage.binary_erosion(kept)
    return Signals(
        fields=n_fields,
        side_purity=float(min(purity_left, purity_right)),
        area_fraction=kept_area / kept.size,
        right_left_ratio=float(right.sum()) / max(int(left.sum()), 1),
        border_fraction=float((edge & ~inner).sum()) / max(int(edge.sum()), 1),
        confidence=float(prob[kept].mean()) if kept.any() else 0.0,
        fragment_ratio=float((raw & ~kept).sum()) / kept_area,
    )


def _map(seed: int) -> npt.NDArray[np.float32]:
    """A smooth random probability map: blobs with holes, specks, fields cut by the edges."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(120, 150)), sigma=4)
    prob = (noise - noise.min()) / (noise.max() - noise.min())
    prob[40:80, 20:60] = 0.9
    prob[55:65, 35:45] = 0.1  # a hole in a field
    out: npt.NDArray[np.float32] = prob.astype(np.float32)
    return out


def _ring_around_a_field() -> npt.NDArray[np.float32]:
    """The second largest component inside the largest one's hole: filled, they are one."""
    prob = np.full((90, 110), 0.1, dtype=np.float32)
    prob[10:80, 10:100] = 0.8
    prob[20:70, 20:90] = 0.2  # the hole
    prob[30:60, 30:80] = 0.95  # a field inside it
    prob[2:5, 2:5] = 0.7  # a speck
    return prob


def _two_fields_closing_a_hole() -> npt.NDArray[np.float32]:
    """A "[" and a "]" touching at two corners only (two components, not 4-connected) that
    enclose a hole together: filling it joins them."""
    prob = np.full((40, 40), 0.1, dtype=np.float32)
    prob[10:30, 10] = prob[10, 10:20] = prob[29, 10:20] = 0.9  # "[": rows 10-29
    prob[9:31, 29] = prob[9, 20:29] = prob[30, 20:29] = 0.9  # "]": rows 9-30
    return prob


def _aligned_twins() -> npt.NDArray[np.float32]:
    """Two equal bars one above the other: equal sizes and equal centroid columns."""
    prob = np.zeros((50, 40), dtype=np.float32)
    prob[5:10, 10:30] = 0.9
    prob[40:45, 10:30] = 0.9
    return prob


def _twins(cols: int) -> npt.NDArray[np.float32]:
    """Two equal fields (ties in the sizes) and an equal third, far from the edges or not."""
    prob = np.zeros((60, cols), dtype=np.float32)
    prob[10:30, 5:15] = 0.9
    prob[10:30, cols - 15 : cols - 5] = 0.9
    prob[40:60, cols // 2 - 5 : cols // 2 + 5] = 0.9  # touching the bottom edge
    return prob


def _one_merged_field() -> npt.NDArray[np.float32]:
    prob = np.zeros((50, 80), dtype=np.float32)
    prob[5:45, 5:75] = 0.9
    prob[5:20, 35:45] = 0.3  # a notch: narrowest in the middle third
    return prob


def _cases() -> list[npt.NDArray[np.float32]]:
    edges = np.zeros((40, 50), dtype=np.float32)
    edges[:, :12] = 0.8  # fields along the whole edges
    edges[:, 30:] = 0.8
    edges[18:22, 35:40] = 0.0  # a hole
    return [
        *(_map(seed) for seed in range(6)),
        _ring_around_a_field(),
        _two_fields_closing_a_hole(),
        _twins(40),
        _twins(41),
        _aligned_twins(),
        _one_merged_field(),
        edges,
        np.zeros((8, 8), dtype=np.float32),
        np.full((6, 9), 0.9, dtype=np.float32),
    ]


def test_the_hard_cases_are_what_they_claim() -> None:
    for joined in (_ring_around_a_field(), _two_fields_closing_a_hole()):
        assert ndimage.label(joined >= 0.5)[1] >= 2
        assert ndimage.label(_reference_two_largest(joined))[1] == 1


@pytest.mark.parametrize("case", range(len(_cases())))
@pytest.mark.parametrize("left_on_right", [True, False])
def test_fields_and_signals_equal_the_whole_image_scipy_code(
    case: int, left_on_right: bool
) -> None:
    prob = _cases()[case]
    fields = _reference_two_largest(prob)
    assert np.array_equal(two_largest(prob), fields)
    right, left = _reference_split(fields, patient_left_on_image_right=left_on_right)
    assert [a.tolist() for a in split_lungs(fields, patient_left_on_image_right=left_on_right)] == [
        right.tolist(),
        left.tolist(),
    ]
    served = lung_fields(prob, patient_left_on_image_right=left_on_right)
    assert np.array_equal(served.full(served.right), right)
    assert np.array_equal(served.full(served.left), left)
    expected = _reference_signals(prob, right, left, patient_left_on_image_right=left_on_right)
    assert field_signals(served) == expected
    assert signals(prob, right, left, patient_left_on_image_right=left_on_right) == expected


def test_signals_of_fields_the_map_does_not_hold() -> None:
    """The gate's own inputs (its tests, its fitting) need not come from the map: a field off
    the map's pixels, one at the image's corner, an empty one."""
    prob = _map(1)
    right = np.zeros(prob.shape, dtype=bool)
    right[0:30, 0:25] = True  # at the corner, mostly off the map
    left = prob >= 0.7
    for r, lft in ((right, left), (left, np.zeros_like(left)), (right, right)):
        for left_on_right in (True, False):
            found = signals(prob, r, lft, patient_left_on_image_right=left_on_right)
            reference = _reference_signals(prob, r, lft, patient_left_on_image_right=left_on_right)
            assert found == reference
    boxed = Fields.of(prob, right, left)
    assert np.array_equal(boxed.full(boxed.right), right)


@pytest.mark.parametrize("seed", range(4))
def test_labelling_filling_and_erosion_equal_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 200)), int(rng.integers(1, 200)))
    masks = [
        rng.random(shape) < 0.55,  # many components, holes at every scale
        ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0,
        np.ones(shape, dtype=bool),
        np.zeros(shape, dtype=bool),
    ]
    for mask in masks:
        labels, sizes = label(mask)
        expected, expected_count = ndimage.label(mask)
        assert sizes.size == expected_count and np.array_equal(labels, expected)
        assert np.array_equal(sizes, np.bincount(expected.ravel(), minlength=sizes.size + 1)[1:])
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        assert np.array_equal(_eroded(mask), ndimage.binary_erosion(mask))
