"""A classical fetal brain extraction baseline (threshold + morphology), as the seed compares
its U-Net with BET: the brain is the mid-intensity region enclosed by bright CSF."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models.fetal_brain.predict import Mask, clean_volume, normalise_stack

CSF_LEVEL = 0.55  # of the 99.5th percentile: CSF and amniotic fluid (tuned on seeds 900000-9)
BRAIN_LEVEL = 0.47  # typical grey/white matter level


def baseline_mask(image: npt.NDArray[np.float32]) -> Mask:
    stack = normalise_stack(image).astype(np.float32) / 255.0
    out = np.zeros(stack.shape, dtype=bool)
    for k, plane in enumerate(stack):
        smooth = ndimage.gaussian_filter(plane, 0.5)
        bright = smooth >= CSF_LEVEL
        enclosed = ndimage.binary_fill_holes(bright) & ~bright
        enclosed = ndimage.binary_opening(enclosed, iterations=2)
        labels, count = ndimage.label(enclosed)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(enclosed, labels, index)
        means = ndimage.mean(smooth, labels, index)
        score = sizes * np.exp(-(((means - BRAIN_LEVEL) / 0.1) ** 2))
        out[k] = labels == index[int(np.argmax(score))]
    return clean_volume(out.astype(np.float32))
