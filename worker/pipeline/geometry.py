"""Patient-space geometry of a series' frames: classic images (one plane per file) and
Enhanced CT/MR/... multi-frame images (one plane per frame, in the functional groups)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from worker.core.errors import InputError

ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VolumeGeometry:
    """Patient-space geometry of a stack of parallel slices (LPS, mm)."""

    row_cosine: npt.NDArray[np.float64]  # direction of increasing column index
    column_cosine: npt.NDArray[np.float64]  # direction of increasing row index
    positions: npt.NDArray[np.float64]  # (n, 3) ImagePositionPatient, in stack order
    pixel_spacing: tuple[float, float]  # (between rows, between columns)

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        normal: npt.NDArray[np.float64] = np.cross(self.row_cosine, self.column_cosine)
        return normal

    @property
    def slice_locations(self) -> npt.NDArray[np.float64]:
        return self.positions @ self.normal

    def tilt_degrees(self) -> float:
        """Angle between the slice normal and the line through the first and last slice
        positions: a gantry-tilted CT's slices are sheared along it (0 for a plain stack)."""
        if len(self.positions) < 2:
            return 0.0
        step = self.positions[-1] - self.positions[0]
        length = float(np.linalg.norm(step))
        if length == 0.0:
            return 0.0
        cosine = abs(float(step @ self.normal)) / length
        return float(np.degrees(np.arccos(min(1.0, cosine))))

    def slice_thicknesses(self) -> npt.NDArray[np.float64]:
        """Each slice's share of the volume: half the gap to each neighbour (ends mirror)."""
        locations = self.slice_locations
        if len(locations) == 1:
            raise InputError("one slice has no thickness from positions")
        gaps: npt.NDArray[np.float64] = np.abs(np.diff(locations))
        left = np.concatenate([gaps[:1], gaps])
        right = np.concatenate([gaps, gaps[-1:]])
        thickness: npt.NDArray[np.float64] = (left + right) / 2.0
        return thickness

    def voxel_volumes_ml(self) -> npt.NDArray[np.float64]:
        """Volume in mL of one voxel of each slice."""
        area_mm2 = self.pixel_spacing[0] * self.pixel_spacing[1]
        return area_mm2 * self.slice_thicknesses() / 1000.0


@dataclass(frozen=True)
class FramePlane:
    orientation: npt.NDArray[np.float64]  # (6,) ImageOrientationPatient
    position: npt.NDArray[np.float64]  # (3,) ImagePositionPatient
    spacing: tuple[float, float]


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def is_enhanced(ds: Dataset) -> bool:
    """A multi-frame image whose per-frame geometry is in functional groups."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _group_value(groups: Sequence[Dataset], sequence: str, keyword: str) -> object:
    """``keyword`` of the first item of ``sequence`` in the first group holding it."""
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _plane(orientation: object, position: object, spacing: object) -> FramePlane | None:
    try:
        o = np.array(orientation, dtype=np.float64)
        p = np.array(position, dtype=np.float64)
        s = [float(v) for v in spacing]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if o.shape != (6,) or p.shape != (3,) or len(s) != 2:
        return None
    return FramePlane(o, p, (s[0], s[1]))


def frame_planes(ds: Dataset) -> list[FramePlane] | None:
    """One plane per frame of ``ds``; None when the image does not say where its frames are
    (no Plane Position/Orientation or Pixel Spacing, or a classic multi-frame image)."""
    n = frame_count(ds)
    if is_enhanced(ds):
        shared = list(ds.get("SharedFunctionalGroupsSequence", []))[:1]
        per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
        if len(per_frame) != n:
            return None
        planes = []
        for group in per_frame:
            groups = [group, *shared]
            plane = _plane(
                _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"),
                _group_value(groups, "PlanePositionSequence", "ImagePositionPatient"),
                _group_value(groups, "PixelMeasuresSequence", "PixelSpacing"),
            )
            if plane is None:
                return None
            planes.append(plane)
        return planes
    if n != 1:
        return None
    plane = _plane(
        ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), ds.get("PixelSpacing")
    )
    return None if plane is None else [plane]


def missing_geometry(ds: Dataset) -> str:
    """Why ``frame_planes`` found no geometry in ``ds``, for a person."""
    if is_enhanced(ds):
        return (
            "its functional groups lack Plane Position, Plane Orientation or Pixel Measures "
            "for some frames"
        )
    if frame_count(ds) > 1:
        return (
            "it is a multi-frame image without per-frame functional groups (no position per frame)"
        )
    if "FrameOfReferenceUID" not in ds:
        return "it has no Frame of Reference (a projection or ultrasound image)"
    absent = [
        k
        for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if k not in ds
    ]
    return f"it lacks {', '.join(absent) or 'valid plane values'}"


def stack_geometry(planes: Sequence[FramePlane]) -> VolumeGeometry:
    """The geometry of ``planes`` in the given order; raises InputError when they do not form
    one stack of parallel slices with one pixel spacing."""
    orientation = planes[0].orientation
    spacing = planes[0].spacing
    if min(spacing) <= 0:
        raise InputError(f"PixelSpacing must be positive, got {list(spacing)}")
    for plane in planes[1:]:
        if np.abs(plane.orientation - orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError("slices of the series have different orientations")
        if np.abs(np.subtract(plane.spacing, spacing)).max() > ORIENTATION_TOLERANCE:
            raise InputError("slices of the series have different pixel spacings")
    return VolumeGeometry(
        row_cosine=orientation[:3],
        column_cosine=orientation[3:],
        positions=np.array([p.position for p in planes], dtype=np.float64),
        pixel_spacing=spacing,
    )


def stack_order(planes: Sequence[FramePlane]) -> npt.NDArray[np.intp]:
    """Indices that sort ``planes`` along the slice normal (stable)."""
    geometry = stack_geometry(planes)
    order: npt.NDArray[np.intp] = np.argsort(geometry.slice_locations, kind="stable")
    return order
