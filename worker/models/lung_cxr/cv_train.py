"""One lung-field training run, and the patient-grouped cross-validation made of such runs.

Each run: the U-Net initialised from the phantom weights (``init="phantom"``) or at random,
trained within a wall-clock budget on the shared schedule (worker.models._nn.budget), augmented
for projection, exposure, devices and text (worker.models.lung_cxr.augment); the last epoch is
kept (the cosine schedule has annealed by then), so no film is used to pick anything.
Cross-validation trains one model per fold and scores its held-out patients at full
resolution, through the served post-processing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.models._nn import checkpoint
from worker.models._nn.budget import Budget, BudgetTrainer
from worker.models._nn.predictor import UNetPredictor
from worker.models._nn.unet import UNet
from worker.models.lung_cxr.augment import augment
from worker.models.lung_cxr.field_eval import score_films, summarise
from worker.models.lung_cxr.films import Film, FilmArrays, patient_folds

logger = logging.getLogger(__name__)

PHANTOM_WEIGHTS = Path(__file__).resolve().parent / "lung_cxr_unet_phantom.pt"


@dataclass
class RunResult:
    model: UNet
    history: list[dict[str, float]]
    amp: bool  # bf16 used
    steps: int
    seconds: float
    images_per_second: float


@dataclass(frozen=True)
class CxrRecipe:
    """One run's recipe; the schedule (lung_cxr.schedule) sets its size, steps and budget."""

    init: str = "phantom"  # "phantom": fine-tune the phantom weights; "scratch": random
    rows: int = 160
    cols: int = 160
    base: int = 16
    depth: int = 4
    batch_size: int = 8
    learning_rate: float = 2e-3
    steps: int = 1000  # the schedule's length; the last step's weights are kept
    max_seconds: float = 3600.0  # a safety cap: the schedule anneals by then whatever the load
    warmup: float = 0.05
    seed: int = 0
    bf16: bool = True


def _initial_model(recipe: CxrRecipe, phantom_weights: Path) -> UNet:
    if recipe.init == "phantom":
        model, meta = checkpoint.load(phantom_weights, "cpu")
        config = meta["config"]
        if not isinstance(model, UNet) or (int(config["base"]), int(config["depth"])) != (
            recipe.base,
            recipe.depth,
        ):
            raise ValueError(f"{phantom_weights}: not a U-Net of base {recipe.base}, "
                             f"depth {recipe.depth}")  # fmt: skip
        return model
    if recipe.init != "scratch":
        raise ValueError(f"init {recipe.init!r}: expected 'phantom' or 'scratch'")
    torch.manual_seed(recipe.seed)
    return UNet(base=recipe.base, depth=recipe.depth)


