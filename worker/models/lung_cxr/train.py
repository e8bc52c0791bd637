"""Train the chest radiograph lung-field U-Net (``medseg train lung-cxr``) with the shared fit
loop: on a Montgomery or images/ + masks/ folder, or on phantoms (how the shipped weights were
made: ``python -m worker.models.lung_cxr.train --phantoms 360 --out ...``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worker.core.commands import Progress
from worker.models._nn.train import TrainConfig, fit, saved_summary
from worker.models.lung_cxr.lung_data import find_pairs, load_pairs, phantom_set
from worker.models.lung_cxr.serve import DEFAULT_WEIGHTS

logger = logging.getLogger(__name__)

MODEL = "lung-cxr"
MODEL_VERSION = "1.0.0"
PHANTOM_LABEL = "chest radiograph phantoms (worker.models.lung_cxr.phantoms), NOT real patients"


def train_lung_cxr(
    data: Path,
    out: Path,
    config: TrainConfig,
    device: str = "cpu",
    *,
    label: str = "",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train on a user folder (see worker.models.lung_cxr.lung_data for the layouts)."""
    pairs = find_pairs(data)
    images, masks = load_pairs(pairs, (lambda i, n: progress("load", i, n)) if progress else None)
    identity = (MODEL, MODEL_VERSION, label or str(data))
    return fit(images, masks, config, device, out=out, identity=identity, progress=progress)


def train_on_phantoms(
    count: int, out: Path, config: TrainConfig, device: str = "cpu"
) -> dict[str, Any]:
    images, masks = phantom_set(range(count))
    label = f"{PHANTOM_LABEL}; seeds 0-{count - 1}"
    return fit(images, masks, config, device, out=out, identity=(MODEL, MODEL_VERSION, label))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantoms", type=int, default=360)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=3e-3,
        max_seconds=args.max_seconds,
    )
    meta = train_on_phantoms(args.phantoms, args.out, config)
    logger.info("saved %s sha256 %s val dice %.4f", args.out, meta["sha256"], meta["val_dice"])
    return 0


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train lung-cxr``: Montgomery (CXR_png/ + ManualMask/) or images/ + masks/."""
    config = TrainConfig(
        epochs=args.epochs or 40,
        batch_size=args.batch_size or 16,
        learning_rate=3e-3,
        max_seconds=args.max_seconds,
    )
    meta = train_lung_cxr(
        args.data, args.out, config, args.device, label=args.label, progress=progress
    )
    return saved_summary(args.out, meta)


if __name__ == "__main__":
    raise SystemExit(main())
