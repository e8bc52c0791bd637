"""Record a received instance in the DB: study → series → instance, in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from pydicom import Dataset
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Series, SeriesStatus, Study, utcnow
from db.supersede import supersede_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceInfo:
    """What the DB needs to know about one received instance: of the patient's identity, only
    the Patient ID (the study browser searches by it; never logged)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str
    series_description: str
    image_type: str
    instance_number: int | None
    images_in_acquisition: int | None
    study_date: str | None
    accession_number: str | None
    calling_ae: str
    calling_host: str | None
    path: str
    size_bytes: int
    patient_id: str | None = None

    def bare(self) -> InstanceInfo:
        """Only what locates the instance (UIDs, checked before it was answered; its file):
        the row recorded when the database refuses the descriptive values."""
        return replace(
            self,
            modality="",
            body_part_examined="",
            series_description="",
            image_type="",
            instance_number=None,
            images_in_acquisition=None,
            study_date=None,
            accession_number=None,
            calling_host=None,
            patient_id=None,
        )


#: The range of an INTEGER column (PostgreSQL's, 32 bits): a value outside it would make the
#: database refuse the row after the instance was acknowledged.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def clean_text(value: str, limit: int) -> str:
    """``value`` as the database takes it: without NUL (PostgreSQL refuses it in text; one
    would poison a whole batch of rows), valid UTF-8, at most ``limit`` characters."""
    value = value.replace("\0", "").encode("utf-8", "replace").decode("utf-8")
    return value.strip()[:limit]


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return clean_text(str(value), limit)


