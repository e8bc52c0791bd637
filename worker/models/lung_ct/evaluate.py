"""Evaluate the lung CT U-Net against the HU-threshold reference (``medseg evaluate lung-ct``):
Dice per lung and volumes on held-out phantoms (also against their exact truth) and on the real
pyradiomics CT ``lung2`` (never seen in training; ``lung1`` is reported too, marked as trained on).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worker.core.commands import Evaluation, Progress
from worker.models._nn.metrics import dice
from worker.models.lung_ct.serve import DEFAULT_WEIGHTS, LungCtUNet
from worker.models.lung_ct.train import phantom_case
from worker.models.lung_ct.volume import CtVolume, pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold.serve import segment_lungs, split_left_right

logger = logging.getLogger(__name__)

EVAL_PHANTOMS = range(2000, 2006)  # disjoint from train.TRAIN_PHANTOMS
Mask = npt.NDArray[np.bool_]
Pair = tuple[Mask, Mask]  # (left, right)


def volume_ml(mask: Mask, volume: CtVolume) -> float:
    return float((mask.sum(axis=(1, 2)) * volume.geometry.voxel_volumes_ml()).sum())


def _pair_row(name: str, pred: Pair, ref: Pair) -> dict[str, float]:
    return {
        f"{name}_dice_left": round(dice(pred[0], ref[0]), 4),
        f"{name}_dice_right": round(dice(pred[1], ref[1]), 4),
    }


def evaluate_case(
    model: LungCtUNet, volume: CtVolume, truth: Pair | None = None, *, held_out: bool = True
) -> dict[str, Any]:
    """One volume: U-Net and reference masks, Dice per lung, volumes, seconds of each method."""
    hu = volume.hu.astype(np.float32)
    started = time.perf_counter()
    reference = segment_lungs(hu, volume.geometry)
    reference_s = time.perf_counter() - started
    started = time.perf_counter()
    unet = split_left_right(model.lungs(hu), volume.geometry)
    unet_s = time.perf_counter() - started
    row: dict[str, Any] = {
        "case": volume.name,
        "held_out": held_out,
        "shape": list(volume.hu.shape),
        **_pair_row("unet_vs_reference", unet, reference),
        "unet_left_ml": round(volume_ml(unet[0], volume), 1),
        "unet_right_ml": round(volume_ml(unet[1], volume), 1),
        "reference_left_ml": round(volume_ml(reference[0], volume), 1),
        "reference_right_ml": round(volume_ml(reference[1], volume), 1),
        "unet_seconds": round(unet_s, 2),
        "reference_seconds": round(reference_s, 2),
    }
    if truth is not None:
        row.update(_pair_row("unet_vs_truth", unet, truth))
        row.update(_pair_row("reference_vs_truth", reference, truth))
        row["truth_left_ml"] = round(volume_ml(truth[0], volume), 1)
        row["truth_right_ml"] = round(volume_ml(truth[1], volume), 1)
    return row


def evaluate(
    data_dir: Path | None,
    weights: Path = DEFAULT_WEIGHTS,
    device: str = "cpu",
    *,
    phantoms: Iterable[int] = EVAL_PHANTOMS,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Rows per case plus a summary; ``data_dir`` holds the pyradiomics NRRDs (None: skip)."""
    model = LungCtUNet(device, weights)
    rows: list[dict[str, Any]] = []
    seeds = list(phantoms)
    total = len(seeds) + (2 if data_dir else 0)
    for volume, truth in map(phantom_case, seeds):
        rows.append(evaluate_case(model, volume, truth))
        if progress:
            progress(len(rows), total)
    if data_dir is not None:
        for case in ("lung2", "lung1"):
            volume = read_nrrd(pyradiomics_case(data_dir, case))
            rows.append(evaluate_case(model, volume, held_out=case == "lung2"))
            if progress:
                progress(len(rows), total)
    return {
        "weights": weights.name,
        "weights_sha256": model.weights_sha256,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "summary": summarise(rows),
        "cases": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    phantoms = [r for r in rows if r["case"].startswith("phantom")]
    summary: dict[str, Any] = {"phantoms": len(phantoms)}
    for key in (
        "unet_vs_reference_dice_left",
        "unet_vs_reference_dice_right",
        "unet_vs_truth_dice_left",
        "unet_vs_truth_dice_right",
        "reference_vs_truth_dice_left",
        "reference_vs_truth_dice_right",
    ):
        values = [r[key] for r in phantoms if key in r]
        if values:
            summary[f"phantom_{key}_mean"] = round(float(np.mean(values)), 4)
            summary[f"phantom_{key}_min"] = round(float(np.min(values)), 4)
    for row in rows:
        if row["case"] == "lung2":
            summary["lung2_dice_left"] = row["unet_vs_reference_dice_left"]
            summary["lung2_dice_right"] = row["unet_vs_reference_dice_right"]
    return summary


def format_summary(result: dict[str, Any]) -> str:
    lines = [
        f"weights {result['weights']} sha256 {result['weights_sha256'][:12]} on {result['device']}",
        f"{'case':<14}{'Dice L':>8}{'Dice R':>8}{'U-Net mL L/R':>18}{'ref mL L/R':>18}"
        f"{'truth Dice L/R':>16}{'U-Net s':>9}{'ref s':>7}",
    ]
    for r in result["cases"]:
        truth = (
            f"{r['unet_vs_truth_dice_left']:.3f}/{r['unet_vs_truth_dice_right']:.3f}"
            if "unet_vs_truth_dice_left" in r
            else "-"
        )
        name = r["case"] + ("" if r["held_out"] else " (train)")
        lines.append(
            f"{name:<14}{r['unet_vs_reference_dice_left']:>8.4f}"
            f"{r['unet_vs_reference_dice_right']:>8.4f}"
            f"{r['unet_left_ml']:>9.1f}/{r['unet_right_ml']:<8.1f}"
            f"{r['reference_left_ml']:>9.1f}/{r['reference_right_ml']:<8.1f}"
            f"{truth:>16}{r['unet_seconds']:>9.2f}{r['reference_seconds']:>7.2f}"
        )
    return "\n".join(lines)


def record_in_checkpoint(weights: Path, result: dict[str, Any]) -> None:
    """Store the evaluation summary in the checkpoint's JSON (the weights, and so their sha256,
    are unchanged)."""
    from worker.models._nn.checkpoint import read_metadata, update_metadata

    if read_metadata(weights).get("sha256") != result["weights_sha256"]:
        raise ValueError(f"{weights}: the evaluation is of other weights")
    evaluation = {
        "summary": result["summary"],
        "cases": result["cases"],
        "device": result["device"],
        "torch_threads": result["torch_threads"],
    }
    update_metadata(weights, {"evaluation": evaluation})


def command(args: argparse.Namespace, progress: Progress) -> Evaluation:
    """``medseg evaluate lung-ct``; ``--record`` also stores the result in the checkpoint's
    .json."""
    weights = args.weights or DEFAULT_WEIGHTS
    summary = evaluate(
        args.data, weights, args.device, progress=lambda i, n: progress("evaluate", i, n)
    )
    if args.record:
        record_in_checkpoint(weights, summary)
    return Evaluation(summary, format_summary(summary))
