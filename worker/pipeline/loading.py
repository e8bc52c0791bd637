"""Load a series from files: read, group, sort by position, decode, derive geometry."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from worker.core.errors import InputError
from worker.core.tags import SeriesTags
from worker.pipeline.demographics import empty_invalid_demographics

logger = logging.getLogger(__name__)

_ORIENTATION_TOLERANCE = 1e-3


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


@dataclass
class LoadedSeries:
    datasets: list[Dataset]  # sorted in stack order, pixel data decoded into ``frames``
    frames: npt.NDArray[np.float32]  # (n, rows, columns), modality LUT applied
    tags: SeriesTags
    geometry: VolumeGeometry | None

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    def require_geometry(self) -> VolumeGeometry:
        if self.geometry is None:
            raise InputError(
                "series has no usable volume geometry "
                "(ImagePositionPatient/ImageOrientationPatient/PixelSpacing)"
            )
        return self.geometry


def tags_of(ds: Dataset) -> SeriesTags:
    image_type = ds.get("ImageType", "")
    if not isinstance(image_type, str):
        image_type = "\\".join(str(v) for v in image_type)
    return SeriesTags.of(
        modality=str(ds.get("Modality", "")),
        body_part_examined=str(ds.get("BodyPartExamined", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        image_type=image_type,
        sop_class_uid=str(ds.get("SOPClassUID", "")),
    )


def read_headers(paths: Iterable[Path]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Group DICOM files by SeriesInstanceUID; return (groups, [(path, reason)] skipped)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            series_uid = str(ds.SeriesInstanceUID)
        except Exception as exc:  # damaged headers raise many types; all mean "skip it"
            skipped.append((path, f"not a readable DICOM image: {type(exc).__name__}"))
            continue
        groups[series_uid].append(path)
    return dict(groups), skipped


def _geometry(datasets: Sequence[Dataset]) -> VolumeGeometry | None:
    try:
        orientation = np.array(datasets[0].ImageOrientationPatient, dtype=np.float64)
        positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
        spacing = [float(v) for v in datasets[0].PixelSpacing]
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or positions.shape != (len(datasets), 3) or len(spacing) != 2:
        return None
    if min(spacing) <= 0:
        raise InputError(f"PixelSpacing must be positive, got {spacing}")
    for ds in datasets[1:]:
        other = np.array(ds.ImageOrientationPatient, dtype=np.float64)
        if np.abs(other - orientation).max() > _ORIENTATION_TOLERANCE:
            raise InputError("slices of the series have different orientations")
    return VolumeGeometry(
        row_cosine=orientation[:3],
        column_cosine=orientation[3:],
        positions=positions,
        pixel_spacing=(spacing[0], spacing[1]),
    )


def _stack_order(datasets: list[Dataset]) -> list[Dataset]:
    geometry = _geometry(datasets)
    if geometry is not None and len(datasets) > 1:
        order = np.argsort(geometry.slice_locations, kind="stable")
        return [datasets[i] for i in order]
    return sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))


def _to_grey(pixels: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[Any]:
    """Colour (RGB, YBR converted by pydicom, palette) → luminance; greyscale unchanged."""
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
        return pixels
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey: npt.NDArray[Any] = pixels[..., :3].astype(np.float32) @ weights
    return grey


def _decode(ds: Dataset) -> npt.NDArray[np.float32]:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types on damaged or unsupported data
        raise InputError(f"cannot decode pixel data: {exc}") from exc
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        pixels = apply_modality_lut(pixels, ds)
    return np.asarray(_to_grey(pixels, ds), dtype=np.float32)


def load_series(paths: Sequence[Path]) -> LoadedSeries:
    """Read and decode one series; raises InputError with a reason a person can act on.

    The loader is an input boundary: pydicom decodes lazily, so a damaged element raises
    whatever its converter raises when first touched (fuzzing found NotImplementedError,
    TypeError, ...). All of them mean "this data is damaged", never "retry later".
    """
    try:
        return _load_series(paths)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"damaged DICOM data: {type(exc).__name__}: {exc}"[:500]) from exc


def _load_series(paths: Sequence[Path]) -> LoadedSeries:
    if not paths:
        raise InputError("empty series")
    datasets: list[Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise InputError(f"{path.name}: not readable DICOM ({exc})") from exc
    empty_invalid_demographics(datasets)  # never fatal: see demographics.py
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}) != 1:
        raise InputError("files belong to more than one series")
    shapes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds in datasets}
    if len(shapes) != 1:
        raise InputError(f"slices have different sizes: {sorted(shapes)}")
    datasets = _stack_order(datasets)
    frames = [_decode(ds) for ds in datasets]
    stacked = np.concatenate([f if f.ndim == 3 else f[np.newaxis] for f in frames], axis=0)
    geometry = _geometry(datasets) if len(datasets) > 1 else None
    if geometry is not None:
        locations = geometry.slice_locations
        if len(np.unique(np.round(locations, 3))) != len(locations):
            raise InputError("two slices share a position (duplicate or mixed stacks)")
    return LoadedSeries(
        datasets=datasets, frames=stacked, tags=tags_of(datasets[0]), geometry=geometry
    )
