"""The lung-field post-processing's faster operations against the scipy calls they replaced
(issue 29): identical masks, edges of the image included."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from worker.models.lung_cxr.gate import _eroded
from worker.models.lung_cxr.preprocess import two_largest


def _map(seed: int) -> npt.NDArray[np.float32]:
    """A smooth random probability map: blobs with holes, specks, fields cut by the edges."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(120, 150)), sigma=4)
    prob = (noise - noise.min()) / (noise.max() - noise.min())
    prob[40:80, 20:60] = 0.9
    prob[55:65, 35:45] = 0.1  # a hole in a field
    out: npt.NDArray[np.float32] = prob.astype(np.float32)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_two_largest_and_the_erosion_equal_scipy(seed: int) -> None:
    prob = _map(seed)
    labels, _ = ndimage.label(prob >= 0.5)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    expected = ndimage.binary_fill_holes(np.isin(labels, keep))
    fields = two_largest(prob)
    assert np.array_equal(fields, expected)
    for mask in (fields, prob >= 0.5, np.ones((9, 7), dtype=bool)):
        assert np.array_equal(_eroded(mask), ndimage.binary_erosion(mask))
    assert not two_largest(np.zeros((8, 8), dtype=np.float32)).any()
