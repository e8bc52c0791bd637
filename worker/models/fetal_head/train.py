"""Train the fetal head U-Net on real HC18 frames within a time budget.

The recipe (chosen on subject-grouped tuning frames, see docs/fetal-head.md):
- frames and filled ellipse masks resized once to the input size and cached as uint8 tensors;
- a fixed 20 % of subjects held out for reporting only, 10 % of the rest for picking the epoch
  (by HC mean absolute difference in mm at full resolution, the number that matters);
- flips, rotation, scale, shift, gain, gamma and speckle-like noise on the fly;
- BCE + soft Dice; AdamW; a warm-up then cosine learning rate driven by whichever of step count
  and wall clock is further along, so a run on a loaded machine still anneals before its budget;
- bf16 autocast where the CPU or GPU has the units for it (worker.models._nn.budget).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from worker.core.commands import Progress
from worker.models._nn import checkpoint
from worker.models._nn.budget import Budget, BudgetTrainer
from worker.models._nn.predictor import full_size
from worker.models._nn.train import normalise, warp_pair
from worker.models._nn.unet import UNet
from worker.models.fetal_head.biometry import fit_ellipse_mm
from worker.models.fetal_head.gate_fit import attach_gate
from worker.models.fetal_head.hc18 import HC18Item, load_image, load_mask, read_index
from worker.models.fetal_head.hc18_split import subject_of, subject_split
from worker.models.fetal_head.predictor import clean_mask

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.0.0"
#: Changes whenever ``load_mask`` does, so cached tensors of an older recipe are not reused.
MASK_RECIPE = "fill-erode1-ring-fit"
HC18_CITATION = (
    "T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken. Automated "
    "measurement of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8): "
    "e0200412, 2018. doi:10.1371/journal.pone.0200412; data: Zenodo doi:10.5281/zenodo.1327317"
)


@dataclass
class HC18Config:
    rows: int = 160
    cols: int = 240
    base: int = 16
    depth: int = 4
    batch_size: int = 16
    learning_rate: float = 3e-3
    epochs: int = 60
    max_seconds: float = 2 * 3600.0
    warmup: float = 0.03
    test_fraction: float = 0.2
    tune_fraction: float = 0.1
    seed: int = 0
    bf16: bool = True
    threads: int = 0  # 0: torch's default


# -- data ------------------------------------------------------------------------------------


def _resized(item: HC18Item, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.resize(load_image(item.image), (cols, rows), interpolation=cv2.INTER_AREA)
    soft = cv2.resize(
        load_mask(item.annotation).astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA
    )
    return image, np.round(soft * 255).astype(np.uint8)


def load_tensors(
    items: Sequence[HC18Item], rows: int, cols: int, cache: Path | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """uint8 images and soft masks (0-255) at the input size, from ``cache`` when it has them."""
    key = hashlib.sha256(
        "\n".join(
            f"{i.image.name}:{i.image.stat().st_size}:{i.annotation.stat().st_size}" for i in items
        ).encode()
        + MASK_RECIPE.encode()
    ).hexdigest()[:16]
    path = cache / f"hc18-{rows}x{cols}-{key}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as data:
            return data["images"], data["masks"]
    images = np.empty((len(items), rows, cols), dtype=np.uint8)
    masks = np.empty_like(images)
    for i, item in enumerate(tqdm(items, desc="load", unit="frame", mininterval=5)):
        images[i], masks[i] = _resized(item, rows, cols)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images, masks=masks)
    return images, masks


# -- training step ---------------------------------------------------------------------------


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random affine for image and mask (flip, +-25 deg, x0.8-1.25, +-12 % shift),
    then gain, gamma, multiplicative noise and a random blur on the image alone."""
    n, dev = x.shape[0], x.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=dev)

    angle = (uniform(n) - 0.5) * math.radians(50)
    scale = torch.exp((uniform(n) - 0.5) * 2 * math.log(1.25))
    shift = (uniform(n, 2) - 0.5) * 0.24
    flip = torch.where(uniform(n) < 0.5, -1.0, 1.0)
    x, y = warp_pair(x, y, angle=angle, scale=scale, shift=shift, flip=flip)
    gain = 0.75 + 0.5 * uniform(n, 1, 1, 1)
    gamma = torch.exp((uniform(n, 1, 1, 1) - 0.5) * 2 * math.log(1.6))
    x = x.clamp(0, 1) ** gamma * gain
    noise = 1 + 0.15 * uniform(n, 1, 1, 1) * torch.randn(x.shape, generator=gen, device=dev)
    x = x * noise
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = torch.where(uniform(n, 1, 1, 1) < 0.3, blurred, x)
    return x, y


