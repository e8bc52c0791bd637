"""A CT volume in HU with its patient geometry: read from NRRD, written as a DICOM CT series.

The pyradiomics source package carries two real chest CTs as NRRD (``lung1_image.nrrd``,
``lung2_image.nrrd``); this module turns them into what the service receives: one CT Image
Storage instance per slice with ImagePositionPatient / ImageOrientationPatient from the NRRD
origin and direction, PixelSpacing and SliceThickness from its spacing, and stored values
rescaled to HU by RescaleSlope / RescaleIntercept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.uid import CTImageStorage, generate_uid

from worker.core.errors import DataLayoutError
from worker.models._phantom_dicom import (
    phantom_dataset,
    set_ct_image,
    set_mono16_pixels,
    set_plane,
)
from worker.pipeline.loading import VolumeGeometry

PYRADIOMICS_CASES = ("lung1", "lung2")
_INTERCEPT = -1024  # stored value 0 is -1024 HU, as most scanners write it


@dataclass
class CtVolume:
    hu: npt.NDArray[np.int16]  # (slices, rows, columns)
    geometry: VolumeGeometry
    name: str


def read_nrrd(path: Path) -> CtVolume:
    """A 3D NRRD in LPS (as pyradiomics ships it) → HU array (slices, rows, columns) + geometry."""
    try:
        import nrrd
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise RuntimeError(
            "reading NRRD needs pynrrd (pip install pynrrd; in the dev extra)"
        ) from exc
    data, header = nrrd.read(str(path))
    space = str(header.get("space", "left-posterior-superior"))
    if space not in ("left-posterior-superior", "LPS"):
        raise ValueError(f"{path}: space {space!r} is not LPS")
    directions = np.asarray(header["space directions"], dtype=np.float64)
    origin = np.asarray(header["space origin"], dtype=np.float64)
    if data.ndim != 3 or directions.shape != (3, 3):
        raise ValueError(f"{path}: not a 3D volume")
    spacing = np.linalg.norm(directions, axis=1)
    positions = origin + np.arange(data.shape[2])[:, None] * directions[2]
    geometry = VolumeGeometry(
        row_cosine=directions[0] / spacing[0],  # NRRD axis 0 runs along a row (columns)
        column_cosine=directions[1] / spacing[1],  # NRRD axis 1 runs down a column (rows)
        positions=positions,
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
    )
    hu = np.ascontiguousarray(np.transpose(data, (2, 1, 0))).astype(np.int16)
    return CtVolume(hu=hu, geometry=geometry, name=path.name.split("_image")[0])


def pyradiomics_case(data_dir: Path, case: str) -> Path:
    """Path of one pyradiomics chest CT (``make test-data`` puts them in the data cache)."""
    if case not in PYRADIOMICS_CASES:
        raise ValueError(f"unknown case {case!r}; known: {PYRADIOMICS_CASES}")
    path = data_dir / f"{case}_image.nrrd"
    if not path.is_file():
        raise DataLayoutError(
            f"{data_dir}: no {path.name} (a chest CT of the pyradiomics 3.0.1 source package; "
            "`make test-data` puts it in ~/.cache/medseg/data)"
        )
    return path


def write_ct_series(
    volume: CtVolume,
    out_dir: Path,
    *,
    patient_id: str,
    patient_name: str = "ANONYMOUS^CT",
    series_description: str = "CHEST CT",
    body_part: str = "CHEST",
    slice_thickness: float | None = None,
) -> list[Path]:
    """Write the volume as a CT series, one file per slice; returns the paths."""
    geometry = volume.geometry
    if slice_thickness is None:
        slice_thickness = float(np.median(geometry.slice_thicknesses()))
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    orientation = [*geometry.row_cosine.tolist(), *geometry.column_cosine.tolist()]
    stored: npt.NDArray[Any] = np.clip(volume.hu.astype(np.int32) - _INTERCEPT, 0, 65535)
    paths: list[Path] = []
    for k, plane in enumerate(stored):
        ds = phantom_dataset(
            CTImageStorage,
            study_uid=study_uid,
            series_uid=series_uid,
            patient_name=patient_name,
            patient_id=patient_id,
            patient_sex="O",
            instance_number=k + 1,
        )
        position = geometry.positions[k]
        set_plane(
            ds,
            frame_uid=frame_uid,
            pixel_mm=geometry.pixel_spacing[0],
            slice_mm=slice_thickness,
            orientation=orientation,
            position=position.tolist(),
        )
        ds.PixelSpacing = [f"{geometry.pixel_spacing[0]:.7g}", f"{geometry.pixel_spacing[1]:.7g}"]
        set_mono16_pixels(ds, plane.astype(np.uint16), signed=False)
        ds.BitsStored = 12 if int(plane.max()) < 4096 else 16
        ds.HighBit = ds.BitsStored - 1
        ds.Manufacturer = "medseg (converted from NRRD)"
        set_ct_image(
            ds,
            body_part=body_part,
            series_description=series_description,
            slice_location=float(position @ geometry.normal),
            rescale_intercept=_INTERCEPT,
            kvp="",
        )
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
