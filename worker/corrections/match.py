"""Which result a corrected SEG corrects: the latest result, on the series the SEG references
(Referenced Series Sequence, else the source images it names), of the newest job whose own
SEG has a segment the corrected one matches (``segments.match_segments``). Nothing matched:
``UnmatchedError`` says why, and the SEG is kept for an operator."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Instance, Job, JobState, OutputFile, Result, Series
from worker.corrections.segments import SegmentInfo, match_segments, segments_of

#: The jobs whose results can be corrected: those with a result someone may be shown.
CORRECTABLE = (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)


class UnmatchedError(Exception):
    """No result for this SEG; the message is the reason an operator reads."""


@dataclass(frozen=True)
class Match:
    job_id: int
    result_id: int
    seg_path: str
    #: {result segment number: corrected segment number}
    segments: dict[int, int]


def referenced_series(seg: Dataset) -> tuple[set[str], set[str]]:
    """(series UIDs, SOP instance UIDs) the SEG says it was drawn on."""
    series = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    instances = {
        str(i.ReferencedSOPInstanceUID)
        for s in seg.get("ReferencedSeriesSequence", [])
        for i in s.get("ReferencedInstanceSequence", [])
    }
    instances |= {str(i.ReferencedSOPInstanceUID) for i in seg.get("SourceImageSequence", [])}
    return series, instances


def find_result(session: Session, seg: Dataset) -> Match:
    """The result ``seg`` corrects; raises UnmatchedError."""
    own = session.scalar(
        select(OutputFile.result_id).where(OutputFile.sop_instance_uid == str(seg.SOPInstanceUID))
    )
    if own is not None:
        raise UnmatchedError(
            f"this is medseg's own SEG (an output of result {own}), not a correction"
        )
    series_uids, instance_uids = referenced_series(seg)
    if not series_uids and not instance_uids:
        raise UnmatchedError("the SEG references no source series (Referenced Series Sequence)")
    found = set(
        session.scalars(select(Series.id).where(Series.series_instance_uid.in_(series_uids)))
    )
    if instance_uids:
        found |= set(
            session.scalars(
                select(Instance.series_id).where(Instance.sop_instance_uid.in_(instance_uids))
            )
        )
    if not found:
        shown = ", ".join(sorted(series_uids)) or "(by its instances)"
        raise UnmatchedError(f"no series received here is the SEG's source: {shown}")
    jobs = session.scalars(
        select(Job)
        .where(Job.series_id.in_(found), Job.state.in_(CORRECTABLE), Job.superseded_at.is_(None))
        .order_by(Job.id.desc())
    ).all()
    corrected = segments_of(seg)
    tried: list[str] = []
    for job in jobs:
        result = session.scalar(
            select(Result).where(Result.job_id == job.id).order_by(Result.id.desc()).limit(1)
        )
        if result is None:
            continue
        path = next((o.path for o in result.outputs if o.kind == "seg"), None)
        if path is None:
            continue
        ours = _segments_at(path)
        matched = match_segments(ours, corrected)
        if matched:
            return Match(job.id, result.id, path, matched)
        tried.append(f"job {job.id} ({', '.join(s.label for s in ours)})")
    if not tried:
        raise UnmatchedError("the source series has no finished result to correct")
    labels = ", ".join(s.label for s in corrected) or "none"
    raise UnmatchedError(
        f"no segment matches by label or property type: the SEG has {labels}; "
        f"results: {'; '.join(tried)}"
    )


def _segments_at(path: str) -> list[SegmentInfo]:
    return segments_of(pydicom.dcmread(path, stop_before_pixels=True))
