"""The 8-bit images the fetal head network reads, from a series' frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def as_uint8(frames: npt.NDArray[np.float32]) -> list[npt.NDArray[np.uint8]]:
    """One uint8 image per frame: the values as they are when all lie in 0..255 (8-bit
    ultrasound), else the whole series' range stretched to 0..255."""
    lo, hi = float(frames.min()), float(frames.max())
    in_range = lo >= 0 and hi <= 255
    scaled = frames if in_range else (frames - lo) / max(hi - lo, 1e-6) * 255
    return [np.ascontiguousarray(f, dtype=np.uint8) for f in np.clip(scaled, 0, 255)]
