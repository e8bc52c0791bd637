"""Evaluate the fetal head model on an HC18-layout folder: Dice, HC difference, Hausdorff."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import directed_hausdorff

from worker.core.commands import Evaluation, Progress
from worker.models._nn.metrics import dice
from worker.models.fetal_head.biometry import ellipse_mask, largest_contour
from worker.models.fetal_head.hc18 import load_image, load_mask, read_index
from worker.models.fetal_head.predictor import FetalHeadPredictor
from worker.models.fetal_head.serve import DEFAULT_WEIGHTS

logger = logging.getLogger(__name__)


def hausdorff_mm(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_], pixel_mm: float) -> float:
    pa, pb = largest_contour(a), largest_contour(b)
    if pa is None or pb is None:
        return float("inf")
    return float(max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]) * pixel_mm)


@dataclass
class Summary:
    n: int
    dice_mean: float
    dice_sd: float
    hc_ad_mean_mm: float
    hc_ad_sd_mm: float
    hc_diff_mean_mm: float
    hausdorff_mean_mm: float
    hausdorff_sd_mm: float
    failures: int
    seconds_per_frame: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def evaluate(
    data: Path,
    weights: Path = DEFAULT_WEIGHTS,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    predictor = FetalHeadPredictor(weights, device)
    items = read_index(data)
    dices: list[float] = []
    hc_diffs: list[float] = []
    hds: list[float] = []
    failures = 0
    infer_seconds = 0.0
    for i, item in enumerate(items):
        image = load_image(item.image)
        truth = load_mask(item.annotation)
        start = time.perf_counter()
        (result,) = predictor.predict([image], (item.pixel_mm, item.pixel_mm))
        infer_seconds += time.perf_counter() - start
        if result.ellipse is None:
            failures += 1
            dices.append(0.0)
            continue
        e = result.ellipse
        fitted = ellipse_mask(
            truth.shape, (e.cx, e.cy, e.a, e.b, e.angle_deg), (item.pixel_mm, item.pixel_mm)
        )
        dices.append(dice(fitted, truth))
        hc_diffs.append(e.circumference - item.hc_mm)
        hds.append(hausdorff_mm(fitted, truth, item.pixel_mm))
        if progress:
            progress(i + 1, len(items))
    diffs = np.array(hc_diffs) if hc_diffs else np.array([np.nan])
    return Summary(
        n=len(items),
        dice_mean=float(np.mean(dices)),
        dice_sd=float(np.std(dices)),
        hc_ad_mean_mm=float(np.mean(np.abs(diffs))),
        hc_ad_sd_mm=float(np.std(np.abs(diffs))),
        hc_diff_mean_mm=float(np.mean(diffs)),
        hausdorff_mean_mm=float(np.mean(hds)) if hds else float("nan"),
        hausdorff_sd_mm=float(np.std(hds)) if hds else float("nan"),
        failures=failures,
        seconds_per_frame=infer_seconds / max(1, len(items)),
    )


def format_summary(s: Summary) -> str:
    return (
        f"frames {s.n} (no head found: {s.failures})\n"
        f"Dice            {s.dice_mean:.4f} ± {s.dice_sd:.4f}\n"
        f"HC abs diff     {s.hc_ad_mean_mm:.2f} ± {s.hc_ad_sd_mm:.2f} mm "
        f"(mean signed {s.hc_diff_mean_mm:+.2f})\n"
        f"Hausdorff       {s.hausdorff_mean_mm:.2f} ± {s.hausdorff_sd_mm:.2f} mm\n"
        f"inference       {s.seconds_per_frame * 1000:.1f} ms/frame"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    summary = evaluate(args.data, args.weights, args.device)
    logger.info("\n%s", format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 0


def command(args: argparse.Namespace, progress: Progress) -> Evaluation:
    """``medseg evaluate fetal-head``."""
    result = evaluate(
        args.data,
        args.weights or DEFAULT_WEIGHTS,
        args.device,
        progress=lambda i, n: progress("evaluate", i, n),
    )
    return Evaluation(result.as_dict(), format_summary(result))


if __name__ == "__main__":
    raise SystemExit(main())
