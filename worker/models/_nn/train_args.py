"""The flags of ``medseg train NAME``, and the same command without the rest of medseg.

``python -m worker.models.fetal_head.train ...`` (or ``lung_cxr.recipe``) takes the flags
``medseg train fetal-head`` takes, and imports only the training code: numpy, scipy, OpenCV
and PyTorch, none of the service's database, DICOM or settings packages. That is what runs on a
machine holding nothing but a checkout and a data pack (deploy/gpu/train_all.sh).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.models._nn.schedule import check_input_size

logger = logging.getLogger(__name__)

TrainFunction = Callable[[argparse.Namespace, Callable[[str, int, int], None]], str]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``medseg train`` after NAME."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="fetal-head: HC18 layout, or its pack (.npz, `medseg pack fetal-head`); "
        "fetal-brain: NAME_image/NAME_mask NIfTI pairs; "
        "fetal-brain-synth: brain label maps (*/parcellation.nii.gz, or their .npz pack); "
        "lung-ct: folder with the pyradiomics lung1_image.nrrd (make test-data); "
        "lung-cxr: Montgomery (CXR_png/ + ManualMask/leftMask,rightMask/) or images/ + masks/ "
        "(+ images.csv: image, patient_id, projection, for patient-grouped folds), or its pack; "
        "pneumonia: RSNA (stage_2_train_labels.csv + stage_2_train_images/*.dcm)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint (.pt + .json)")
    parser.add_argument("--epochs", type=int, help="default 40 (lung-ct: 14; fetal-head: a cap)")
    parser.add_argument("--batch-size", type=int, help="default 32 (lung-ct: 16)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float("inf"),
        help="the time budget; fetal-head and lung-cxr choose their schedule from it and the "
        "device (input size, length, folds, ensemble; docs/training-data.md)",
    )
    parser.add_argument("--steps", type=int, help="lung-cxr: optimiser steps per run (a cap)")
    parser.add_argument(
        "--depth",
        type=int,
        choices=(3, 4, 5, 6),
        help="fetal-head: the U-Net's poolings (default: the fewest, at least 4, whose view "
        "spans 3/4 of the input's longer side: 4 at 160x240, 5 at 320x480; each output pixel "
        "sees 188 input pixels at 4, 380 at 5)",
    )
    parser.add_argument(
        "--input-size",
        type=input_size,
        help="fetal-head, lung-cxr: the network's input, ROWSxCOLS or one side for a square "
        "(multiples of 16; default: the schedule's for the device)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        help="fetal-head, lung-cxr: subject-grouped folds (default: the schedule's; "
        "lung-cxr 0: no cross-validation)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help="fetal-head: train the fixed split this many times, each run from its own seed, "
        "and ship their ensemble (implies --folds 1; default 1)",
    )
    parser.add_argument(
        "--ensemble",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fetal-head, lung-cxr: ship the fold models' ensemble (default: the schedule's)",
    )
    parser.add_argument(
        "--max-members", type=int, help="fetal-head, lung-cxr: at most this many in the ensemble"
    )
    parser.add_argument(
        "--fold-dir",
        type=Path,
        help="lung-cxr: keep the fold checkpoints here; a fold this recipe already trained "
        "here on the same split is reused (an interrupted run resumes)",
    )
    parser.add_argument(
        "--fold-jobs",
        type=int,
        default=1,
        help="lung-cxr: folds trained at once, each in its own process (the torch threads "
        "shared out among them)",
    )
    parser.add_argument(
        "--init", choices=("phantom", "scratch"), help="lung-cxr: start from the phantom weights"
    )
    parser.add_argument(
        "--phantom-films",
        type=int,
        default=0,
        help="lung-cxr: add this many chest phantoms to every training run's real films",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--label", default="", help="what the data is (stored in the metadata)")


def input_size(text: str) -> tuple[int, int]:
    """``320x480`` -> (320, 480); ``256`` -> (256, 256); sides multiples of 16."""
    parts = text.lower().split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROWSxCOLS, e.g. 320x480") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROWSxCOLS, e.g. 320x480")
    size = sides[0], sides[1]
    try:
        check_input_size(size)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return size


def _log_progress(stage: str, done: int, total: int) -> None:
    logger.info("%s %d/%d", stage, done, total)


def run_train(train: TrainFunction, argv: list[str] | None, description: str) -> int:
    """Parse ``argv`` as ``medseg train NAME`` would, run ``train``, log its summary."""
    from worker.pipeline.device import resolve_device

    parser = argparse.ArgumentParser(description=description)
    add_train_arguments(parser)
    args: Any = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.device = resolve_device(args.device)
    started = time.time()
    summary = train(args, _log_progress)
    logger.info("done in %.0f s\n%s", time.time() - started, summary)
    return 0
