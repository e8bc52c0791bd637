"""Pixel size of a projection radiograph for areas, and what it means.

PixelSpacing (calibrated to the patient) is used first; otherwise ImagerPixelSpacing, the
detector-plane size, divided by EstimatedRadiographicMagnificationFactor when the header has
one. A missing or zero value (RG1_UNCI.dcm has PixelSpacing 0\\0 and no ImagerPixelSpacing)
gives no scale: areas are then reported in pixels, never from an invented size.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from worker.pipeline.calibration import Calibration, _spacing


@dataclass(frozen=True)
class RadiographScale:
    calibration: Calibration | None
    note: str  # where the scale came from, or why there is none


def radiograph_scale(ds: Dataset) -> RadiographScale:
    pixel = _spacing(ds, "PixelSpacing")
    if pixel is not None:
        return RadiographScale(pixel, "areas from PixelSpacing")
    imager = _spacing(ds, "ImagerPixelSpacing")
    if imager is None:
        present = [k for k in ("PixelSpacing", "ImagerPixelSpacing") if k in ds]
        why = f"{' and '.join(present)} zero or invalid" if present else "no pixel spacing"
        return RadiographScale(None, f"{why}: lung areas in pixels (no physical scale invented)")
    try:
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor", 0) or 0)
    except (TypeError, ValueError):
        factor = 0.0
    if factor > 0:
        scaled = Calibration(
            row_mm=imager.row_mm / factor,
            column_mm=imager.column_mm / factor,
            source="ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
        )
        return RadiographScale(
            scaled, f"areas from ImagerPixelSpacing corrected by magnification {factor:g}"
        )
    return RadiographScale(
        imager, "areas from ImagerPixelSpacing (detector plane, not corrected for magnification)"
    )