def train_run(
    net_images: np.ndarray,
    net_masks: np.ndarray,
    recipe: CxrRecipe,
    device: str,
    *,
    phantom_weights: Path = PHANTOM_WEIGHTS,
    desc: str = "train",
) -> RunResult:
    """One model on the given network-size films."""
    per_epoch = max(1, len(net_images) // recipe.batch_size)
    budget = Budget(
        epochs=-(-recipe.steps // per_epoch),
        max_seconds=recipe.max_seconds,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        warmup=recipe.warmup,
        seed=recipe.seed,
        bf16=recipe.bf16,
    )
    model = _initial_model(recipe, phantom_weights)
    trainer = BudgetTrainer(model, budget, device, len(net_images), augment)
    train_x = torch.from_numpy(net_images).to(device)
    train_y = torch.from_numpy(net_masks).to(device)
    history: list[dict[str, float]] = []
    every = max(1, budget.epochs // 10)
    for epoch in range(1, budget.epochs + 1):
        loss = trainer.epoch(train_x, train_y, lambda: None)
        history.append(
            {"epoch": epoch, "loss": round(loss, 5), "seconds": round(trainer.elapsed(), 1)}
        )
        if epoch % every == 0:
            logger.info("%s: step %d/%d, loss %.4f, %.0f s", desc, trainer.step,
                        trainer.total_steps, loss, trainer.elapsed())  # fmt: skip
        if trainer.spent():
            break
    seconds = trainer.elapsed()
    logger.info(
        "%s: %d epochs, %d steps, last loss %.4f, %.0f s",
        desc, len(history), trainer.step, history[-1]["loss"], seconds,
    )  # fmt: skip
    return RunResult(
        trainer.model.eval(),
        history,
        trainer.amp,
        steps=trainer.step,
        seconds=round(seconds, 1),
        images_per_second=round(trainer.step * recipe.batch_size / max(seconds, 1e-9), 1),
    )


def model_config(recipe: CxrRecipe) -> dict[str, Any]:
    return {
        "arch": "unet",
        "base": recipe.base,
        "depth": recipe.depth,
        "input_rows": recipe.rows,
        "input_cols": recipe.cols,
        "normalisation": "(x/255 - 0.25) / 0.25",
    }


def names_of(films: list[Film], idx: list[int]) -> list[tuple[str, str, str]]:
    return [(films[i].name, films[i].patient, films[i].projection) for i in idx]


def cross_validate(
    films: list[Film],
    arrays: FilmArrays,
    recipe: CxrRecipe,
    device: str,
    *,
    folds: int = 5,
    only: Sequence[int] | None = None,
    keep: Path | None = None,
    phantom_weights: Path = PHANTOM_WEIGHTS,
) -> dict[str, Any]:
    """Per fold: train on the other folds' patients, score this fold's films at full size
    through the saved (fp16) checkpoint, as served. Returns per-fold summaries, the pooled
    out-of-fold summary and every film's record. ``only``: the folds (0-based) to run;
    ``keep``: a folder to keep the fold checkpoints in (``fold<k>.pt``, k 0-based)."""
    split = patient_folds(films, folds, recipe.seed)
    per_fold, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, test in enumerate(split):
            if only is not None and k not in only:
                continue
            held = set(test)
            train = [i for i in range(len(films)) if i not in held and not films[i].qc]
            run = train_run(
                arrays.net_images[train],
                arrays.net_masks[train],
                recipe,
                device,
                phantom_weights=phantom_weights,
                desc=f"{recipe.init} fold {k + 1}/{folds}",
            )
            weights = (keep or Path(tmp)) / f"fold{k}.pt"
            test_names = [films[i].name for i in test]
            checkpoint.save(
                run.model, model_config(recipe), {"fold": k, "test": test_names}, weights
            )
            fold_records = score_films(
                UNetPredictor(weights, device),
                [arrays.images[i] for i in test],
                [arrays.masks[i] for i in test],
                names_of(films, test),
            )
            summary = {
                "fold": k + 1,
                "train_films": len(train),
                "steps": run.steps,
                "seconds": run.seconds,
                "images_per_second": run.images_per_second,
                **summarise(fold_records),
            }
            trusted = [r for r, i in zip(fold_records, test, strict=True) if not films[i].qc]
            if trusted and len(trusted) < len(fold_records):
                summary["qc_passed"] = summarise(trusted)
            logger.info("fold %d: %s", k + 1, summary)
            per_fold.append(summary)
            records.extend(fold_records)
    fold_dice = [f["dice_mean"] for f in per_fold]
    untrusted = {f.name for f in films if f.qc}
    trusted = [r for r in records if r.name not in untrusted]
    return {
        "recipe": asdict(recipe),
        "folds": per_fold,
        "fold_dice_mean": round(float(np.mean(fold_dice)), 4),
        "fold_dice_sd": round(float(np.std(fold_dice)), 4),
        "out_of_fold": summarise(records),
        "out_of_fold_qc_passed": summarise(trusted) if trusted else None,
        "qc_excluded": sorted(untrusted),
        "records": [r.as_dict() for r in records],
    }
