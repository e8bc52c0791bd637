"""Train the lung-field U-Net on phantoms with the shared fit loop: how the phantom weights
(``lung_cxr_unet_phantom.pt``, the starting point of the real-film recipe) were made:
``python -m worker.models.lung_cxr.train --phantoms 360 --out ...``. Real films:
worker.models.lung_cxr.recipe (``medseg train lung-cxr``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from worker.models._nn.train import TrainConfig, fit
from worker.models.lung_cxr.cv_train import PHANTOM_WEIGHTS
from worker.models.lung_cxr.lung_data import phantom_set

logger = logging.getLogger(__name__)

MODEL = "lung-cxr"
MODEL_VERSION = "1.0.0"  # the phantom weights' version
PHANTOM_LABEL = "chest radiograph phantoms (worker.models.lung_cxr.phantoms), NOT real patients"


def train_on_phantoms(
    count: int, out: Path, config: TrainConfig, device: str = "cpu"
) -> dict[str, Any]:
    images, masks = phantom_set(range(count))
    label = f"{PHANTOM_LABEL}; seeds 0-{count - 1}"
    return fit(images, masks, config, device, out=out, identity=(MODEL, MODEL_VERSION, label))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantoms", type=int, default=360)
    parser.add_argument("--out", type=Path, default=PHANTOM_WEIGHTS)
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


if __name__ == "__main__":
    raise SystemExit(main())
