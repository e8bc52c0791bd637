"""Train the pneumonia opacity detector (``medseg train pneumonia``) on the RSNA layout, or
on phantom opacities (how the shipped weights were made:
``python -m worker.models.lung_cxr.detector_train --phantoms 600 --out ...``)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import torch

from worker.core.commands import Progress
from worker.models._nn.metrics import average_precision
from worker.models._nn.train import saved_summary
from worker.models.lung_cxr.detector import (
    DEFAULT_DETECTOR_WEIGHTS,
    as_tensor,
    build_detector,
    save_detector,
)
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.models.lung_cxr.preprocess import NET_SIZE, display_uint8, to_net
from worker.models.lung_cxr.rsna import read_rsna

logger = logging.getLogger(__name__)

MODEL = "pneumonia-frcnn"
MODEL_VERSION = "1.0.0"
PHANTOM_LABEL = (
    "chest radiograph phantom opacities (worker.models.lung_cxr.phantoms), NOT real patients"
)


@dataclass
class DetectionSet:
    images: list[npt.NDArray[np.uint8]]  # at NET_SIZE
    boxes: list[npt.NDArray[np.float32]]  # (n, 4) x0, y0, x1, y1 at NET_SIZE


@dataclass
class DetectorConfig:
    epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 2e-3
    val_fraction: float = 0.1
    seed: int = 0
    max_seconds: float = float("inf")


def _scaled(
    boxes: Iterable[tuple[float, float, float, float]], shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    sy, sx = NET_SIZE[0] / shape[0], NET_SIZE[1] / shape[1]
    out = np.array([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes], np.float32)
    return out.reshape(-1, 4)


def phantom_detection_set(seeds: Iterable[int]) -> DetectionSet:
    images, boxes = [], []
    for seed in seeds:
        phantom = make_chest_xray(seed, opacities=[0, 1, 1, 2][seed % 4])
        images.append(to_net(display_uint8(phantom.image, monochrome1=False)))
        boxes.append(_scaled(phantom.boxes, phantom.image.shape))
    return DetectionSet(images, boxes)


def rsna_detection_set(
    folder: Path, progress: Callable[[int, int], None] | None = None
) -> DetectionSet:
    items = read_rsna(folder)
    images, boxes = [], []
    for i, item in enumerate(items):
        ds = pydicom.dcmread(item.image)
        mono1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        image = display_uint8(ds.pixel_array, monochrome1=mono1)
        images.append(to_net(image))
        boxes.append(_scaled(item.boxes, image.shape))
        if progress:
            progress(i + 1, len(items))
    return DetectionSet(images, boxes)


def _sample(
    data: DetectionSet, index: int, rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One augmented training sample: horizontal flip, gain and gamma jitter."""
    image = data.images[index].astype(np.float32) / 255.0
    boxes = data.boxes[index].copy()
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes[:, [0, 2]] = NET_SIZE[1] - boxes[:, [2, 0]]
    image = np.clip(image ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15), 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    target = {
        "boxes": torch.from_numpy(boxes).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
    }
    return x, target


@torch.inference_mode()
def predict_set(
    model: torch.nn.Module, images: list[npt.NDArray[np.uint8]], device: str, batch: int = 8
) -> list[list[tuple[tuple[float, float, float, float], float]]]:
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        tensors = [as_tensor(img).to(device) for img in images[start : start + batch]]
        for found in model(tensors):
            out.append(
                [
                    ((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s))
                    for b, s in zip(found["boxes"].cpu(), found["scores"].cpu(), strict=True)
                ]
            )
    return out


def _ap(model: torch.nn.Module, data: DetectionSet, device: str) -> float:
    truths = [
        [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in bs] for bs in data.boxes
    ]
    ap = average_precision(predict_set(model, data.images, device), truths)
    return 0.0 if math.isnan(ap) else ap


def fit_detector(
    data: DetectionSet,
    config: DetectorConfig,
    device: str,
    *,
    out: Path,
    label: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train, keep the epoch with the best validation AP@0.5, save ``out`` (+ .json)."""
    started = time.time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(data.images))
    n_val = max(1, int(len(order) * config.val_fraction))
    val = DetectionSet(
        [data.images[i] for i in order[:n_val]], [data.boxes[i] for i in order[:n_val]]
    )
    train_idx = order[n_val:]
    model = build_detector().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    steps = max(1, len(train_idx) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps, pct_start=0.15
    )
    best: tuple[float, int] = (-1.0, 0)
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = rng.permutation(train_idx)
        total = 0.0
        for step in range(steps):
            chunk = perm[step * config.batch_size : (step + 1) * config.batch_size]
            samples = [_sample(data, int(i), rng) for i in chunk]
            images = [x.to(device) for x, _ in samples]
            targets = [{k: v.to(device) for k, v in t.items()} for _, t in samples]
            loss = sum(model(images, targets).values())
            assert isinstance(loss, torch.Tensor)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        ap = _ap(model, val, device)
        history.append({"epoch": epoch, "loss": total / steps, "val_ap50": ap})
        logger.info(
            "epoch %d/%d loss %.4f val AP@0.5 %.4f", epoch, config.epochs, total / steps, ap
        )
        if progress:
            progress("train", epoch, config.epochs)
        if ap > best[0]:
            best = (ap, epoch)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if time.time() - started > config.max_seconds:
            logger.warning("time budget spent after epoch %d of %d", epoch, config.epochs)
            break
    model.load_state_dict(best_state)
    metadata = {
        "model": MODEL,
        "version": MODEL_VERSION,
        "trained_on": label,
        "train_images": len(train_idx),
        "val_images": n_val,
        "epochs": len(history),
        "best_epoch": best[1],
        "val_ap50": round(best[0], 5),
        "history": history,
        "optimiser": f"AdamW lr={config.learning_rate} one-cycle, batch {config.batch_size}",
        "pretrained": "none: every weight trained from scratch, nothing downloaded",
        "device": device,
        "torch": torch.__version__,
        "train_seconds": round(time.time() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata["sha256"] = save_detector(model, metadata, out)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantoms", type=int, default=600)
    parser.add_argument("--out", type=Path, default=DEFAULT_DETECTOR_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = phantom_detection_set(range(args.phantoms))
    label = f"{PHANTOM_LABEL}; seeds 0-{args.phantoms - 1}"
    config = DetectorConfig(
        epochs=args.epochs, batch_size=args.batch_size, max_seconds=args.max_seconds
    )
    meta = fit_detector(data, config, "cpu", out=args.out, label=label)
    logger.info("saved %s sha256 %s val AP@0.5 %.4f", args.out, meta["sha256"], meta["val_ap50"])
    return 0


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train pneumonia``: RSNA (stage_2_train_labels.csv + stage_2_train_images/)."""
    data = rsna_detection_set(args.data, lambda i, n: progress("load", i, n))
    config = DetectorConfig(
        epochs=args.epochs or 10, batch_size=args.batch_size or 4, max_seconds=args.max_seconds
    )
    meta = fit_detector(
        data,
        config,
        args.device,
        out=args.out,
        label=args.label or str(args.data),
        progress=progress,
    )
    return saved_summary(args.out, meta, score="val AP@0.5")


if __name__ == "__main__":
    raise SystemExit(main())
