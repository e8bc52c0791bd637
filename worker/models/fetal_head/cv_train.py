"""One fetal head training run: a U-Net trained on some subjects' frames, its epoch picked on
other subjects' frames (a tuning fold) by the HC error in mm at full resolution.

- flips, rotation, scale, shift, gain, gamma and speckle-like noise on the fly (``augment``);
- BCE + soft Dice; AdamW; a warm-up then cosine learning rate driven by whichever of step count
  and wall clock is further along (worker.models._nn.budget), bf16 where the device has it;
- the tuning frames scored after the epochs the schedule names (``schedule.tuning_epochs``);
  the best-scoring epoch's weights are kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from worker.models._nn.budget import Budget, BudgetTrainer
from worker.models._nn.predictor import full_size
from worker.models._nn.threads import thread_map
from worker.models._nn.train import normalise, warp_pair
from worker.models._nn.unet import UNet
from worker.models.fetal_head.biometry import fit_ellipse_mm
from worker.models.fetal_head.frames import HC18Frames
from worker.models.fetal_head.predictor import clean_mask

logger = logging.getLogger(__name__)

OnEpoch = Callable[[int, int], None]  # (epochs done, epochs planned)


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


@torch.no_grad()
def small_probabilities(
    model: torch.nn.Module,
    images: npt.NDArray[np.uint8],
    device: str,
    amp: bool,
    flip_tta: bool,
    *,
    batch: int = 16,
) -> list[npt.NDArray[np.float32]]:
    """Probabilities at the input size, optionally averaged with the mirrored frame's."""
    was_training = model.training
    model.eval()
    out: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(images), batch):
        x = normalise(torch.from_numpy(images[start : start + batch]).float()[:, None] / 255)
        x = x.to(device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            prob = torch.sigmoid(model(x).float())
            if flip_tta:
                mirrored = torch.sigmoid(model(torch.flip(x, dims=[3])).float())
                prob = (prob + torch.flip(mirrored, dims=[3])) / 2
        out.extend(prob[:, 0].float().cpu().numpy())
    model.train(was_training)
    return out


def hc_errors(
    frames: HC18Frames, indices: Sequence[int], probabilities: Sequence[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float64]:
    """Signed HC difference (mm) per frame, measured at full size; NaN where no head was found."""

    def diff(pair: tuple[int, npt.NDArray[np.float32]]) -> float:
        i, prob = pair
        mask = clean_mask(full_size(prob, frames.shape_of(i)))
        spacing = (float(frames.pixel_mm[i]), float(frames.pixel_mm[i]))
        ellipse = fit_ellipse_mm(mask, spacing) if mask.any() else None
        return math.nan if ellipse is None else ellipse.circumference - float(frames.hc_mm[i])

    pairs = list(zip(indices, probabilities, strict=True))
    return np.array(thread_map(diff, pairs), dtype=np.float64).reshape(len(pairs))


def hc_score(diffs: npt.NDArray[np.float64], miss_penalty_mm: float = 100.0) -> float:
    """Mean absolute HC difference with every frame without an answer counted as a gross miss."""
    return float(np.mean(np.where(np.isnan(diffs), miss_penalty_mm, np.abs(diffs))))


@dataclass
class RunSettings:
    """What a run trains with: the network's size and the optimiser's settings."""

    base: int
    depth: int
    epochs: int
    batch_size: int
    learning_rate: float
    warmup: float
    max_seconds: float
    seed: int
    bf16: bool
    tuning_epochs: frozenset[int]


@dataclass
class FoldResult:
    """One run: its best weights and how it got there."""

    fold: int
    train: list[int]
    tune: list[int]
    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]]
    diffs: npt.NDArray[np.float64]  # signed HC differences of the tune frames, best epoch
    diffs_flip: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    seconds: float = 0.0
    images_per_second: float = 0.0
    amp: bool = False

    @property
    def score(self) -> float:
        return hc_score(self.diffs)

    @property
    def score_flip(self) -> float:
        return hc_score(self.diffs_flip)

    def model(self, base: int, depth: int) -> UNet:
        model = UNet(base=base, depth=depth)
        model.load_state_dict(self.state)
        return model


def fit_fold(
    frames: HC18Frames,
    train: list[int],
    tune: list[int],
    run: RunSettings,
    device: str,
    *,
    fold: int = 0,
    on_epoch: OnEpoch | None = None,
) -> FoldResult:
    """Train on ``train``, keep the epoch whose weights score best on ``tune``."""
    torch.manual_seed(run.seed)
    budget = Budget(
        epochs=run.epochs,
        max_seconds=run.max_seconds,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        warmup=run.warmup,
        seed=run.seed,
        bf16=run.bf16,
    )
    model = UNet(base=run.base, depth=run.depth)
    trainer = BudgetTrainer(model, budget, device, len(train), augment)
    train_x = torch.from_numpy(frames.images[train]).to(device)
    train_y = torch.from_numpy(frames.masks[train]).to(device)
    tune_images = frames.images[tune]
    history: list[dict[str, float]] = []
    best = (math.inf, 0, np.zeros(0), dict[str, torch.Tensor]())
    stepping = 0.0
    for epoch in range(1, run.epochs + 1):
        began = time.time()
        loss = trainer.epoch(train_x, train_y, lambda: None)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stepping += time.time() - began
        spent = trainer.spent()
        entry: dict[str, float] = {"epoch": epoch, "loss": round(loss, 5)}
        if epoch in run.tuning_epochs or spent or epoch == run.epochs:
            probs = small_probabilities(trainer.model, tune_images, device, trainer.amp, False)
            diffs = hc_errors(frames, tune, probs)
            score = hc_score(diffs)
            entry["tune_hc_mae_mm"] = round(score, 3)
            entry["tune_misses"] = int(np.isnan(diffs).sum())
            if score < best[0]:
                state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
                best = (score, epoch, diffs, state)
        entry["seconds"] = round(trainer.elapsed(), 1)
        history.append(entry)
        logger.info("fold %d epoch %d/%d %s", fold + 1, epoch, run.epochs, entry)
        if on_epoch:
            on_epoch(epoch, run.epochs)
        if spent:
            logger.warning("fold %d: time budget spent after epoch %d of %d",
                           fold + 1, epoch, run.epochs)  # fmt: skip
            break
    trainer.model.load_state_dict(best[3])
    flipped = small_probabilities(trainer.model, tune_images, device, trainer.amp, True)
    return FoldResult(
        fold=fold,
        train=train,
        tune=tune,
        state={k: v.detach().cpu() for k, v in best[3].items()},
        best_epoch=best[1],
        history=history,
        diffs=best[2],
        diffs_flip=hc_errors(frames, tune, flipped),
        seconds=round(trainer.elapsed(), 1),
        images_per_second=round(trainer.step * run.batch_size / max(stepping, 1e-9), 1),
        amp=trainer.amp,
    )
