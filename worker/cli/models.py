"""``medseg train|evaluate|phantoms``: the model-building commands of the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _cmd_train(args: argparse.Namespace) -> int:
    from worker.device import resolve_device
    from worker.fetal.train import TrainConfig, train

    device = resolve_device(args.device)
    if args.task == "lung-ct":
        return _train_lung_ct(args, device)
    if args.task in ("lung-cxr", "pneumonia"):
        from worker.cli_cxr import train_cxr

        print("\n" + train_cxr(args, device, _progress))
        return 0
    config = TrainConfig(
        epochs=args.epochs or 40, batch_size=args.batch_size or 32, max_seconds=args.max_seconds
    )
    if args.task == "fetal-brain":
        from worker.fetal.brain import load_training_set
        from worker.fetal.brain_train import train_brain

        arrays = load_training_set(args.data, lambda i, n: _progress("load", i, n))
        meta = train_brain(
            arrays, args.out, config, device, label=args.label or str(args.data), progress=_progress
        )
    else:
        meta = train(args.data, args.out, config, device, progress=_progress, data_label=args.label)
    print(f"\nsaved {args.out} (+ .json)\nsha256 {meta['sha256']}\nval Dice {meta['val_dice']:.4f}")
    return 0


def _train_lung_ct(args: argparse.Namespace, device: str) -> int:
    from dataclasses import replace

    from worker.lung.ct_train import DEFAULT_CONFIG, train_lung_ct

    config = replace(
        DEFAULT_CONFIG,
        epochs=args.epochs or DEFAULT_CONFIG.epochs,
        batch_size=args.batch_size or DEFAULT_CONFIG.batch_size,
        max_seconds=args.max_seconds,
    )
    meta = train_lung_ct(args.data, args.out, config, device, progress=_progress)
    print(f"\nsaved {args.out} (+ .json)\nsha256 {meta['sha256']}\nval Dice {meta['val_dice']:.4f}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from worker.device import resolve_device

    device = resolve_device(args.device)
    summary: dict[str, Any]
    if args.task in ("lung-cxr", "pneumonia"):
        from worker.cli_cxr import evaluate_cxr
        from worker.cxr.evaluate_data import format_summary as cxr_summary

        summary = evaluate_cxr(args, device, _progress)
        print("\n" + cxr_summary(summary))
    elif args.task == "lung-ct":
        from worker.lung.ct_eval import evaluate as evaluate_lung_ct
        from worker.lung.ct_eval import format_summary as lung_summary
        from worker.models.lung_ct_unet import DEFAULT_WEIGHTS as LUNG_WEIGHTS

        summary = evaluate_lung_ct(
            args.data,
            args.weights or LUNG_WEIGHTS,
            device,
            progress=lambda i, n: _progress("evaluate", i, n),
        )
        print("\n" + lung_summary(summary))
        if args.record:
            from worker.lung.ct_eval import record_in_checkpoint

            record_in_checkpoint(args.weights or LUNG_WEIGHTS, summary)
    elif args.task == "fetal-brain":
        from worker.fetal.brain import nifti_pairs
        from worker.fetal.brain_eval import DEFAULT_BRAIN_WEIGHTS, evaluate_stacks
        from worker.fetal.brain_eval import format_summary as brain_summary

        summary = evaluate_stacks(
            nifti_pairs(args.data),
            args.weights or DEFAULT_BRAIN_WEIGHTS,
            device,
            progress=lambda i, n: _progress("evaluate", i, n),
        )
        print("\n" + brain_summary(summary))
    else:
        from worker.fetal.evaluate import evaluate, format_summary
        from worker.fetal.predictor import DEFAULT_WEIGHTS

        result = evaluate(
            args.data,
            args.weights or DEFAULT_WEIGHTS,
            device,
            progress=lambda i, n: _progress("evaluate", i, n),
        )
        print("\n" + format_summary(result))
        summary = result.as_dict()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    if args.kind == "fetal-brain":
        from worker.phantoms.fetal_mri import make_fetal_brain_stack, write_nifti_pair
        from worker.phantoms.mr_dicom import write_mr_stack

        for seed in range(args.start, args.start + args.count):
            stack = make_fetal_brain_stack(seed)
            if args.dicom:
                write_mr_stack(stack, args.out / f"mr{seed:06d}_{stack.plane}")
            else:
                write_nifti_pair(stack, args.out, f"stack{seed:06d}")
    elif args.kind == "chest-xray":
        from worker.cli_cxr import write_chest_xray_phantoms

        write_chest_xray_phantoms(args)
    elif args.kind == "chest-ct":
        from worker.phantoms.chest_ct import make_chest_phantom, write_chest_series

        for i in range(args.count):
            phantom = make_chest_phantom(seed=args.start + i)
            write_chest_series(phantom, args.out / f"ct{args.start + i:05d}")
    elif args.dicom:
        from worker.phantoms.us_dicom import write_us_phantom

        for i in range(args.count):
            seed = args.start + i
            write_us_phantom(
                args.out / f"us{seed:05d}.dcm",
                seed,
                frames=args.frames,
                rgb=args.dicom == "rgb",
                calibrated=not args.uncalibrated,
            )
    else:
        import os

        from worker.phantoms.fetal_head import write_hc18_parallel

        write_hc18_parallel(
            args.out, range(args.start, args.start + args.count), os.cpu_count() or 1
        )
    print(f"wrote {args.count} {args.kind} phantom(s) to {args.out}")
    return 0


def _progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(
        f"\r{stage:<9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
        end=end,
        file=sys.stderr,
    )


def add_model_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="train a model on a data folder")
    train.add_argument(
        "task", choices=["fetal-head", "fetal-brain", "lung-ct", "lung-cxr", "pneumonia"]
    )
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="fetal-head: HC18 layout; fetal-brain: NAME_image/NAME_mask NIfTI pairs; "
        "lung-ct: folder with the pyradiomics lung1_image.nrrd (make test-data); "
        "lung-cxr: Montgomery (CXR_png/ + ManualMask/leftMask,rightMask/) or images/ + masks/; "
        "pneumonia: RSNA (stage_2_train_labels.csv + stage_2_train_images/*.dcm)",
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt + .json)")
    train.add_argument("--epochs", type=int, help="default 40 (lung-ct: 14)")
    train.add_argument("--batch-size", type=int, help="default 32 (lung-ct: 16)")
    train.add_argument("--max-seconds", type=float, default=float("inf"))
    train.add_argument("--device", default="auto")
    train.add_argument("--label", default="", help="what the data is (stored in the metadata)")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model on a held-out data folder")
    evaluate.add_argument(
        "task", choices=["fetal-head", "fetal-brain", "lung-ct", "lung-cxr", "pneumonia"]
    )
    evaluate.add_argument(
        "--data", type=Path, required=True, help="held-out folder, same layout as for train"
    )
    evaluate.add_argument("--weights", type=Path, help="checkpoint (default: the shipped one)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", type=Path, help="also write the summary as JSON")
    evaluate.add_argument(
        "--record", action="store_true", help="lung-ct: also store it in the checkpoint's .json"
    )
    evaluate.set_defaults(func=_cmd_evaluate)

    phantoms = sub.add_parser("phantoms", help="write synthetic studies with exact ground truth")
    phantoms.add_argument("kind", choices=["fetal-head", "fetal-brain", "chest-ct", "chest-xray"])
    phantoms.add_argument("--out", type=Path, required=True)
    phantoms.add_argument("--count", type=int, default=10)
    phantoms.add_argument("--start", type=int, default=100000, help="first seed")
    phantoms.add_argument(
        "--dicom", choices=["mono", "rgb"], help="as DICOM (US for fetal-head, MR for fetal-brain)"
    )
    phantoms.add_argument("--frames", type=int, default=1, help="frames per US DICOM (cine)")
    phantoms.add_argument("--uncalibrated", action="store_true", help="no ultrasound regions")
    phantoms.set_defaults(func=_cmd_phantoms)
