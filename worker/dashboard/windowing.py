"""Window presets: how the grey values of a slice map to the screen.

CT presets are in Hounsfield units (after the modality LUT). ``auto`` stretches the 1st to
99th percentile of the slice (what MR gets, where grey values have no absolute meaning);
``file`` is the window the modality stored in the image (WindowCenter/Width), and ``auto``
when it stored none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.multival import MultiValue


@dataclass(frozen=True)
class Preset:
    name: str
    width: float | None  # None: not a fixed window
    level: float | None

    @property
    def title(self) -> str:
        if self.width is None or self.level is None:
            return self.name
        return f"{self.name} W{self.width:g}/L{self.level:g}"


LUNG = Preset("lung", 1500, -600)
MEDIASTINUM = Preset("mediastinum", 350, 50)
BONE = Preset("bone", 2000, 500)
BRAIN = Preset("brain", 80, 40)
AUTO = Preset("auto", None, None)
FILE = Preset("file", None, None)

#: The presets offered per modality, the default first.
BY_MODALITY: dict[str, tuple[Preset, ...]] = {
    "CT": (LUNG, MEDIASTINUM, BONE, BRAIN, AUTO),
    "MR": (AUTO, FILE),
}
OTHER: tuple[Preset, ...] = (FILE, AUTO)


def presets_for(modality: str) -> tuple[Preset, ...]:
    """The presets that make sense for ``modality`` (CT: HU windows), the default first."""
    return BY_MODALITY.get(modality.upper(), OTHER)


def _first(value: object) -> float:
    return float(value[0] if isinstance(value, MultiValue) else value)  # type: ignore[arg-type]


def _bounds(ds: Dataset, pixels: npt.NDArray[np.float64], preset: Preset) -> tuple[float, float]:
    if preset.width is not None and preset.level is not None:
        return preset.level - preset.width / 2, preset.level + preset.width / 2
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if preset is FILE and center is not None and width is not None:
        c, w = _first(center), _first(width)
        return c - w / 2, c + w / 2
    low, high = (float(v) for v in np.percentile(pixels, (1, 99)))
    return low, high


def apply_window(
    ds: Dataset, pixels: npt.NDArray[np.float64], preset: Preset
) -> npt.NDArray[np.uint8]:
    """``pixels`` (after the modality LUT) as 8-bit grey through ``preset``; MONOCHROME1
    inverted so that bright is dense as on every viewer."""
    low, high = _bounds(ds, pixels, preset)
    scaled = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1) * 255
    image = scaled.astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 255 - image
    return image
