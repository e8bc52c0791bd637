"""The training loop every U-Net model uses: a U-Net fit on uint8 images and soft masks of one
size, the best epoch by validation Dice kept and saved as a checkpoint (``checkpoint.save``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from worker.models._nn import checkpoint
from worker.models._nn.hardware import bf16_native
from worker.models._nn.layout import in_layout, memory_format, placed
from worker.models._nn.unet import UNet

logger = logging.getLogger(__name__)


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


def warp_pair(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    angle: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    flip: torch.Tensor,
    aspect: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same affine warp of images ``x`` and masks ``y`` (N, 1, H, W): per sample a
    rotation (radians), a zoom, a shift (fraction of the half-size, (N, 2)), a horizontal
    flip (-1 or 1) and optionally a width/height stretch ``aspect``; zeros outside."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    widen = torch.ones_like(scale) if aspect is None else aspect
    theta = torch.stack(
        [
            torch.stack([cos * flip / widen, -sin / widen, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x, y


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
    x, y = warp_pair(x, y, angle=angle, scale=scale, shift=shift, flip=flip)
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen, device=dev)
    gamma = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen, device=dev)
    x = (x.clamp(0, 1) ** gamma) * gain
    return x, y


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.25) / 0.25  # matches predictor.preprocess


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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
    fmt = memory_format(images.device)
    scores = []
    for start in range(0, len(images), batch):
        x = in_layout(normalise(images[start : start + batch].float()[:, None] / 255), fmt)
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
    amp = images.device.type == "cuda" and bf16_native(str(images.device))
    fmt = memory_format(images.device)
    steps = max(1, len(images) // config.batch_size)
    perm = torch.randperm(len(images), generator=gen, device=images.device)
    total = 0.0
    for step in range(steps):
        idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
        x, y = _augment(images[idx].float()[:, None] / 255, masks[idx].float()[:, None] / 255, gen)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(in_layout(normalise(x), fmt))
        loss = loss_fn(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        total += float(loss.detach())
    return total / steps


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

    model = placed(UNet(base=config.base, depth=config.depth), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    steps_per_epoch = max(1, len(train_idx) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    amp = device.startswith("cuda") and bf16_native(device)  # bf16 tensor cores only
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


def saved_summary(out: Path, metadata: dict[str, Any], score: str = "val Dice") -> str:
    """What ``medseg train`` prints about a saved checkpoint."""
    key = "val_dice" if score == "val Dice" else "val_ap50"
    return f"saved {out} (+ .json)\nsha256 {metadata['sha256']}\n{score} {metadata[key]:.4f}"
