"""``medseg train lung-cxr|pneumonia`` and ``medseg phantoms chest-xray``: the chest X-ray
parts of the model-building commands (cli_models prints what these return)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Progress = Callable[[str, int, int], None]


def train_cxr(args: argparse.Namespace, device: str, progress: Progress) -> str:
    if args.task == "lung-cxr":
        from worker.cxr.lung_train import train_lung_cxr
        from worker.fetal.train import TrainConfig

        config = TrainConfig(
            epochs=args.epochs or 40,
            batch_size=args.batch_size or 16,
            learning_rate=3e-3,
            max_seconds=args.max_seconds,
        )
        meta = train_lung_cxr(
            args.data, args.out, config, device, label=args.label, progress=progress
        )
        return (
            f"saved {args.out} (+ .json)\nsha256 {meta['sha256']}\nval Dice {meta['val_dice']:.4f}"
        )
    from worker.cxr.detector_train import DetectorConfig, fit_detector, rsna_detection_set

    data = rsna_detection_set(args.data, lambda i, n: progress("load", i, n))
    det_config = DetectorConfig(
        epochs=args.epochs or 10, batch_size=args.batch_size or 4, max_seconds=args.max_seconds
    )
    meta = fit_detector(
        data,
        det_config,
        device,
        out=args.out,
        label=args.label or str(args.data),
        progress=progress,
    )
    return f"saved {args.out} (+ .json)\nsha256 {meta['sha256']}\nval AP@0.5 {meta['val_ap50']:.4f}"


def write_chest_xray_phantoms(args: argparse.Namespace) -> None:
    """CR DICOMs (PixelSpacing), a third of them with one pneumonia opacity."""
    from worker.phantoms.chest_xray import make_chest_xray
    from worker.phantoms.cr_dicom import write_cxr

    for seed in range(args.start, args.start + args.count):
        phantom = make_chest_xray(seed, opacities=int(seed % 3 == 0))
        write_cxr(phantom, args.out / f"cxr{seed:06d}.dcm")


def evaluate_cxr(args: argparse.Namespace, device: str, progress: Progress) -> dict[str, Any]:
    from worker.cxr.evaluate_data import evaluate_detector, evaluate_lungs

    if args.task == "lung-cxr":
        from worker.cxr.lung_train import DEFAULT_WEIGHTS

        return evaluate_lungs(
            args.data,
            args.weights or DEFAULT_WEIGHTS,
            device,
            lambda i, n: progress("evaluate", i, n),
        )
    from worker.cxr.detector import DEFAULT_DETECTOR_WEIGHTS
    from worker.settings import get_settings

    return evaluate_detector(
        args.data,
        args.weights or DEFAULT_DETECTOR_WEIGHTS,
        device,
        get_settings().pneumonia_score_threshold,
        lambda i, n: progress("evaluate", i, n),
    )
