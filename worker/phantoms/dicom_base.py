"""The header every phantom instance shares: file meta, patient, study and series identity."""

from __future__ import annotations

from datetime import UTC, datetime

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
