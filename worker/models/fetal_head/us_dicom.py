"""Fetal head phantoms as real ultrasound DICOM: calibrated by SequenceOfUltrasoundRegions.

Monochrome or RGB, single frame (US Image Storage) or cine (US Multi-frame Image Storage).
Calibration is PhysicalDeltaX/Y in cm in a region of the sequence, never PixelSpacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, generate_uid

from worker.models._phantom_dicom import phantom_dataset
from worker.models.fetal_head.phantoms import FetalHeadTruth, make_fetal_head_frame


@dataclass
class UsPhantom:
    path: Path
    truth: FetalHeadTruth
    best_frame: int  # 0-based index of the frame drawn without degradation


def _region(rows: int, cols: int, pixel_mm: float) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = cols - 1
    region.RegionLocationMaxY1 = rows - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = pixel_mm / 10.0
    region.PhysicalDeltaY = pixel_mm / 10.0
    return region


def _degrade(image: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A poor cine frame: motion blur and lost contrast."""
    k = int(rng.integers(15, 31))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    blurred = np.asarray(cv2.filter2D(image, -1, kernel), dtype=np.float32)
    degraded: npt.NDArray[np.uint8] = np.clip(blurred * 0.55 + 40, 0, 255).astype(np.uint8)
    return degraded


def write_us_phantom(
    path: Path,
    seed: int,
    *,
    frames: int = 1,
    rgb: bool = False,
    calibrated: bool = True,
    patient_id: str = "PHANTOM-US",
    study_uid: str | None = None,
    series_description: str = "OB FETAL HEAD BIOMETRY",
) -> UsPhantom:
    rng = np.random.default_rng(seed + 7_000_000)
    first = make_fetal_head_frame(seed)
    truth = first.truth
    best = int(rng.integers(0, frames))
    images = []
    for k in range(frames):
        image = (
            first.image
            if k == best
            else make_fetal_head_frame(seed * 1000 + k + 1, truth=truth).image
        )
        images.append(image if k == best else _degrade(image, rng))
    pixels = np.stack(images)
    if rgb:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
        pixels[..., 2] = np.clip(pixels[..., 2].astype(np.int16) + 6, 0, 255).astype(
            np.uint8
        )  # tint
    write_us_image(
        path,
        pixels if frames > 1 else pixels[0],
        truth.pixel_mm if calibrated else None,
        series_description=series_description,
        patient_id=patient_id,
        study_uid=study_uid,
    )
    return UsPhantom(path=path, truth=truth, best_frame=best)


def write_us_image(
    path: Path,
    pixels: npt.NDArray[np.uint8],
    pixel_mm: float | None,
    *,
    series_description: str = "OB FETAL HEAD BIOMETRY",
    patient_id: str = "PHANTOM-US",
    patient_name: str = "PHANTOM^FETAL",
    study_uid: str | None = None,
) -> Dataset:
    """Write 8-bit ``pixels`` as US DICOM: (rows, cols) or (rows, cols, 3) RGB is one frame
    (US Image Storage); a leading frame axis makes a cine (US Multi-frame Image Storage).
    ``pixel_mm`` calibrates it through SequenceOfUltrasoundRegions (None: uncalibrated)."""
    rgb = pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] == 3)
    frames = pixels.shape[0] if pixels.ndim == (4 if rgb else 3) else 1
    sop_class = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    ds = phantom_dataset(
        sop_class,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        patient_name=patient_name,
        patient_id=patient_id,
        patient_sex="F",
    )
    ds.Modality = "US"
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.PatientOrientation = ""
    rows, cols = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if rgb:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = "33.3"
        ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.LossyImageCompression = "00"
    if pixel_mm is not None:
        ds.SequenceOfUltrasoundRegions = [_region(rows, cols, pixel_mm)]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds
