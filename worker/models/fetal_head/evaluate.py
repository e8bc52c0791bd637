"""Evaluate the fetal head model on HC18-layout frames: per-frame records and their summary.

Every frame is measured exactly as the service measures it (``FetalHeadPredictor.predict``:
the same preprocessing, test-time augmentation, clean-up, ellipse fit and quality gate), then
compared with the sonographer's ellipse: Dice and Hausdorff distance of the fitted ellipses,
signed HC difference. The summary reports the HC error as mean +- sd, median and 95th
percentile, by trimester-sized HC bands, and split by the gate's verdict.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import directed_hausdorff

from worker.core.commands import Evaluation, Progress
from worker.models._nn import checkpoint
from worker.models._nn.metrics import dice
from worker.models.fetal_head.biometry import ellipse_mask, hadlock_ga_days, largest_contour
from worker.models.fetal_head.hc18 import HC18Item, load_image, load_mask, read_index
from worker.models.fetal_head.hc18_split import subject_of
from worker.models.fetal_head.predictor import FetalHeadPredictor


@dataclass(frozen=True)
class FrameRecord:
    name: str
    subject: str
    pixel_mm: float
    hc_reference_mm: float
    hc_mm: float | None  # None: no head found
    dice: float
    hausdorff_mm: float | None
    signals: dict[str, float] | None
    review: list[str]

    @property
    def hc_diff_mm(self) -> float | None:
        return None if self.hc_mm is None else self.hc_mm - self.hc_reference_mm

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hc_diff_mm": self.hc_diff_mm}


def hausdorff_mm(a: np.ndarray, b: np.ndarray, pixel_mm: float) -> float | None:
    pa, pb = largest_contour(a), largest_contour(b)
    if pa is None or pb is None:
        return None
    return float(max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]) * pixel_mm)


def evaluate_frame(predictor: FetalHeadPredictor, item: HC18Item) -> FrameRecord:
    truth = load_mask(item.annotation)
    spacing = (item.pixel_mm, item.pixel_mm)
    (result,) = predictor.predict([load_image(item.image)], spacing)
    e = result.ellipse
    fitted = (
        ellipse_mask(truth.shape, (e.cx, e.cy, e.a, e.b, e.angle_deg), spacing)
        if e is not None
        else None
    )
    return FrameRecord(
        name=item.image.name,
        subject=subject_of(item),
        pixel_mm=item.pixel_mm,
        hc_reference_mm=item.hc_mm,
        hc_mm=e.circumference if e is not None else None,
        dice=dice(fitted, truth) if fitted is not None else 0.0,
        hausdorff_mm=hausdorff_mm(fitted, truth, item.pixel_mm) if fitted is not None else None,
        signals=result.signals.as_dict() if result.signals else None,
        review=result.review,
    )


def evaluate_frames(
    predictor: FetalHeadPredictor,
    items: Sequence[HC18Item],
    progress: Callable[[int, int], None] | None = None,
) -> list[FrameRecord]:
    records = []
    for i, item in enumerate(items):
        records.append(evaluate_frame(predictor, item))
        if progress:
            progress(i + 1, len(items))
    return records


def hc_at_weeks(weeks: float) -> float:
    """The HC (mm) Hadlock's formula gives for a gestational age (bisection of its inverse)."""
    lo, hi = 50.0, 370.0
    for _ in range(60):
        mid = (lo + hi) / 2
        days = hadlock_ga_days(mid)
        assert days is not None
        lo, hi = (mid, hi) if days < weeks * 7 else (lo, mid)
    return (lo + hi) / 2


#: Reference-HC bands of trimester size: before 14 weeks, 14-28 weeks, from 28 weeks (Hadlock).
HC_BANDS = (("first trimester", 0.0, hc_at_weeks(14)), ("second trimester", hc_at_weeks(14),
            hc_at_weeks(28)), ("third trimester", hc_at_weeks(28), math.inf))  # fmt: skip


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": len(v),
        "mean": round(float(v.mean()), 3),
        "sd": round(float(v.std()), 3),
        "median": round(float(np.median(v)), 3),
        "p95": round(float(np.percentile(v, 95)), 3),
        "max": round(float(v.max()), 3),
    }


def _abs_hc(records: Sequence[FrameRecord]) -> list[float]:
    return [abs(r.hc_diff_mm) for r in records if r.hc_diff_mm is not None]


