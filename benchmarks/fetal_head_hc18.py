"""HC18 frames through the production path: do `medseg process` and the evaluation agree?

Writes frames of a folder in the HC18 layout as US DICOM (US Image Storage, calibrated by
SequenceOfUltrasoundRegions from the published pixel size, never PixelSpacing), once monochrome
and once RGB, runs each set through `medseg process --json` as a user would, and compares the
HC it reports per frame with the HC18 reference and with `medseg evaluate`'s own measurement of
the same frames in the same run. The two must agree within 0.1 mm of mean absolute difference.

    python benchmarks/fetal_head_hc18.py --data ../shared/data/hc18/training_set
        [--subjects held-out|all] [--limit N] [--weights W.pt]

By default only the subjects the shipped weights held out (named in their metadata) are used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from worker.models.fetal_head.evaluate import evaluate_frames, held_out, summarise
from worker.models.fetal_head.hc18 import HC18Item, load_image, read_index
from worker.models.fetal_head.hc18_split import subject_of
from worker.models.fetal_head.predictor import FetalHeadPredictor
from worker.models.fetal_head.serve import DEFAULT_WEIGHTS
from worker.models.fetal_head.us_dicom import write_us_image


def _select(items: list[HC18Item], weights: Path, which: str, limit: int) -> list[HC18Item]:
    if which == "held-out":
        try:
            items = held_out(items, weights)
        except ValueError as exc:
            sys.exit(f"{exc}; use --subjects all")
    return items[:limit] if limit else items


def _write(items: list[HC18Item], folder: Path, rgb: bool) -> dict[str, HC18Item]:
    """One US DICOM series per frame; returns series UID -> item."""
    by_series = {}
    for item in items:
        pixels = load_image(item.image)
        if rgb:
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        ds = write_us_image(
            folder / f"{item.image.stem}.dcm", pixels, item.pixel_mm,
            series_description="OB FETAL HEAD BIOMETRY", patient_id=f"HC18-{subject_of(item)}",
        )  # fmt: skip
        by_series[str(ds.SeriesInstanceUID)] = item
    return by_series


def _process(folder: Path, out: Path, weights: Path) -> tuple[list[dict[str, object]], float]:
    medseg = Path(sys.executable).with_name("medseg")
    env = {**os.environ, "MEDSEG_FETAL_HEAD_WEIGHTS": str(weights)}
    start = time.perf_counter()
    done = subprocess.run(
        [str(medseg), "process", str(folder), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"medseg process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--subjects", choices=["held-out", "all"], default="held-out")
    parser.add_argument("--limit", type=int, default=0, help="first N frames only")
    args = parser.parse_args()

    items = _select(read_index(args.data), args.weights, args.subjects, args.limit)
    predictor = FetalHeadPredictor(args.weights)
    start = time.perf_counter()
    records = evaluate_frames(predictor, items)
    eval_s = time.perf_counter() - start
    reference = summarise(records)
    eval_hc = {r.name: r.hc_mm for r in records}
    print(f"{len(items)} frames of {reference['subjects']} subjects, weights {args.weights.name}")
    print(f"{'path':<22} {'HC MAE mm':>10} {'median':>8} {'p95':>8} {'review':>7} {'s/frame':>8}")
    hc = reference["hc_abs_diff_mm"]
    print(
        f"{'evaluate (in-process)':<22} {hc['mean']:>10.3f} {hc['median']:>8.3f} {hc['p95']:>8.3f}"
        f" {reference['gate']['flagged_share']:>7.1%} {eval_s / len(items):>8.3f}"
    )
    worst_gap = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for rgb in (False, True):
            folder = Path(tmp) / ("rgb" if rgb else "mono")
            by_series = _write(items, folder / "in", rgb)
            rows, seconds = _process(folder / "in", folder / "out", args.weights)
            diffs, flagged, gaps = [], 0, []
            for row in rows:
                item = by_series[str(row["series_uid"])]
                measured = row["measurements"]
                assert isinstance(measured, dict)
                value = measured.get("head_circumference_mm")
                flagged += row["status"] == "needs_review"
                if value is None:
                    diffs.append(np.nan)
                    continue
                diffs.append(abs(float(value) - item.hc_mm))
                if eval_hc[item.image.name] is not None:
                    gaps.append(abs(float(value) - float(eval_hc[item.image.name] or 0)))
            d = np.asarray(diffs)
            mae = float(np.nanmean(d))
            gap = abs(mae - hc["mean"])
            worst_gap = max(worst_gap, gap)
            label = f"medseg process ({'RGB' if rgb else 'mono'})"
            print(
                f"{label:<22} {mae:>10.3f} {float(np.nanmedian(d)):>8.3f}"
                f" {float(np.nanpercentile(d, 95)):>8.3f} {flagged / len(rows):>7.1%}"
                f" {seconds / len(rows):>8.3f}"
            )
            print(
                f"{'':<22} no HC: {int(np.isnan(d).sum())}; per-frame |process - evaluate| "
                f"max {max(gaps, default=0):.4f} mm; MAE gap {gap:.4f} mm"
            )
    ok = worst_gap <= 0.1
    print(f"agreement within 0.1 mm: {'yes' if ok else 'NO'} (worst MAE gap {worst_gap:.4f} mm)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
