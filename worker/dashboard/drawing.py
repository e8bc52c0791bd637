"""Text drawn over an image so it reads on any background: a black outline round the letters.

The outline is the text drawn in black one pixel off in every direction, not a thicker pass:
OpenCV's glyph advance grows with the stroke thickness, so a thick black pass drifts away
from the coloured letters along a long caption.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

BGR = tuple[int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
_AROUND = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]


def outlined_text(
    canvas: npt.NDArray[np.uint8], text: str, origin: tuple[int, int], size: float, colour: BGR
) -> None:
    """``text`` in ``colour`` at ``origin`` (bottom left) with a black outline."""
    x, y = origin
    for dx, dy in _AROUND:
        cv2.putText(canvas, text, (x + dx, y + dy), FONT, size, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, FONT, size, colour, 1, cv2.LINE_AA)
