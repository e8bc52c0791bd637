"""Train the fetal brain U-Net: on NIfTI pairs (``--data``) or on phantoms made in memory
(``--phantoms START:STOP``, for training machines without a DICOM/NIfTI stack)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worker.core.commands import Progress
from worker.models._nn import checkpoint
from worker.models._nn.train import TrainConfig, fit, saved_summary
from worker.models.fetal_brain.convention import CONVENTIONS, PARENCHYMA
from worker.models.fetal_brain.data import MODEL_VERSION, load_training_set, training_slices

logger = logging.getLogger(__name__)

Arrays = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def _phantom_slices(seed: int, convention: str = PARENCHYMA) -> Arrays:
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack

    stack = make_fetal_brain_stack(seed)
    return training_slices(stack.image, stack.truth(convention))


def phantom_set(seeds: range, workers: int, convention: str = PARENCHYMA) -> Arrays:
    """Training slices of phantoms ``seeds``, their masks under ``convention`` (phantoms.py)."""
    with Pool(workers) as pool:
        parts = pool.map(partial(_phantom_slices, convention=convention), seeds, chunksize=4)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def train_brain(
    arrays: Arrays,
    out: Path,
    config: TrainConfig,
    device: str,
    *,
    label: str,
    progress: Callable[[str, int, int], None] | None = None,
    convention: str | None = None,
) -> dict[str, Any]:
    """``convention``: the outline the masks follow (``convention.CONVENTIONS``), stated in
    the checkpoint's JSON; None leaves it unstated."""
    images, masks = arrays
    meta = fit(
        images,
        masks,
        config,
        device,
        out=out,
        identity=("fetal-brain-unet", MODEL_VERSION, label),
        progress=progress,
    )
    if convention is not None:
        meta = checkpoint.update_metadata(out, {"mask_convention": convention})
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder of NAME_image/NAME_mask NIfTI pairs")
    source.add_argument("--phantoms", help="seed range START:STOP of phantom stacks")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        help="the masks' outline, stated in the checkpoint (phantoms: default parenchyma)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.phantoms:
        start, stop = (int(v) for v in args.phantoms.split(":"))
        convention = args.convention or PARENCHYMA
        arrays = phantom_set(range(start, stop), os.cpu_count() or 1, convention)
        label = (
            args.label or f"medseg fetal-brain phantoms v1 (synthetic, seeds {start}-{stop - 1})"
        )
    else:
        convention = args.convention
        arrays = load_training_set(args.data)
        label = args.label or str(args.data)
    logger.info("training on %d slices", len(arrays[0]))
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, max_seconds=args.max_seconds
    )
    meta = train_brain(arrays, args.out, config, args.device, label=label, convention=convention)
    logger.info("saved %s sha256 %s val dice %.4f", args.out, meta["sha256"], meta["val_dice"])
    return 0


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train fetal-brain``: NAME_image/NAME_mask NIfTI pairs in ``args.data``."""
    config = TrainConfig(
        epochs=args.epochs or 40, batch_size=args.batch_size or 32, max_seconds=args.max_seconds
    )
    arrays = load_training_set(args.data, lambda i, n: progress("load", i, n))
    meta = train_brain(
        arrays, args.out, config, args.device, label=args.label or str(args.data), progress=progress
    )
    return saved_summary(args.out, meta)


if __name__ == "__main__":
    raise SystemExit(main())
