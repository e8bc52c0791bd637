"""``medseg evaluate lung-cxr|pneumonia --data DIR``: the shipped (or given) checkpoint on a
held-out folder in the training layouts (Montgomery or images/ + masks/; RSNA)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from worker.core import commands
from worker.models._nn.metrics import average_precision, dice, precision_recall
from worker.models.lung_cxr.detector import DEFAULT_DETECTOR_WEIGHTS, OpacityDetector
from worker.models.lung_cxr.lung_data import read_image, read_mask
from worker.models.lung_cxr.rsna import read_rsna

Progress = Callable[[int, int], None]


def evaluate_lungs(
    folder: Path, weights: Path, device: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Per film, at full resolution and through the served post-processing: Dice of both
    fields, of each side (the truth split the same way), whether the sides are right,
    Hausdorff distances and the area error; summarised over films. Montgomery folders with
    separate left/right masks score each side against its own mask too."""
    from worker.models._nn.predictor import UNetPredictor
    from worker.models.lung_cxr.field_eval import score_film, summarise
    from worker.models.lung_cxr.fields import split_lungs, two_largest
    from worker.models.lung_cxr.films import read_films

    predictor = UNetPredictor(weights, device)
    films = read_films(folder)
    records, sides = [], []
    for i, film in enumerate(films):
        image = read_image(film.pair.image)
        (prob,) = predictor.probabilities([image])
        found = two_largest(prob)
        truth = read_mask(film.pair.masks)
        if truth.shape != found.shape:
            raise ValueError(f"{film.name}: mask and image sizes differ")
        records.append(
            score_film(found, truth, name=film.name, patient=film.patient,
                       projection=film.projection)
        )  # fmt: skip
        if len(film.pair.masks) == 2:  # Montgomery: leftMask, rightMask (the patient's sides)
            right, left = split_lungs(found)
            masks = film.pair.masks
            sides += [dice(left, read_mask(masks[:1])), dice(right, read_mask(masks[1:]))]
        if progress:
            progress(i + 1, len(films))
    summary: dict[str, Any] = {"weights_sha256": predictor.sha256, **summarise(records)}
    if sides:
        summary["dice_per_side_mean"] = round(float(np.mean(sides)), 4)
    summary["records"] = [r.as_dict() for r in records]
    return summary


def evaluate_detector(
    folder: Path,
    weights: Path,
    device: str,
    threshold: float,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """AP@0.5 and precision/recall at ``threshold`` on an RSNA-layout folder."""
    detector = OpacityDetector(weights, device)
    items = read_rsna(folder)
    predictions, truths = [], []
    for i, item in enumerate(items):
        (found,) = detector.detect([read_image(item.image)])
        predictions.append([(d.box, d.score) for d in found])
        truths.append(list(item.boxes))
        if progress:
            progress(i + 1, len(items))
    precision, recall = precision_recall(predictions, truths, threshold)
    return {
        "images": len(items),
        "boxes": sum(len(t) for t in truths),
        "weights_sha256": detector.sha256,
        "ap50": round(average_precision(predictions, truths), 4),
        "threshold": threshold,
        "precision_at_threshold": round(precision, 4),
        "recall_at_threshold": round(recall, 4),
    }


def format_summary(summary: dict[str, Any]) -> str:
    shown = {k: v for k, v in summary.items() if k != "records"}
    return "\n".join(f"{key:<26} {value}" for key, value in shown.items())


def lungs_command(args: argparse.Namespace, progress: commands.Progress) -> commands.Evaluation:
    """``medseg evaluate lung-cxr``."""
    from worker.models.lung_cxr.serve import DEFAULT_WEIGHTS

    summary = evaluate_lungs(
        args.data,
        args.weights or DEFAULT_WEIGHTS,
        args.device,
        lambda i, n: progress("evaluate", i, n),
    )
    return commands.Evaluation(summary, format_summary(summary))


def detector_command(args: argparse.Namespace, progress: commands.Progress) -> commands.Evaluation:
    """``medseg evaluate pneumonia``: AP@0.5 and precision/recall at the serving threshold."""
    from worker.core.settings import get_settings

    summary = evaluate_detector(
        args.data,
        args.weights or DEFAULT_DETECTOR_WEIGHTS,
        args.device,
        get_settings().pneumonia_score_threshold,
        lambda i, n: progress("evaluate", i, n),
    )
    return commands.Evaluation(summary, format_summary(summary))
