"""Fetal brain phantom stacks as MR Image Storage series with their true geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from worker.models._phantom_dicom import phantom_dataset, set_mono16_pixels, set_plane
from worker.models.fetal_brain.phantoms import FetalBrainStack

#: (row direction, column direction) of each plane, LPS.
ORIENTATIONS = {
    "TRA": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "COR": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "SAG": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


def write_mr_stack(
    stack: FetalBrainStack,
    folder: Path,
    *,
    study_uid: str | None = None,
    patient_id: str = "PHANTOM-MR",
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    row_dir, col_dir = (np.array(v) for v in ORIENTATIONS[stack.plane])
    normal = np.cross(row_dir, col_dir)
    slices, rows, cols = stack.image.shape
    corner = (
        -(row_dir * cols + col_dir * rows) * stack.pixel_mm / 2
        - normal * slices * stack.slice_mm / 2
    )
    paths = []
    for k, plane in enumerate(stack.image):
        ds = _mr_slice(
            (study_uid, series_uid, frame_uid),
            ("PHANTOM^FETALMR", patient_id),
            k,
            plane,
            spacing=(stack.pixel_mm, stack.pixel_mm, stack.slice_mm),
            orientation=(*row_dir, *col_dir),
            position=corner + normal * k * stack.slice_mm,
        )
        ds.SeriesDescription = f"FETAL BRAIN SSFSE T2 {stack.plane}"
        ds.EchoTime = "90"
        ds.RepetitionTime = "1200"
        ds.MagneticFieldStrength = "1.5"
        path = folder / f"MR{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_nifti_stack(
    image_path: Path,
    folder: Path,
    *,
    description: str = "FETAL BRAIN HASTE T2",
    study_uid: str | None = None,
    patient_id: str = "NIFTI-MR",
) -> list[Path]:
    """A NIfTI stack as an MR series with the geometry of its affine (RAS to LPS): one
    instance per slice along the thick axis, rows and columns as ``data.nifti_pairs`` reads
    them, intensities rounded to unsigned 16 bits."""
    import nibabel as nib

    from worker.models.fetal_brain.data import stack_order

    nii: Any = nib.load(image_path)
    affine = np.asarray(nii.affine, dtype=np.float64) * np.array([-1, -1, 1, 1])[:, None]
    zooms = [float(z) for z in nii.header.get_zooms()[:3]]
    thick, rows_axis, cols_axis = stack_order(zooms)
    volume = np.asarray(nii.get_fdata()).transpose(thick, rows_axis, cols_axis)
    row_dir = affine[:3, cols_axis] / np.linalg.norm(affine[:3, cols_axis])
    col_dir = affine[:3, rows_axis] / np.linalg.norm(affine[:3, rows_axis])
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    pixels = np.clip(np.round(volume), 0, 65535).astype(np.uint16)
    paths = []
    for k, plane in enumerate(pixels):
        index = np.zeros(4)
        index[thick], index[3] = k, 1.0
        ds = _mr_slice(
            (study_uid, series_uid, frame_uid),
            ("NIFTI^FETALMR", patient_id),
            k,
            plane,
            spacing=(zooms[rows_axis], zooms[cols_axis], zooms[thick]),
            orientation=(*row_dir, *col_dir),
            position=(affine @ index)[:3],
        )
        ds.SeriesDescription = description
        path = folder / f"MR{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _mr_slice(
    uids: tuple[str, str, str],
    patient: tuple[str, str],
    k: int,
    plane: npt.NDArray[np.integer[Any]],
    *,
    spacing: tuple[float, float, float],
    orientation: tuple[float, ...],
    position: npt.NDArray[np.float64],
) -> Dataset:
    """Slice ``k`` of an MR series: ``uids`` (study, series, frame of reference), ``patient``
    (name, ID), ``spacing`` (row mm, column mm, slice mm), unsigned 16-bit pixels."""
    study_uid, series_uid, frame_uid = uids
    ds = phantom_dataset(
        MRImageStorage,
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=patient[0],
        patient_id=patient[1],
        patient_sex="F",
        instance_number=k + 1,
    )
    set_plane(
        ds,
        frame_uid=frame_uid,
        pixel_mm=spacing[0],
        slice_mm=spacing[2],
        orientation=orientation,
        position=[float(v) for v in position],
    )
    ds.PixelSpacing = [f"{spacing[0]:.4f}", f"{spacing[1]:.4f}"]
    set_mono16_pixels(ds, plane, signed=False)
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.MRAcquisitionType = "2D"
    # Single-shot spin echo (HASTE/SSFSE); what the source does not say is left empty.
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.EchoTime = ""
    ds.RepetitionTime = ""
    ds.EchoTrainLength = ""
    ds.Laterality = ""
    ds.PatientPosition = ""
    return ds
