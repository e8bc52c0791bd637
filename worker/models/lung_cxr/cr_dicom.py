"""Chest radiograph phantoms as CR or DX DICOM, with every calibration variant seen in the wild.

``spacing`` picks where the pixel size goes: ``pixel`` (PixelSpacing), ``imager``
(ImagerPixelSpacing only, as most DX detectors write), ``both``, ``zero`` (PixelSpacing 0\\0,
as RG1_UNCI.dcm from pydicom-data) or ``none``. MONOCHROME1 stores inverted values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydicom import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    generate_uid,
)

from worker.models._phantom_dicom import phantom_dataset, set_mono16_pixels
from worker.models.lung_cxr.phantoms import ChestXray

Spacing = Literal["pixel", "imager", "both", "zero", "none"]


def write_cxr(
    phantom: ChestXray,
    path: Path,
    *,
    modality: Literal["CR", "DX"] = "CR",
    spacing: Spacing = "pixel",
    monochrome1: bool = False,
    patient_id: str = "PHANTOM-CXR",
    study_uid: str | None = None,
) -> Path:
    """Write ``phantom`` as one 12-bit instance at ``path``; returns ``path``."""
    sop_class = (
        ComputedRadiographyImageStorage
        if modality == "CR"
        else DigitalXRayImageStorageForPresentation
    )
    ds = phantom_dataset(
        sop_class,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        patient_name="PHANTOM^CHEST",
        patient_id=patient_id,
        patient_sex="O",
    )
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.SeriesDescription = "CHEST PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    values = phantom.image.astype(np.uint16) * 16  # 12 bits stored
    if monochrome1:
        values = 4095 - values
    set_mono16_pixels(ds, values, signed=False)
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    mm = f"{phantom.pixel_mm:.5f}"
    if spacing in ("pixel", "both"):
        ds.PixelSpacing = [mm, mm]
    if spacing in ("imager", "both"):
        ds.ImagerPixelSpacing = [mm, mm]
    if spacing == "zero":
        ds.PixelSpacing = ["0", "0"]
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
        ds.ImageLaterality = "U"
        ds.BurnedInAnnotation = "NO"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.DetectorType = "SCINTILLATOR"
        ds.LossyImageCompression = "00"
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = -1 if monochrome1 else 1
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = []
        chest = Dataset()
        chest.CodeValue = "51185008"
        chest.CodingSchemeDesignator = "SCT"
        chest.CodeMeaning = "Chest"
        ds.AnatomicRegionSequence = [chest]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
