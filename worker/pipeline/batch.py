"""Batch mode: the pipeline without the gateway (files or folders in, grouped by series)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from worker.core.card import not_for_clinical_use
from worker.core.errors import NothingFoundError, PermanentError, SkippedError
from worker.core.paths import safe_component
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import decode_series, read_headers
from worker.pipeline.run import SeriesResult, read_and_route, run_loaded

logger = logging.getLogger(__name__)


@dataclass
class BatchRow:
    study_uid: str
    series_uid: str
    modality: str
    model: str | None
    model_version: str | None
    status: str  # succeeded | needs_review | no_finding | failed | skipped
    error: str | None
    measurements: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    validation: str | None = None  # the model card's status for the weights that ran

    def as_json(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "model": self.model,
            "model_version": self.model_version,
            "status": self.status,
            "error": self.error,
            "measurements": self.measurements,
            "outputs": self.outputs,
            "warnings": self.warnings,
            "findings": self.findings,
            "review": self.review,
            "validation": self.validation,
            "not_for_clinical_use": None
            if self.validation is None
            else not_for_clinical_use(self.validation),
        }


def iter_files(inputs: Iterable[Path]) -> Iterator[Path]:
    for item in inputs:
        if item.is_dir():
            yield from sorted(
                p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        elif item.is_file():
            yield item
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")


def start_row(series_uid: str, paths: list[Path]) -> BatchRow:
    """A series' row before it runs: failed until it succeeds (or is skipped)."""
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return BatchRow(
        study_uid=str(header.get("StudyInstanceUID", "")),
        series_uid=series_uid,
        modality=str(header.get("Modality", "")),
        model=None,
        model_version=None,
        status="failed",
        error=None,
        files=len(paths),
    )


def target_dir(out_dir: Path, row: BatchRow) -> Path:
    return out_dir / safe_component(row.study_uid) / safe_component(row.series_uid)


def record_error(row: BatchRow, exc: Exception) -> None:
    """What a series' error means for its row: skipped (not for us: not an image, no model,
    not a volume) or failed, with why. ``row.model`` stays what routing chose."""
    if isinstance(exc, NothingFoundError):
        row.status, row.error = "no_finding", str(exc)
    elif isinstance(exc, SkippedError):
        row.status, row.error = "skipped", str(exc)
    elif isinstance(exc, PermanentError):
        row.error = str(exc)
    else:  # one broken series must not stop the batch
        logger.error("series failed unexpectedly", exc_info=exc)
        row.error = f"{type(exc).__name__}: {exc}"


def record_result(row: BatchRow, result: SeriesResult) -> None:
    row.status = result.status
    row.review = result.review
    row.validation = result.validation
    row.model, row.model_version = result.spec.name, result.spec.version
    row.measurements = {m.key: round(m.value, 3) for m in result.measurements}
    row.outputs = [str(o.path) for o in result.outputs]
    row.warnings = result.warnings
    row.findings = [f.as_json() for f in result.findings]


#: Progress is counted in steps, three per series: read and decoded, model run, exported; a
#: long series moves the bar while it runs, not only when it is done.
STEPS_PER_SERIES = 3


class StepCounter:
    """Finished steps of a batch, reported as ``report(done, total)``; thread-safe (the
    overlapped path finishes steps on its loader, model and export threads)."""

    def __init__(self, report: Callable[[int, int], None] | None, series: int) -> None:
        self._report = report
        self._lock = threading.Lock()
        self.done = 0
        self.total = STEPS_PER_SERIES * series
        if report is not None:
            report(0, self.total)

    def step(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if self._report is not None:
                self._report(self.done, self.total)


def process_paths(
    inputs: Iterable[Path],
    out_dir: Path,
    models: ModelCache,
    progress: Callable[[int, int], None] | None = None,
    *,
    overlap: bool = True,
) -> tuple[list[BatchRow], list[tuple[Path, str]]]:
    """Run every series found under ``inputs``; returns (one row per series, skipped files).

    ``progress(done, total)`` is called before the first series and after each step of each
    one (``STEPS_PER_SERIES``: decoded, model run, exported). With
    ``overlap`` the next series is decoded and the previous one exported while the model
    runs (worker.pipeline.batch_overlap); the rows, their order and the files are the same.
    """
    groups, skipped = read_headers(iter_files(inputs))
    steps = StepCounter(progress, len(groups))
    if overlap:
        from worker.pipeline.batch_overlap import run_overlapped

        rows = run_overlapped(list(groups.items()), out_dir, models, steps)
    else:
        rows = _run_sequential(list(groups.items()), out_dir, models, steps)
    return rows, skipped


def _run_sequential(
    groups: list[tuple[str, list[Path]]],
    out_dir: Path,
    models: ModelCache,
    steps: StepCounter,
) -> list[BatchRow]:
    rows: list[BatchRow] = []
    for series_uid, paths in groups:
        row = start_row(series_uid, paths)
        left = STEPS_PER_SERIES
        try:
            start = time.perf_counter()
            headers, spec = read_and_route(paths)
            row.model, row.model_version = spec.name, spec.version
            series = decode_series(headers)
            load_seconds = time.perf_counter() - start
            steps.step()
            left -= 1
            result = run_loaded(series, spec, models, target_dir(out_dir, row))
            result.timings["load"] = load_seconds
        except Exception as exc:
            record_error(row, exc)
        else:
            record_result(row, result)
        steps.step(left)  # the model and the export run together here
        rows.append(row)
    return rows
