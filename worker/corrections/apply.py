"""Apply one recorded correction (a worker task, ``medseg.correct``): find the result it
corrects, recompute its measurements, write the corrected SEG and SR, and record the new
result in one transaction: pending deliveries by each destination's policy, the replaced
result's unsent deliveries withheld, and who changed what in the audit trail."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import (
    Correction,
    CorrectionState,
    DeliveryState,
    Job,
    Measurement,
    OutputFile,
    Result,
    utcnow,
)
from worker.core.card import ValidationStatus
from worker.core.registry import get_spec
from worker.corrections import ellipse as head
from worker.corrections.match import CORRECTABLE, UnmatchedError, find_result
from worker.corrections.measure import OldValue, recompute
from worker.corrections.segments import kind_of, masks_on_series
from worker.corrections.write import write_corrected
from worker.export.outputs import MeasurementValue, ModelOutput, Segment
from worker.export.seg_read import SegMasks, read_seg_masks
from worker.ops.audit import Actor, Source, record
from worker.ops.dating import Dating, entered
from worker.pipeline.calibration import image_calibration
from worker.pipeline.loading import LoadedSeries, decode_series, read_series
from worker.pipeline.run import OutputRecord
from worker.runtime.jobs import DeliverTo, deliveries_for, instance_paths, job_dir
from worker.trainset.reviewed import CORRECTED  # Result.review_decision of a corrected result

logger = logging.getLogger(__name__)


class CorrectionError(Exception):
    """The correction cannot be applied; the message says why (kept on the row)."""


@dataclass(frozen=True)
class _Target:
    job_id: int
    result_id: int
    model_name: str
    validation: str | None
    paths: list[Path]
    out_dir: Path
    old: list[OldValue]
    outputs: dict[str, Path]  # kind -> path of the replaced result's files
    segment_map: dict[int, int]  # for a SEG: result segment -> corrected segment
    entered_ga: Dating | None = None  # the study's entered GA by dates (worker.ops.dating)


def execute_correction(
    session_factory: sessionmaker[Session],
    correction_id: int,
    results_root: Path,
    deliver_to: DeliverTo | None = None,
) -> CorrectionState | None:
    """Apply correction ``correction_id``; None when it is not waiting to be applied."""
    with session_factory.begin() as session:
        row = session.get(Correction, correction_id, with_for_update=True)
        if row is None or row.state is not CorrectionState.RECEIVED:
            return None
        try:
            target = _target(session, row, results_root)
        except UnmatchedError as exc:
            row.state, row.reason = CorrectionState.UNMATCHED, str(exc)[:2000]
            logger.warning("correction %s: unmatched: %s", correction_id, exc)
            return row.state
        except CorrectionError as exc:
            row.state, row.reason = CorrectionState.FAILED, str(exc)[:2000]
            return row.state
        kind, ellipse_json, seg_path = row.kind, row.ellipse, row.path
    try:
        series = decode_series(read_series(target.paths))
        series.entered_ga = target.entered_ga
        output, extras = _corrected_output(series, target, kind, ellipse_json, seg_path)
        spec = get_spec(target.model_name)
        output.validation = target.validation  # type: ignore[assignment]
        files = write_corrected(
            series,
            output,
            spec,
            target.out_dir,
            replaced_sr=target.outputs.get("sr"),
            extras=extras,
        )
    except (CorrectionError, head.EllipseError, KeyError, ValueError, OSError) as exc:
        logger.warning("correction %s failed: %s", correction_id, exc)
        return _fail(session_factory, correction_id, f"{type(exc).__name__}: {exc}")
    return _record(
        session_factory,
        correction_id,
        target,
        output,
        files=files,
        deliver_to=deliver_to or DeliverTo(),
    )


def _target(session: Session, row: Correction, results_root: Path) -> _Target:
    segment_map: dict[int, int] = {}
    if row.kind == "seg":
        if not row.path:
            raise CorrectionError("no SEG file recorded")
        received = pydicom.dcmread(row.path, stop_before_pixels=True)
        creator = str(received.get("ContentCreatorName", "") or "").strip()
        row.by = (creator or row.by)[:128]  # who drew it, when the SEG says
        match = find_result(session, received)
        row.job_id, segment_map = match.job_id, match.segments
    if row.job_id is None:
        raise CorrectionError("no job to correct")
    job = session.get(
        Job,
        row.job_id,
        options=[selectinload(Job.results).selectinload(Result.measurements)],
    )
    if job is None or job.state not in CORRECTABLE or not job.results:
        raise CorrectionError(f"job {row.job_id} has no finished result to correct")
    result = job.results[-1]
    row.replaces_result_id = result.id
    series = job.series
    out_dir = job_dir(results_root, job) / f"correction-{row.id}"
    return _Target(
        job_id=job.id,
        result_id=result.id,
        model_name=result.model_name,
        validation=result.validation,
        paths=instance_paths(job),
        out_dir=out_dir,
        old=[OldValue(m.key, m.label, m.value, m.unit) for m in result.measurements],
        outputs={o.kind: Path(o.path) for o in result.outputs},
        segment_map=segment_map,
        entered_ga=entered(series.study),
    )


def _corrected_output(
    series: LoadedSeries, target: _Target, kind: str, ellipse_json: str | None, seg_path: str | None
) -> tuple[ModelOutput, dict[str, object]]:
    if kind == "ellipse":
        if ellipse_json is None:
            raise CorrectionError("no ellipse recorded")
        ellipse = head.from_json(ellipse_json)
        frames = [m.value for m in target.old if m.key == "measured_frame"]
        frame = int(frames[0]) - 1 if frames else 0
        calibration = image_calibration(series.datasets[0])
        spacing = (calibration.row_mm, calibration.column_mm) if calibration else (1.0, 1.0)
        shape = (int(series.frames.shape[1]), int(series.frames.shape[2]))
        segment, measurements, warnings = head.corrected_head(
            ellipse,
            shape,
            spacing,
            calibrated=calibration is not None,
            source=series.datasets[0],
            frame=frame,
            entered=series.entered_ga,
        )
        extras: dict[str, object] = {"ellipse": json.loads(ellipse_json)}
        return ModelOutput([segment], measurements, warnings, source_frame=frame), extras
    if seg_path is None or "seg" not in target.outputs:
        raise CorrectionError("no SEG to correct")
    header = pydicom.dcmread(target.outputs["seg"], stop_before_pixels=True)
    numbers = sorted(int(i.SegmentNumber) for i in header.SegmentSequence)
    old_masks = masks_on_series(read_seg_masks(target.outputs["seg"]), series, numbers)
    mapped = [target.segment_map[n] for n in numbers if n in target.segment_map]
    new_masks = masks_on_series(_read_corrected(Path(seg_path)), series, mapped) if mapped else None
    masks, segments, labels = {}, [], {}
    for k, number in enumerate(numbers):
        if number in target.segment_map and new_masks is not None:
            mask = new_masks[..., mapped.index(target.segment_map[number])]
        else:
            mask = old_masks[..., k]
        kind_ = kind_of(header, number)
        masks[number], labels[number] = mask, kind_.label
        segments.append(Segment(kind_, np.ascontiguousarray(mask)))
    done = recompute(target.old, masks, labels, series)
    kept_segments = [labels[n] for n in numbers if n not in target.segment_map]
    extras = {
        "not_recomputed": done.kept,
        "dropped_stale_ranks": done.dropped,
        "segments_not_corrected": kept_segments,
    }
    return ModelOutput(segments, done.measurements), extras


def _read_corrected(path: Path) -> SegMasks:
    try:
        return read_seg_masks(path)
    except (AttributeError, IndexError, InvalidDicomError) as exc:  # a SEG lacking a sequence
        raise CorrectionError(f"the corrected SEG cannot be read: {exc}") from exc


def _changes(old: list[OldValue], new: list[MeasurementValue]) -> dict[str, list[float | None]]:
    before = {m.key: m.value for m in old}
    after = {m.key: m.value for m in new}
    return {
        key: [_round(before.get(key)), _round(after.get(key))]
        for key in sorted(before.keys() | after.keys())
        if _round(before.get(key)) != _round(after.get(key))
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _fail(
    session_factory: sessionmaker[Session], correction_id: int, reason: str
) -> CorrectionState:
    with session_factory.begin() as session:
        row = session.get_one(Correction, correction_id, with_for_update=True)
        row.state, row.reason = CorrectionState.FAILED, reason[:2000]
        return row.state


def _record(
    session_factory: sessionmaker[Session],
    correction_id: int,
    target: _Target,
    output: ModelOutput,
    *,
    files: list[OutputRecord],
    deliver_to: DeliverTo,
) -> CorrectionState:
    changes = _changes(target.old, output.measurements)
    with session_factory.begin() as session:
        row = session.get_one(Correction, correction_id, with_for_update=True)
        if row.state is not CorrectionState.RECEIVED:  # applied meanwhile by another worker
            return row.state
        job = session.get_one(Job, target.job_id, with_for_update=True)
        replaced = session.get_one(Result, target.result_id)
        if job.results[-1].id != replaced.id:
            row.state = CorrectionState.FAILED
            row.reason = f"result {replaced.id} was replaced meanwhile; correct the newer one"
            return row.state
        validation: ValidationStatus | None = output.validation
        new = Result(
            job_id=job.id,
            model_name=replaced.model_name,
            model_version=replaced.model_version,
            weights_sha256=replaced.weights_sha256,
            inference_seconds=0.0,
            review=None,
            validation=validation,
            review_decision=CORRECTED,
            reviewed_by=row.by,
            reviewed_at=utcnow(),
            review_note=row.note,
            measurements=[
                Measurement(key=m.key, label=m.label, value=m.value, unit=m.unit)
                for m in output.measurements
            ],
            outputs=[
                OutputFile(kind=o.kind, path=str(o.path), sop_instance_uid=o.sop_instance_uid)
                for o in files
            ],
        )
        new.deliveries = deliveries_for(
            job, deliver_to, flagged=False, validation=validation, decision=CORRECTED
        )
        session.add(new)
        for delivery in replaced.deliveries:
            if delivery.state in (DeliveryState.PENDING, DeliveryState.WITHHELD):
                delivery.state = DeliveryState.WITHHELD
                delivery.error = f"withheld: replaced by correction {correction_id}"
        session.flush()
        row.state, row.result_id, row.applied_at = CorrectionState.APPLIED, new.id, utcnow()
        row.changes = json.dumps(changes)
        source: Source = row.source if row.source in ("dashboard", "cli", "dicom") else "dicom"  # type: ignore[assignment]
        shown = "; ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()) or "no value changed"
        record(
            session,
            Actor(row.by, source),
            "correct",
            job_id=job.id,
            detail=f"{row.kind} correction {correction_id} by {row.by}: result {replaced.id} "
            f"replaced by {new.id}; {shown}",
        )
        logger.info("correction %s applied: job %s result %s", correction_id, job.id, new.id)
        return row.state


def waiting(session: Session) -> list[int]:
    """Corrections recorded and not applied yet (for tests and status)."""
    return list(
        session.scalars(select(Correction.id).where(Correction.state == CorrectionState.RECEIVED))
    )