def summarise(records: Sequence[FrameRecord]) -> dict[str, Any]:
    """The numbers reported for a set of frames (see the module docstring)."""
    answered = [r for r in records if r.hc_mm is not None]
    accepted = [r for r in records if not r.review]
    flagged = [r for r in records if r.review]
    reasons = Counter(reason.split(" (")[0] for r in flagged for reason in r.review)
    return {
        "frames": len(records),
        "subjects": len({r.subject for r in records}),
        "no_answer": len(records) - len(answered),
        "dice": _stats([r.dice for r in records]),
        "hc_abs_diff_mm": _stats(_abs_hc(records)),
        "hc_signed_diff_mm": round(float(np.mean([r.hc_diff_mm for r in answered])), 3)
        if answered
        else None,
        "hausdorff_mm": _stats([r.hausdorff_mm for r in records if r.hausdorff_mm is not None]),
        "by_hc_band": {
            name: _stats(_abs_hc([r for r in records if lo <= r.hc_reference_mm < hi]))
            for name, lo, hi in HC_BANDS
        },
        "gate": {
            "flagged_share": round(len(flagged) / len(records), 4) if records else 0.0,
            "accepted_hc_abs_diff_mm": _stats(_abs_hc(accepted)),
            "flagged_hc_abs_diff_mm": _stats(_abs_hc(flagged)),
            "accepted_dice": _stats([r.dice for r in accepted]),
            "reasons": dict(reasons.most_common()),
        },
    }


def format_summary(s: dict[str, Any]) -> str:
    hc, d, hd, g = s["hc_abs_diff_mm"], s["dice"], s["hausdorff_mm"], s["gate"]

    def line(label: str, st: dict[str, float], unit: str = " mm") -> str:
        if not st.get("n"):
            return f"{label:<22} -"
        return (
            f"{label:<22} {st['mean']:.3f} ± {st['sd']:.3f}{unit}  median {st['median']:.3f}"
            f"  p95 {st['p95']:.3f}  (n {st['n']})"
        )

    rows = [
        f"frames {s['frames']} of {s['subjects']} subjects, no answer: {s['no_answer']}",
        line("Dice", d, ""),
        line("HC abs difference", hc),
        f"{'HC signed difference':<22} {s['hc_signed_diff_mm']:+.3f} mm"
        if s["hc_signed_diff_mm"] is not None
        else "",
        line("Hausdorff", hd),
        *(line(f"  HC {name}", st) for name, st in s["by_hc_band"].items()),
        f"quality gate: {g['flagged_share']:.1%} flagged for review",
        line("  accepted HC", g["accepted_hc_abs_diff_mm"]),
        line("  flagged HC", g["flagged_hc_abs_diff_mm"]),
        *(f"  {n:>4} x {reason}" for reason, n in g["reasons"].items()),
    ]
    return "\n".join(r for r in rows if r)


def held_out(items: Sequence[HC18Item], weights: Path) -> list[HC18Item]:
    """The frames of the subjects the checkpoint's metadata names as held out."""
    names = set(checkpoint.read_metadata(weights).get("split", {}).get("test_subjects", []))
    if not names:
        raise ValueError(f"{weights.name}: its metadata names no held-out subjects")
    chosen = [i for i in items if subject_of(i) in names]
    if not chosen:
        raise ValueError("none of the checkpoint's held-out subjects is in this folder")
    return chosen


def command(args: argparse.Namespace, progress: Progress) -> Evaluation:
    """``medseg evaluate fetal-head``: ``--subjects held-out`` keeps the subjects the weights
    were not trained or tuned on; ``--records FILE`` writes one JSON line per frame."""
    from worker.models.fetal_head.serve import DEFAULT_WEIGHTS

    weights = args.weights or DEFAULT_WEIGHTS
    items = read_index(args.data)
    if getattr(args, "subjects", "all") == "held-out":
        items = held_out(items, weights)
    predictor = FetalHeadPredictor(weights, args.device)
    records = evaluate_frames(predictor, items, lambda i, n: progress("evaluate", i, n))
    if getattr(args, "records", None):
        args.records.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in records))
    summary = {"weights_sha256": predictor.sha256, **summarise(records)}
    if getattr(args, "record", False):
        key = "evaluation_held_out" if args.subjects == "held-out" else "evaluation"
        checkpoint.update_metadata(weights, {key: {**summary, "data": str(args.data.name)}})
    return Evaluation(summary, format_summary(summary))
