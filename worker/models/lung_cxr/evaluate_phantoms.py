"""Held-out evaluation of the chest X-ray model on phantoms written as CR DICOM and run
through the shipped model class: lung-field Dice per side, area error, detector AP@0.5 and
precision/recall at the reporting threshold; also what it gives on pydicom-data's
RG1_UNCI.dcm (a real radiograph without ground truth).

``python -m worker.models.lung_cxr.evaluate_phantoms --json docs/metrics/lung_cxr.json``
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from worker.export.outputs import ModelOutput
from worker.models._nn.metrics import average_precision, dice, precision_recall
from worker.models.lung_cxr import gate
from worker.models.lung_cxr.cr_dicom import Spacing, write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.models.lung_cxr.serve import LungCxrModel
from worker.pipeline.loading import load_series

logger = logging.getLogger(__name__)

HELD_OUT = range(500000, 500100)  # training used seeds below 1000
SPACINGS: tuple[Spacing, ...] = ("pixel", "imager", "both")


def evaluate_phantoms(
    model: LungCxrModel, seeds: Iterable[int], report_threshold: float
) -> dict[str, Any]:
    """``model`` must keep every detection (threshold 0) so AP sees the whole ranking."""
    dice_r, dice_l, area_err, seconds = [], [], [], []
    flagged: dict[str, int] = {}
    n_flagged = 0
    predictions, truths = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(seeds):
            phantom = make_chest_xray(seed, opacities=[0, 1, 1, 2][i % 4])
            path = write_cxr(
                phantom,
                Path(tmp) / f"{seed}.dcm",
                modality="CR" if i % 2 else "DX",
                spacing=SPACINGS[i % 3],
                monochrome1=i % 5 == 0,
            )
            series = load_series([path])
            start = time.perf_counter()
            out = model.predict(series)
            seconds.append(time.perf_counter() - start)
            right, left = out.segments[0].mask[0], out.segments[1].mask[0]
            # Against the projected fields (the lung behind the heart included): the convention
            # the shipped weights were trained in.
            true_right = phantom.right_lung if phantom.right_field is None else phantom.right_field
            true_left = phantom.left_lung if phantom.left_field is None else phantom.left_field
            dice_r.append(dice(right, true_right))
            dice_l.append(dice(left, true_left))
            area = next(m.value for m in out.measurements if m.key == "lung_area_cm2")
            true_area = float(phantom.fields.sum()) * phantom.pixel_mm**2 / 100
            area_err.append(100 * (area - true_area) / true_area)
            predictions.append([(f.box_px, f.score) for f in out.findings])
            reasons = _gate_reasons(model, out, right | left, report_threshold)
            n_flagged += bool(reasons)
            for reason in reasons:
                code = reason.split("(")[0].strip()
                flagged[code] = flagged.get(code, 0) + 1
            truths.append([tuple(map(float, b)) for b in phantom.boxes])
    precision, recall = precision_recall(predictions, truths, report_threshold)  # type: ignore[arg-type]
    return {
        "images": len(dice_r),
        "opacities": sum(len(t) for t in truths),
        "dice_right_mean": round(float(np.mean(dice_r)), 4),
        "dice_left_mean": round(float(np.mean(dice_l)), 4),
        "dice_min": round(float(min(dice_r + dice_l)), 4),
        "area_error_percent_mean": round(float(np.mean(area_err)), 2),
        "area_error_percent_abs_mean": round(float(np.mean(np.abs(area_err))), 2),
        "detector_ap50": round(average_precision(predictions, truths), 4),  # type: ignore[arg-type]
        "threshold": report_threshold,
        "precision_at_threshold": round(precision, 4),
        "recall_at_threshold": round(recall, 4),
        "seconds_per_image_mean": round(float(np.mean(seconds)), 3),
        "gate_flagged": n_flagged,
        "gate_flagged_by_reason": flagged,
    }


def _gate_reasons(
    model: LungCxrModel, out: ModelOutput, fields: np.ndarray, report_threshold: float
) -> list[str]:
    """The gate's verdict as served at ``report_threshold`` (``model`` keeps every box)."""
    quality: dict[str, float] = out.extras["quality"]  # type: ignore[assignment]
    signals = gate.Signals(**quality)  # type: ignore[arg-type]
    reasons = gate.reasons(signals, model.thresholds)
    boxes = [f.box_px for f in out.findings if f.score >= report_threshold and f.frame == 0]
    return reasons + gate.box_reason(gate.boxes_outside(boxes, fields), len(boxes))


def run_real_example(model: LungCxrModel) -> dict[str, Any]:
    """RG1_UNCI.dcm from pydicom-data (no ground truth: what the model reports, nothing more)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCI.dcm")
    if path is None:
        return {"available": False}
    series = load_series([Path(str(path))])
    start = time.perf_counter()
    out = model.predict(series)
    rows, cols = series.frames.shape[1:]
    return {
        "file": "RG1_UNCI.dcm (pydicom-data)",
        "size": [rows, cols],
        "seconds": round(time.perf_counter() - start, 2),
        "measurements": {m.key: round(m.value, 1) for m in out.measurements},
        "lung_fraction_of_image": round(
            float((out.segments[0].mask | out.segments[1].mask).sum()) / (rows * cols), 4
        ),
        "findings_at_threshold": [f.as_json() for f in out.findings if f.score >= model.threshold],
        "warnings": out.warnings,
        "review": out.review,
        "quality": out.extras["quality"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=len(HELD_OUT))
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(1)
    everything = LungCxrModel("cpu", threshold=0.0, detector=True)
    summary = {
        "machine": "2-core x86_64 CPU, 1 torch thread, shared with other jobs",
        "held_out_phantoms": evaluate_phantoms(everything, HELD_OUT[: args.count], args.threshold),
    }
    reporting = LungCxrModel("cpu", threshold=args.threshold, detector=True)
    summary["rg1_unci"] = run_real_example(reporting)
    assert reporting.detector is not None  # asked for above
    summary["weights"] = {"lung_unet": reporting.unet.sha256, "detector": reporting.detector.sha256}
    text = json.dumps(summary, indent=2)
    logger.info("%s", text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
