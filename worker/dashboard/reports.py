"""What the study page reads from a result's report.json: its findings, each with the
validation status of the component that found it (None: the result's own)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from db.models import Result

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShownFinding:
    label: str
    score: float
    box_px: tuple[float, ...]
    validation: str | None


def _read(path: Path) -> list[ShownFinding]:
    try:
        raw = json.loads(path.read_text()).get("findings", [])
        return [
            ShownFinding(
                str(f["label"]),
                float(f["score"]),
                tuple(float(v) for v in f["box_px"][:4]),
                f.get("validation"),
            )
            for f in raw
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("report %s: findings unreadable (%s)", path, exc)
        return []


def findings_by_result(results: Iterable[Result]) -> dict[int, list[ShownFinding]]:
    """Result ID -> its report.json findings (results without findings left out)."""
    shown: dict[int, list[ShownFinding]] = {}
    for result in results:
        report = next((Path(o.path) for o in result.outputs if o.kind == "json"), None)
        if report is not None and report.is_file():
            found = _read(report)
            if found:
                shown[result.id] = found
    return shown
