"""``medseg export-training``: a model's reviewed results as a de-identified training set.

Each usable case (a reviewer accepted the result, or corrected it and the correction can be
read) is written in the model's own layout (worker.trainset.layouts) under a pseudonymous
subject key (worker.trainset.deid), and listed in ``manifest.json``: the files, the subject
key, keyed hashes of the study and series UIDs, the decision, the reviewer's role (never the
name), and the model, version and weights that produced the result. Cases that cannot be
written are counted in the manifest with the reason, without identifiers.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from worker import __version__
from worker.export.seg_read import read_seg_masks
from worker.pipeline.loading import load_series
from worker.trainset.deid import KEY_DIGITS, Pseudonyms
from worker.trainset.layouts import ALIASES, LAYOUTS, SkippedCaseError
from worker.trainset.reviewed import USABLE, Case, reviewed_cases

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ExportError(ValueError):
    """The export cannot start (unknown model, folder not empty, no secret)."""


@dataclass
class ExportSummary:
    model: str
    layout: str
    out: Path
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    subjects: set[str] = field(default_factory=set)


def model_name(name: str) -> str:
    """The model a name means (``fetal-head`` is ``fetal-head-unet``); raises ExportError."""
    resolved = ALIASES.get(name, name)
    if resolved not in LAYOUTS:
        known = ", ".join(sorted([*LAYOUTS, *ALIASES]))
        raise ExportError(f"no training layout for {name!r}; one of {known}")
    return resolved


def _write_case(layout: Any, case: Case, subject: str) -> list[str]:
    reference = case.reference
    if reference is None:
        raise SkippedCaseError(
            f"{case.decision}: no reference to learn from (correction not readable)"
        )
    if reference.seg_path is None or not reference.seg_path.exists():
        raise SkippedCaseError("no SEG on disk")
    if not case.paths:
        raise SkippedCaseError("source images no longer on disk (retention)")
    series = load_series(case.paths)
    files: list[str] = layout.add(series, read_seg_masks(reference.seg_path), subject, reference)
    return files


def export_training(
    session_factory: sessionmaker[Session],
    model: str,
    out: Path,
    *,
    secret: str,
    decisions: Sequence[str] = USABLE,
    since: datetime | None = None,
) -> ExportSummary:
    """Write ``model``'s reviewed cases to ``out`` (created; must be empty)."""
    name = model_name(model)
    unknown = set(decisions) - set(USABLE)
    if unknown:
        raise ExportError(f"decisions are {', '.join(USABLE)}; not {', '.join(sorted(unknown))}")
    pseudonyms = Pseudonyms(secret)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    layout = LAYOUTS[name](out)
    summary = ExportSummary(name, layout.name, out)
    entries: list[dict[str, Any]] = []
    for case in reviewed_cases(session_factory, name, decisions, since):
        subject = pseudonyms.subject(case.patient_id, case.study_uid)
        try:
            files = _write_case(layout, case, subject)
        except SkippedCaseError as exc:
            summary.skipped[str(exc)] += 1
            logger.info("export %s: result %d skipped: %s", name, case.result_id, exc)
            continue
        summary.written += 1
        summary.subjects.add(subject)
        reference = case.reference
        assert reference is not None
        entries.append(
            {
                "files": files,
                "subject": subject,
                "subject_basis": "patient" if case.patient_id else "study",
                "study": pseudonyms.uid(case.study_uid),
                "series": pseudonyms.uid(case.series_uid),
                "decision": case.decision,
                "reviewer_role": case.reviewer_role,
                "model": case.model_name,
                "model_version": case.model_version,
                "weights_sha256": case.weights_sha256,
                "measurements": {k: round(v, 4) for k, v in sorted(reference.measurements.items())},
            }
        )
    extra = layout.finish()
    manifest = {
        "model": name,
        "layout": layout.name,
        "layout_files": extra,
        "exported_by": f"medseg {__version__}",
        "decisions": list(decisions),
        "subject_key": "HMAC-SHA256 of the Patient ID under MEDSEG_TRAINING_EXPORT_SECRET, "
        f"first {KEY_DIGITS} hex digits (of the Study UID when the study has no Patient ID)",
        "cases": entries,
        "skipped": dict(summary.skipped),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("exported %d %s case(s) to %s", summary.written, name, out)
    return summary
