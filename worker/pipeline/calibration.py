"""Physical pixel size of 2D images: ultrasound regions, PixelSpacing, ImagerPixelSpacing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom import Dataset

logger = logging.getLogger(__name__)

_CM = 3  # PhysicalUnitsX/YDirection: 3 = cm (PS3.3 C.8.5.5.1.15)
_SPATIAL_2D = 1


@dataclass(frozen=True)
class Calibration:
    row_mm: float  # between rows (vertical)
    column_mm: float  # between columns (horizontal)
    source: str  # the attribute it came from


def ultrasound_calibration(ds: Dataset) -> Calibration | None:
    """mm/pixel from the largest 2D tissue region in cm of SequenceOfUltrasoundRegions."""
    best: tuple[int, Calibration] | None = None
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        try:
            if int(region.RegionSpatialFormat) != _SPATIAL_2D:
                continue
            if (
                int(region.PhysicalUnitsXDirection) != _CM
                or int(region.PhysicalUnitsYDirection) != _CM
            ):
                continue
            dx, dy = float(region.PhysicalDeltaX), float(region.PhysicalDeltaY)
            area = (int(region.RegionLocationMaxX1) - int(region.RegionLocationMinX0)) * (
                int(region.RegionLocationMaxY1) - int(region.RegionLocationMinY0)
            )
        except (AttributeError, TypeError, ValueError):
            continue
        if dx <= 0 or dy <= 0:
            continue
        calibration = Calibration(
            row_mm=abs(dy) * 10, column_mm=abs(dx) * 10, source="SequenceOfUltrasoundRegions"
        )
        if best is None or area > best[0]:
            best = (area, calibration)
    return best[1] if best else None


def _spacing(ds: Dataset, keyword: str) -> Calibration | None:
    value = ds.get(keyword)
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if row <= 0 or col <= 0:
        logger.warning("%s is %s\\%s: not a usable calibration", keyword, row, col)
        return None
    return Calibration(row_mm=row, column_mm=col, source=keyword)


def image_calibration(ds: Dataset) -> Calibration | None:
    """Ultrasound regions first, then PixelSpacing, then ImagerPixelSpacing; None if none."""
    return (
        ultrasound_calibration(ds)
        or _spacing(ds, "PixelSpacing")
        or _spacing(ds, "ImagerPixelSpacing")
    )
