"""A DICOM SEG sent to medseg is a reviewer's corrected segmentation (as 3D Slicer and OHIF
send them back), not a study to process: at its series' completion each SEG instance is
recorded as a correction for the worker to match to its result (worker.corrections). The
gateway reads no file here; matching, even of our own SEG come back, is the worker's."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from db.models import Correction, Series

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_correction(series: Series) -> bool:
    return series.sop_class_uid == SEGMENTATION_STORAGE


def record_received(session: Session, series: Series) -> list[int]:
    """One correction per SEG instance of ``series`` (by: the sender's AE title until the
    worker reads the SEG's Content Creator's Name); returns their IDs."""
    rows = [
        Correction(
            kind="seg",
            by=series.calling_ae or "unknown sender",
            source="dicom",
            series_id=series.id,
            path=instance.path,
            sop_instance_uid=instance.sop_instance_uid,
        )
        for instance in series.instances
    ]
    session.add_all(rows)
    session.flush()
    logger.info("series %s: %d corrected SEG(s) received", series.id, len(rows))
    return [r.id for r in rows]
