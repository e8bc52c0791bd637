"""The header every phantom instance shares: file meta, patient, study and series identity."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid


def phantom_dataset(
    sop_class: str,
    *,
    study_uid: str,
    series_uid: str,
    patient_name: str,
    patient_id: str,
    patient_sex: str,
    instance_number: int = 1,
) -> Dataset:
    """A new instance (Explicit VR Little Endian) with its identity and dates filled in."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    now = datetime.now(UTC)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient_sex
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "medseg phantom"
    return ds


def set_plane(
    ds: Dataset,
    *,
    frame_uid: str,
    pixel_mm: float,
    slice_mm: float,
    orientation: Sequence[float],
    position: Sequence[float],
) -> None:
    """Frame of Reference and Image Plane modules of one slice of a volume."""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceThickness = f"{slice_mm:.3f}"
    ds.PixelSpacing = [f"{pixel_mm:.4f}", f"{pixel_mm:.4f}"]
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.3f}" for v in position]


def set_mono16_pixels(ds: Dataset, plane: npt.NDArray[np.integer[Any]], *, signed: bool) -> None:
    """Image Pixel module for a 16-bit greyscale slice."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(plane, dtype="<i2" if signed else "<u2").tobytes()


def set_ct_image(
    ds: Dataset,
    *,
    body_part: str,
    series_description: str,
    slice_location: float,
    rescale_intercept: float,
    kvp: str,
) -> None:
    """The CT Image attributes of an axial chest slice in HU (lung window)."""
    ds.AcquisitionNumber = 1
    ds.Modality = "CT"
    ds.BodyPartExamined = body_part
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.KVP = kvp
    ds.SliceLocation = f"{slice_location:.3f}"
    ds.RescaleIntercept = f"{rescale_intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
