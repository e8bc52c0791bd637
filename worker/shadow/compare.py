"""``medseg compare MODEL --live V1 --shadow V2``: the live and the shadow version on the same
series. Every live result of V1 that V2 shadowed is a pair; over the pairs:

* agreement: Dice of the two SEGs (all segments joined), and per measurement the Bland-Altman
  mean difference (shadow - live) with its 95 % limits (worker.shadow.agreement);
* how often each version's quality gate flagged its result (and how often the shadow failed);
* where a reviewer accepted or corrected the live result (worker.trainset.reviewed), each
  version's error against the reviewer: mean absolute difference per measurement and Dice
  against the reviewer's mask. An accepted live result is its own reference, so the live
  version's error there is 0 by construction: the shadow's error says how far V2 moves
  away from what a reviewer signed off.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Result
from db.shadow_models import ShadowResult
from worker.export.seg_read import SegMasks, dice, read_seg_masks
from worker.shadow.agreement import BlandAltman, bland_altman
from worker.trainset.reviewed import reference_for

#: Measurements that are labels or bookkeeping, not sizes: not compared.
NOT_COMPARED = frozenset({"measured_frame"})


@dataclass(frozen=True)
class Pair:
    result_id: int
    live: dict[str, float]
    shadow: dict[str, float]
    live_flagged: bool
    shadow_flagged: bool
    shadow_status: str
    dice: float | None
    decision: str | None
    reference: dict[str, float] | None
    live_dice_vs_reviewer: float | None
    shadow_dice_vs_reviewer: float | None


@dataclass(frozen=True)
class ReviewerError:
    n: int
    live_mae: float
    shadow_mae: float


@dataclass
class Comparison:
    model: str
    live: str
    shadow: str
    pairs: list[Pair] = field(default_factory=list)

    @property
    def compared(self) -> list[Pair]:
        """The pairs where the shadow produced a result."""
        return [p for p in self.pairs if p.shadow_status in ("succeeded", "needs_review")]

    def dice_summary(self) -> tuple[int, float, float] | None:
        """(n, mean, minimum) of the live-vs-shadow Dice, or None."""
        values = [p.dice for p in self.compared if p.dice is not None]
        if not values:
            return None
        return len(values), statistics.fmean(values), min(values)

    def keys(self) -> list[str]:
        found = {k for p in self.compared for k in p.live if k in p.shadow}
        return sorted(found - NOT_COMPARED)

    def agreement(self) -> dict[str, BlandAltman]:
        out: dict[str, BlandAltman] = {}
        for key in self.keys():
            pairs = [(p.live[key], p.shadow[key]) for p in self.compared if key in p.shadow]
            if pairs:
                out[key] = bland_altman([a for a, _ in pairs], [b for _, b in pairs])
        return out

    def flag_rates(self) -> dict[str, float]:
        """Share of the pairs each version's gate flagged; the shadow's failures apart."""
        n = len(self.pairs)
        if not n:
            return {}
        return {
            "live": sum(p.live_flagged for p in self.pairs) / n,
            "shadow": sum(p.shadow_flagged for p in self.pairs) / n,
            "shadow_failed": sum(p.shadow_status in ("failed", "no_finding") for p in self.pairs)
            / n,
        }

    def reviewer_errors(self) -> dict[str, ReviewerError]:
        out: dict[str, ReviewerError] = {}
        reviewed = [p for p in self.compared if p.reference is not None]
        for key in self.keys():
            rows = [
                (p.reference[key], p.live[key], p.shadow[key])
                for p in reviewed
                if p.reference is not None and key in p.reference and key in p.shadow
            ]
            if rows:
                out[key] = ReviewerError(
                    len(rows),
                    statistics.fmean(abs(live - ref) for ref, live, _ in rows),
                    statistics.fmean(abs(shadow - ref) for ref, _, shadow in rows),
                )
        return out

    def reviewer_dice(self) -> tuple[int, float, float] | None:
        """(n, live mean Dice, shadow mean Dice) against the reviewer's masks."""
        rows = [
            (p.live_dice_vs_reviewer, p.shadow_dice_vs_reviewer)
            for p in self.compared
            if p.live_dice_vs_reviewer is not None and p.shadow_dice_vs_reviewer is not None
        ]
        if not rows:
            return None
        return (
            len(rows),
            statistics.fmean(a for a, _ in rows if a is not None),
            statistics.fmean(b for _, b in rows if b is not None),
        )

    def decisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pairs:
            if p.decision:
                counts[p.decision] = counts.get(p.decision, 0) + 1
        return counts