def _integer(ds: Dataset, keyword: str, minimum: int = INT_MIN) -> int | None:
    """An Integer String for an INTEGER column: None when absent or not one number; a value
    outside ``minimum``..``INT_MAX`` (legal DICOM: IS goes to 12 digits) is None too, with a
    warning naming the attribute (never the value), so the row is never refused for it."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    if not minimum <= number <= INT_MAX:
        element = ds.data_element(keyword)
        logger.warning(
            "%s %s: value outside %d..%d, recorded as empty",
            keyword,
            f"({element.tag.group:04X},{element.tag.element:04X})" if element else "",
            minimum,
            INT_MAX,
        )
        return None
    return number


def instance_info(
    ds: Dataset,
    *,
    transfer_syntax_uid: str,
    calling_ae: str,
    path: str,
    size_bytes: int,
    calling_host: str | None = None,
) -> InstanceInfo:
    return InstanceInfo(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=clean_text(transfer_syntax_uid, 64),
        modality=_text(ds, "Modality", 16),
        body_part_examined=_text(ds, "BodyPartExamined", 64),
        series_description=_text(ds, "SeriesDescription", 64),
        image_type=_text(ds, "ImageType", 128),
        instance_number=_integer(ds, "InstanceNumber"),
        # A count: 0 or less would complete the series at its first instance.
        images_in_acquisition=_integer(ds, "ImagesInAcquisition", minimum=1),
        study_date=_text(ds, "StudyDate", 8) or None,
        accession_number=_text(ds, "AccessionNumber", 16) or None,
        calling_ae=clean_text(calling_ae, 16),
        calling_host=clean_text(calling_host, 64) if calling_host else None,
        path=path,
        size_bytes=size_bytes,
        patient_id=_text(ds, "PatientID", 64) or None,
    )


def upsert_instances(session: Session, infos: Sequence[InstanceInfo], now: datetime) -> list[str]:
    """Rows for many instances in ``session`` (no commit): one study/series lookup per series
    and one query for the instances already known, instead of three queries per instance.

    An instance has one home: resent under another series (or study) its row moves there,
    the series it left has its jobs superseded (and, when instances remain, completes again
    on them), and the file it left is returned, to be removed once this is committed
    (``remove_displaced``).
    """
    displaced: dict[str, None] = {}
    left: set[int] = set()
    by_series: dict[str, list[InstanceInfo]] = {}
    for info in infos:
        by_series.setdefault(info.series_uid, []).append(info)
    for group in by_series.values():
        series, created = _receiving_series(session, group[0], now)
        grew = False
        uids = [info.sop_instance_uid for info in group]
        known = {
            row.sop_instance_uid: row
            for row in session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(uids)))
        }
        for info in group:
            instance = known.get(info.sop_instance_uid)
            if instance is None:
                known[info.sop_instance_uid] = instance = Instance(
                    series_id=series.id,
                    sop_instance_uid=info.sop_instance_uid,
                    sop_class_uid=info.sop_class_uid,
                    transfer_syntax_uid=info.transfer_syntax_uid,
                    instance_number=info.instance_number,
                    path=info.path,
                    size_bytes=info.size_bytes,
                    received_at=now,
                )
                session.add(instance)
                grew = True
                continue
            # Duplicate SOP Instance UID: the newest copy replaces the file and the record.
            if instance.id is not None:
                logger.info("instance %s received again; replacing", instance.id)
            if instance.series_id is not None and instance.series_id != series.id:
                logger.warning(
                    "instance %s moves from series %s to series %s",
                    instance.id,
                    instance.series_id,
                    series.id,
                )
                left.add(instance.series_id)
                grew = True
            if instance.path != info.path:
                displaced[instance.path] = None
            instance.series_id = series.id
            instance.instance_number = info.instance_number
            instance.transfer_syntax_uid = info.transfer_syntax_uid
            instance.path = info.path
            instance.size_bytes = info.size_bytes
            instance.received_at = now
        if grew and not created:
            # Its jobs so far ran on part of it (a restart or abort mid-series, late images).
            supersede_jobs(session, series.id, now)
        final = {instance.path for instance in known.values()}
        displaced = {path: None for path in displaced if path not in final}
    for series_id in left:
        _lost_instances(session, series_id, now)
    return list(displaced)


def _lost_instances(session: Session, series_id: int, now: datetime) -> None:
    """``series_id`` lost an instance to another series: its jobs ran (or would run) on an
    input it no longer has. They are superseded; with instances left it receives again, so
    it completes (and gets a job) on them; left empty it stays as it is, with no job."""
    session.flush()
    supersede_jobs(session, series_id, now, lost=True)
    remaining = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.series_id == series_id)
    )
    series = session.get(Series, series_id)
    if series is not None and remaining and series.status is not SeriesStatus.RECEIVING:
        series.status = SeriesStatus.RECEIVING
        series.completed_at = None
        series.last_received_at = now


def remove_displaced(paths: Sequence[str], root: Path | None) -> None:
    """Remove the files instances left when they moved (after the move was committed); a
    crash before this leaves a stale copy, removed by the next start (``indexer.reconcile``).

    Only regular files under the storage ``root`` are ever removed (a row may name any path:
    one written by hand, or a test's); without a root, nothing is."""
    if root is None:
        return
    base = root.resolve()
    for path in paths:
        target = Path(path)
        try:
            if not target.resolve().is_relative_to(base) or not target.is_file():
                continue
            target.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.error("cannot remove %s, left by an instance that moved: %s", path, exc)


def _receiving_series(session: Session, info: InstanceInfo, now: datetime) -> tuple[Series, bool]:
    """The study and series of ``info`` and whether it is new; a completed series reopens."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == info.study_uid))
    if study is None:
        study = Study(
            study_instance_uid=info.study_uid,
            study_date=info.study_date,
            accession_number=info.accession_number,
            patient_id=info.patient_id,
        )
        session.add(study)
        session.flush()

    series = session.scalar(select(Series).where(Series.series_instance_uid == info.series_uid))
    if series is None:
        series = Series(
            study_id=study.id,
            series_instance_uid=info.series_uid,
            modality=info.modality,
            body_part_examined=info.body_part_examined,
            series_description=info.series_description,
            image_type=info.image_type,
            sop_class_uid=info.sop_class_uid,
            calling_ae=info.calling_ae,
            calling_host=info.calling_host,
            expected_instances=info.images_in_acquisition,
            first_received_at=now,
            last_received_at=now,
        )
        session.add(series)
        session.flush()
        return series, True
    else:
        series.last_received_at = now
        if series.status is not SeriesStatus.RECEIVING:
            logger.info("series %s reopened by a late instance", series.id)
            series.status = SeriesStatus.RECEIVING
            series.completed_at = None
    return series, False


def record_instance(
    session_factory: sessionmaker[Session], info: InstanceInfo, root: Path | None = None
) -> None:
    """Upsert ``info``; concurrent associations racing on the same study/series retry once.
    ``root``: the storage root, under which a file the instance left is removed."""
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            with session_factory.begin() as session:
                displaced = upsert_instances(session, [info], utcnow())
            remove_displaced(displaced, root)
            return
        except IntegrityError:
            if attempt == attempts:
                raise
            logger.debug("concurrent insert for series; retrying (%d)", attempt)


#: Errors that say the database is away, not that a row is bad: the rows wait for it.
UNAVAILABLE = (OperationalError, InterfaceError)


def record_acknowledged(
    session_factory: sessionmaker[Session], info: InstanceInfo, root: Path | None = None
) -> bool:
    """Record an instance that was (or is about to be) answered success: when the database
    refuses the row for its content, the bare row (``InstanceInfo.bare``) is recorded
    instead, so the instance keeps its place in its series. Returns False when the full row
    was refused; raises when the database is away, or refuses even the bare row."""
    try:
        record_instance(session_factory, info, root)
        return True
    except UNAVAILABLE:
        raise
    except SQLAlchemyError as exc:
        logger.warning(
            "instance %s of series %s: row refused (%s); recorded without its descriptive values",
            info.sop_instance_uid,
            info.series_uid,
            type(exc).__name__,
        )
    record_instance(session_factory, info.bare(), root)
    return False
