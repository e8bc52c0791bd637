"""Batch mode: the pipeline without the gateway (files or folders in, grouped by series)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicom_gateway.storage import safe_component
from worker.errors import NoModelError, PermanentError
from worker.loading import read_headers
from worker.pipeline import run_series
from worker.registry import ModelCache

logger = logging.getLogger(__name__)


@dataclass
class BatchRow:
    study_uid: str
    series_uid: str
    modality: str
    model: str | None
    model_version: str | None
    status: str  # succeeded | failed | skipped
    error: str | None
    measurements: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)

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


def process_paths(
    inputs: Iterable[Path],
    out_dir: Path,
    models: ModelCache,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[BatchRow], list[tuple[Path, str]]]:
    """Run every series found under ``inputs``; returns (one row per series, skipped files).

    ``progress(done, total)`` is called before the first series and after each one.
    """
    groups, skipped = read_headers(iter_files(inputs))
    rows: list[BatchRow] = []
    if progress is not None:
        progress(0, len(groups))
    for series_uid, paths in groups.items():
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
        study_uid = str(header.get("StudyInstanceUID", ""))
        row = BatchRow(
            study_uid=study_uid,
            series_uid=series_uid,
            modality=str(header.get("Modality", "")),
            model=None,
            model_version=None,
            status="failed",
            error=None,
            files=len(paths),
        )
        target = out_dir / safe_component(study_uid) / safe_component(series_uid)
        try:
            result = run_series(paths, models, target)
        except NoModelError as exc:
            row.status, row.error = "skipped", str(exc)
        except PermanentError as exc:
            row.error = str(exc)
        except Exception as exc:  # one broken series must not stop the batch
            logger.exception("series failed unexpectedly")
            row.error = f"{type(exc).__name__}: {exc}"
        else:
            row.status = "succeeded"
            row.model, row.model_version = result.spec.name, result.spec.version
            row.measurements = {m.key: round(m.value, 3) for m in result.measurements}
            row.outputs = [str(o.path) for o in result.outputs]
            row.warnings = result.warnings
            row.findings = [f.as_json() for f in result.findings]
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(groups))
    return rows, skipped