def _masks(path: str | Path | None) -> SegMasks | None:
    if path is None or not Path(path).exists():
        return None
    return read_seg_masks(Path(path))


def _dice(a: SegMasks | None, b: SegMasks | None) -> float | None:
    return None if a is None or b is None else dice(a, b)


def _pair(session: Session, result: Result, shadow: ShadowResult) -> Pair:
    live_seg = _masks(next((o.path for o in result.outputs if o.kind == "seg"), None))
    shadow_seg = _masks(shadow.seg_path)
    reference = reference_for(session, result)
    reviewer_seg = _masks(reference.seg_path) if reference is not None else None
    return Pair(
        result_id=result.id,
        live={m.key: m.value for m in result.measurements},
        shadow={k: float(v[0]) for k, v in json.loads(shadow.measurements or "{}").items()},
        live_flagged=bool(result.review),
        shadow_flagged=bool(shadow.review),
        shadow_status=shadow.status,
        dice=_dice(live_seg, shadow_seg),
        decision=result.review_decision,
        reference=reference.measurements if reference is not None else None,
        live_dice_vs_reviewer=_dice(live_seg, reviewer_seg),
        shadow_dice_vs_reviewer=_dice(shadow_seg, reviewer_seg),
    )


def compare(
    session_factory: sessionmaker[Session], model: str, live: str, shadow: str
) -> Comparison:
    """Every live result of ``model`` ``live`` with its ``shadow`` version's result."""
    query = (
        select(ShadowResult, Result)
        .join(Result, Result.id == ShadowResult.result_id)
        .where(
            ShadowResult.model_name == model,
            ShadowResult.model_version == shadow,
            Result.model_version == live,
        )
        .options(selectinload(Result.measurements), selectinload(Result.outputs))
        .order_by(ShadowResult.id)
    )
    comparison = Comparison(model, live, shadow)
    seen: set[int] = set()
    with session_factory() as session:
        for row, result in session.execute(query).all():
            if result.id in seen:  # a shadow run twice on one result: the first counts
                continue
            seen.add(result.id)
            comparison.pairs.append(_pair(session, result, row))
    return comparison


def report_lines(c: Comparison) -> list[str]:
    """The comparison as text (the CLI prints it; the dashboard shows the same numbers)."""
    lines = [f"{c.model}: live {c.live} vs shadow {c.shadow} on {len(c.pairs)} series"]
    if not c.pairs:
        lines.append("no series ran under both versions")
        return lines
    summary = c.dice_summary()
    if summary is not None:
        n, mean, low = summary
        lines.append(f"Dice live vs shadow: mean {mean:.3f}, min {low:.3f} (n={n})")
    lines.append("measurement differences (shadow - live), Bland-Altman:")
    for key, ba in c.agreement().items():
        lines.append(
            f"  {key}: n={ba.n} mean {ba.mean_difference:+.3f}, "
            f"95% limits {ba.lower:+.3f} to {ba.upper:+.3f}"
        )
    rates = c.flag_rates()
    lines.append(
        f"flagged by the gate: live {rates['live']:.0%}, shadow {rates['shadow']:.0%}"
        f" (shadow failed or found nothing: {rates['shadow_failed']:.0%})"
    )
    decisions = c.decisions()
    if decisions:
        lines.append("reviewed: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())))
    for key, err in c.reviewer_errors().items():
        lines.append(
            f"  error vs reviewer {key}: n={err.n} live {err.live_mae:.3f}, "
            f"shadow {err.shadow_mae:.3f} (mean absolute)"
        )
    rdice = c.reviewer_dice()
    if rdice is not None:
        lines.append(f"  Dice vs reviewer: n={rdice[0]} live {rdice[1]:.3f}, shadow {rdice[2]:.3f}")
    return lines
