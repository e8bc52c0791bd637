"""A reviewer's corrected SEG as 3D Slicer or OHIF write one: drawn on the source series'
images (Referenced Series Sequence to the same series), MANUAL segments, a new series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes
from sqlalchemy.orm import Session, sessionmaker

from db.models import Correction

LUNG = hd.sr.CodedConcept("39607008", "SCT", "Lung")


def write_corrected_seg(
    sources: list[Path],
    masks: list[tuple[str, hd.sr.CodedConcept, npt.NDArray[np.bool_]]],
    out: Path,
    creator: str = "Reviewer^Dana",
) -> Path:
    """A SEG of ``masks`` (label, property type, (images, rows, columns) in ``sources``'
    order) on the images ``sources``, saved at ``out``."""
    images = [pydicom.dcmread(p) for p in sources]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, (label, kind, _) in enumerate(masks, start=1)
    ]
    pixels = np.stack([m for _, _, m in masks], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Slicer",
        manufacturer_model_name="3D Slicer",
        software_versions="5.6",
        device_serial_number="1",
        series_description="Segmentation (edited)",
        content_creator_name=creator,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out, enforce_file_format=True)
    return out


def seg_correction(session_factory: sessionmaker[Session], path: Path, by: str) -> int:
    """A corrected SEG at ``path`` recorded as received from AE ``by`` (no series row, as a
    test puts it); returns the correction's id."""
    with session_factory.begin() as session:
        row = Correction(kind="seg", by=by, source="dicom", path=str(path))
        session.add(row)
        session.flush()
        return row.id
