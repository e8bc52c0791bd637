"""Train the fetal head U-Net on a folder in the HC18 layout (``medseg train fetal-head``)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from worker.fetal import checkpoint
from worker.fetal.hc18 import HC18Item, load_image, load_mask, read_index
from worker.fetal.unet import UNet

logger = logging.getLogger(__name__)

INPUT_SIZE = (320, 480)  # rows, columns; HC18 frames are 540 x 800
MODEL_VERSION = "1.0.0"


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    val_fraction: float = 0.1
    base: int = 16
    depth: int = 4
    seed: int = 0
    max_seconds: float = float("inf")  # training time budget: stop after the epoch passing it


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


def _augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, small rotation/scale/shift (same for image and mask), gain/gamma jitter."""
    n = x.shape[0]
    dev = x.device
    angle = (torch.rand(n, generator=gen, device=dev) - 0.5) * math.radians(30)
    scale = 1 + (torch.rand(n, generator=gen, device=dev) - 0.5) * 0.3
    shift = (torch.rand(n, 2, generator=gen, device=dev) - 0.5) * 0.2
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen, device=dev)
    gamma = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen, device=dev)
    x = (x.clamp(0, 1) ** gamma) * gain
    return x, y


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.25) / 0.25  # matches predictor.preprocess


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


@torch.no_grad()
def _val_dice(
    model: UNet, images: torch.Tensor, masks: torch.Tensor, batch: int, amp: bool
) -> float:
    model.eval()
    scores = []
    for start in range(0, len(images), batch):
        x = _normalise(images[start : start + batch].float()[:, None] / 255)
        y = masks[start : start + batch].float()[:, None] / 255 >= 0.5
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x) > 0
        inter = (pred & y).sum((1, 2, 3)).float()
        total = (pred.sum((1, 2, 3)) + y.sum((1, 2, 3))).float()
        # A slice empty in both prediction and truth is a perfect answer, not a zero.
        scores.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), 1.0).cpu())
    model.train()
    return float(torch.cat(scores).mean())


def _train_epoch(
    model: UNet,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    gen: torch.Generator,
    config: TrainConfig,
) -> float:
    """One pass over the training tensors (uint8 on the device); returns the mean loss."""
    images, masks = data
    amp = images.device.type == "cuda"
    steps = max(1, len(images) // config.batch_size)
    perm = torch.randperm(len(images), generator=gen, device=images.device)
    total = 0.0
    for step in range(steps):
        idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
        x, y = _augment(images[idx].float()[:, None] / 255, masks[idx].float()[:, None] / 255, gen)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(_normalise(x))
        loss = _loss(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        total += float(loss.detach())
    return total / steps


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


def fit(
    images_np: np.ndarray,
    masks_np: np.ndarray,
    config: TrainConfig,
    device: str,
    *,
    out: Path,
    identity: tuple[str, str, str],
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train a U-Net on uint8 images and soft masks (0-255) of one size; keep the best epoch
    by validation Dice; save ``out`` (+ .json). ``identity`` = (model, version, data label)."""
    torch.manual_seed(config.seed)
    started = time.time()

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(images_np))
    n_val = max(1, int(len(order) * config.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    images = torch.from_numpy(images_np).to(device)
    masks = torch.from_numpy(masks_np).to(device)
    train_x, train_y = images[train_idx], masks[train_idx]
    val_x, val_y = images[val_idx], masks[val_idx]

    model = UNet(base=config.base, depth=config.depth).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    steps_per_epoch = max(1, len(train_idx) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    amp = device.startswith("cuda")
    torch.backends.cudnn.benchmark = True
    train_started = time.time()
    gen = torch.Generator(device=device).manual_seed(config.seed)
    best = (-1.0, 0)
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(model, optimiser, schedule, (train_x, train_y), gen=gen, config=config)
        dice = _val_dice(model, val_x, val_y, config.batch_size, amp)
        history.append({"epoch": epoch, "loss": loss, "val_dice": dice})
        logger.info("epoch %d/%d loss %.4f val dice %.4f", epoch, config.epochs, loss, dice)
        if progress:
            progress("train", epoch, config.epochs)
        if dice > best[0]:
            best = (dice, epoch)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if time.time() - train_started > config.max_seconds:
            logger.warning("time budget spent after epoch %d of %d", epoch, config.epochs)
            break
    model.load_state_dict(best_state)
    model_config = {
        "arch": "unet",
        "base": config.base,
        "depth": config.depth,
        "input_rows": int(images_np.shape[1]),
        "input_cols": int(images_np.shape[2]),
        "normalisation": "(x/255 - 0.25) / 0.25",
    }
    metadata = {
        "model": identity[0],
        "version": identity[1],
        "trained_on": identity[2],
        "train_images": len(train_idx),
        "val_images": int(n_val),
        "epochs": len(history),
        "best_epoch": best[1],
        "val_dice": round(best[0], 5),
        "history": history,
        "optimiser": f"AdamW lr={config.learning_rate} one-cycle, batch {config.batch_size}",
        "device": device,
        "torch": torch.__version__,
        "train_seconds": round(time.time() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata["sha256"] = checkpoint.save(model, model_config, metadata, out)
    return metadata


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