# -- tuning-set measurement ------------------------------------------------------------------


@torch.no_grad()
def small_probabilities(
    model: torch.nn.Module, images: npt.NDArray[np.uint8], device: str, amp: bool, flip_tta: bool
) -> list[npt.NDArray[np.float32]]:
    """Probabilities at the input size, optionally averaged with the mirrored frame's."""
    model.eval()
    out: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(images), 16):
        x = normalise(torch.from_numpy(images[start : start + 16]).float()[:, None] / 255)
        x = x.to(device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            prob = torch.sigmoid(model(x).float())
            if flip_tta:
                mirrored = torch.sigmoid(model(torch.flip(x, dims=[3])).float())
                prob = (prob + torch.flip(mirrored, dims=[3])) / 2
        out.extend(prob[:, 0].float().cpu().numpy())
    model.train()
    return out


def hc_errors(
    items: Sequence[HC18Item],
    probabilities: Sequence[npt.NDArray[np.float32]],
    shapes: Sequence[tuple[int, int]],
) -> npt.NDArray[np.float64]:
    """Signed HC difference (mm) per frame; NaN where no head was found."""
    diffs = np.full(len(items), np.nan)
    for k, (item, prob, shape) in enumerate(zip(items, probabilities, shapes, strict=True)):
        mask = clean_mask(full_size(prob, shape))
        ellipse = fit_ellipse_mm(mask, (item.pixel_mm, item.pixel_mm)) if mask.any() else None
        if ellipse is not None:
            diffs[k] = ellipse.circumference - item.hc_mm
    return diffs


def hc_score(diffs: npt.NDArray[np.float64], miss_penalty_mm: float = 100.0) -> float:
    """Mean absolute HC difference with every frame without an answer counted as a gross miss."""
    return float(np.mean(np.where(np.isnan(diffs), miss_penalty_mm, np.abs(diffs))))


# -- the run ---------------------------------------------------------------------------------


@dataclass
class _Tuning:
    """The tuning subjects: network inputs, items and full-size shapes."""

    images: npt.NDArray[np.uint8]
    items: list[HC18Item]
    shapes: list[tuple[int, int]]

    def score(
        self, model: torch.nn.Module, device: str, amp: bool, flip: bool
    ) -> tuple[float, int]:
        """(HC score in mm, frames without an answer)."""
        probs = small_probabilities(model, self.images, device, amp, flip_tta=flip)
        diffs = hc_errors(self.items, probs, self.shapes)
        return hc_score(diffs), int(np.isnan(diffs).sum())


def train_hc18(
    data: Path,
    out: Path,
    config: HC18Config,
    device: str = "cpu",
    *,
    cache: Path | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Train on the train subjects, pick the epoch on the tune subjects, save ``out``."""
    started = time.time()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    items = read_index(data)
    split = subject_split(items, config.test_fraction, config.tune_fraction, config.seed)
    images, masks = load_tensors(items, config.rows, config.cols, cache)
    tuning = _Tuning(
        images[split.tune],
        [items[i] for i in split.tune],
        [_shape_of(items[i]) for i in split.tune],
    )
    train_x = torch.from_numpy(images[split.train]).to(device)
    train_y = torch.from_numpy(masks[split.train]).to(device)
    budget = Budget(
        epochs=config.epochs,
        max_seconds=config.max_seconds,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup=config.warmup,
        seed=config.seed,
        bf16=config.bf16,
    )
    model = UNet(base=config.base, depth=config.depth)
    trainer = BudgetTrainer(model, budget, device, len(split.train), augment)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (math.inf, 0, {})
    bar = tqdm(total=trainer.total_steps, desc="train", unit="step", mininterval=30)
    for epoch in range(1, config.epochs + 1):
        loss = trainer.epoch(train_x, train_y, bar.update)
        score, misses = tuning.score(trainer.model, device, trainer.amp, flip=False)
        elapsed = trainer.elapsed()
        history.append(
            {
                "epoch": epoch,
                "loss": round(loss, 5),
                "tune_hc_mae_mm": round(score, 3),
                "tune_misses": misses,
                "seconds": round(elapsed, 1),
            }
        )
        logger.info(
            "epoch %d loss %.4f tune HC MAE %.2f mm (%d misses) %.0f s",
            epoch, loss, score, misses, elapsed,
        )  # fmt: skip
        if score < best[0]:
            state = trainer.model.state_dict()
            best = (score, epoch, {k: v.detach().clone() for k, v in state.items()})
        if trainer.spent():
            logger.warning("time budget spent after epoch %d of %d", epoch, config.epochs)
            break
    bar.close()
    trainer.model.load_state_dict(best[2])
    plain, _ = tuning.score(trainer.model, device, trainer.amp, flip=False)
    flipped, _ = tuning.score(trainer.model, device, trainer.amp, flip=True)
    tta = {
        "flip_tta": flipped < plain,
        "tune_hc_mae_mm_plain": round(plain, 3),
        "tune_hc_mae_mm_flip": round(flipped, 3),
    }
    model_config = {
        "arch": "unet",
        "base": config.base,
        "depth": config.depth,
        "input_rows": config.rows,
        "input_cols": config.cols,
        "normalisation": "(x/255 - 0.25) / 0.25",
        "flip_tta": tta["flip_tta"],
    }
    metadata = {
        "model": "fetal-head-unet",
        "version": MODEL_VERSION,
        "trained_on": label or f"HC18 training set ({data.name}), real fetal head ultrasound",
        "citation": HC18_CITATION,
        "licence": "HC18 data CC BY 4.0; weights Apache-2.0 with the data's attribution",
        "split": {
            "method": "by subject (number before the first _), fixed seed",
            "seed": config.seed,
            "train_frames": len(split.train),
            "tune_frames": len(split.tune),
            "test_frames": len(split.test),
            "test_subjects": sorted({subject_of(items[i]) for i in split.test}),
        },
        "recipe": asdict(config),
        "epochs": len(history),
        "best_epoch": best[1],
        "tune_hc_mae_mm": round(best[0], 3),
        "tta": tta,
        "history": history,
        "bf16": trainer.amp,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": round(time.time() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata["sha256"] = checkpoint.save(trainer.model, model_config, metadata, out)
    metadata["quality_gate"] = attach_gate(out, tuning.items, device)
    return metadata


def _shape_of(item: HC18Item) -> tuple[int, int]:
    image = load_image(item.image)
    return int(image.shape[0]), int(image.shape[1])


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train fetal-head``: the recipe above; ``--max-seconds`` is the time budget
    (default two hours), ``--epochs`` its cap. Progress is tqdm's bar on stderr."""
    del progress  # tqdm reports instead: it behaves in logs (rate-limited lines, an ETA)
    defaults = HC18Config()
    config = HC18Config(
        epochs=args.epochs or defaults.epochs,
        batch_size=args.batch_size or defaults.batch_size,
        max_seconds=args.max_seconds if math.isfinite(args.max_seconds) else defaults.max_seconds,
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medseg" / "hc18"
    meta = train_hc18(args.data, args.out, config, args.device, cache=cache, label=args.label)
    return (
        f"saved {args.out} (+ .json)\nsha256 {meta['sha256']}\n"
        f"best epoch {meta['best_epoch']} of {meta['epochs']}: tuning HC mean abs difference "
        f"{meta['tune_hc_mae_mm']:.2f} mm, flip TTA {meta['tta']['flip_tta']}, "
        f"{meta['train_seconds'] / 60:.0f} min"
    )
