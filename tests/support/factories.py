"""Synthetic DICOM factories for tests (nothing committed as blobs, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from dicom_gateway.records import InstanceInfo
from worker.models.lung_ct.phantoms import ChestPhantom, make_chest_phantom, write_chest_series

_CACHE: dict[tuple[int, int, int], ChestPhantom] = {}


def chest_phantom(seed: int = 0, slices: int = 24, size: int = 128) -> ChestPhantom:
    key = (seed, slices, size)
    if key not in _CACHE:
        _CACHE[key] = make_chest_phantom(seed=seed, slices=slices, size=size, pixel_spacing=2.6)
    return _CACHE[key]


def chest_series(folder: Path, seed: int = 0, slices: int = 24, **kwargs: str) -> list[Path]:
    return write_chest_series(chest_phantom(seed, slices), folder, **kwargs)


def file_with_meta(path: Path, sop_class: str, body: bytes) -> Path:
    """A Part 10 file: valid preamble and file meta, then ``body`` as the data set bytes."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + buffer.getvalue() + body)
    return path


def minimal_image(sop_class: str, modality: str, with_pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "TEST"
    if with_pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.zeros((8, 8), dtype="<u2").tobytes()
    return ds


def instance_record(
    series: str, sop: str, path: str = "/dev/null", study: str = "1.2.3"
) -> InstanceInfo:
    """What the gateway records for one received CT instance (no file behind it)."""
    return InstanceInfo(
        study_uid=study,
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        body_part_examined="CHEST",
        series_description="",
        image_type="",
        instance_number=None,
        images_in_acquisition=None,
        study_date=None,
        accession_number=None,
        calling_ae="T",
        calling_host=None,
        path=path,
        size_bytes=0,
    )
