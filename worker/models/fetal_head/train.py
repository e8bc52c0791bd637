"""Train the fetal head U-Net on a folder in the HC18 layout (``medseg train fetal-head``)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from worker.core.commands import Progress
from worker.models._nn.train import TrainConfig, fit, saved_summary
from worker.models.fetal_head.hc18 import HC18Item, load_image, load_mask, read_index

logger = logging.getLogger(__name__)

INPUT_SIZE = (320, 480)  # rows, columns; HC18 frames are 540 x 800
MODEL_VERSION = "1.0.0"


def _load_item(item: HC18Item) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = INPUT_SIZE
    image = cv2.resize(load_image(item.image), (cols, rows), interpolation=cv2.INTER_AREA)
    mask = load_mask(item.annotation).astype(np.float32)
    soft = cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_AREA)
    return image, np.round(soft * 255).astype(np.uint8)


def _load_set(
    folder: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and soft masks at the input size, read over all CPUs."""
    items = read_index(folder)
    rows, cols = INPUT_SIZE
    images = np.empty((len(items), rows, cols), dtype=np.uint8)
    masks = np.empty((len(items), rows, cols), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, (image, mask) in enumerate(pool.map(_load_item, items)):
            images[i], masks[i] = image, mask
            if progress:
                progress(i + 1, len(items))
    return images, masks


def train(
    data: Path,
    out: Path,
    config: TrainConfig,
    device: str = "cpu",
    *,
    progress: Callable[[str, int, int], None] | None = None,
    data_label: str = "",
) -> dict[str, Any]:
    """Train the fetal head model on an HC18-layout folder; returns the checkpoint metadata."""
    images, masks = _load_set(data, (lambda i, n: progress("load", i, n)) if progress else None)
    return fit(
        images,
        masks,
        config,
        device,
        out=out,
        identity=("fetal-head-unet", MODEL_VERSION, data_label or str(data)),
        progress=progress,
    )


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train fetal-head``."""
    config = TrainConfig(
        epochs=args.epochs or 40, batch_size=args.batch_size or 32, max_seconds=args.max_seconds
    )
    meta = train(args.data, args.out, config, args.device, progress=progress, data_label=args.label)
    return saved_summary(args.out, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--label", default="", help="what the data is, stored in the metadata")
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    meta = train(
        args.data,
        args.out,
        TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_seconds=args.max_seconds),
        args.device,
        data_label=args.label,
    )
    logger.info("saved %s sha256 %s val dice %.4f", args.out, meta["sha256"], meta["val_dice"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
