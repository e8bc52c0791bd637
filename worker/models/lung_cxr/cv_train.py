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
from dataclasses import asdict, dataclass, replace
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
from worker.models.lung_cxr.films import Film, FilmArrays, patient_folds, to_arrays
from worker.models.lung_cxr.phantoms import make_chest_xray

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
    # Chest phantoms (seeds 0..n-1, their masks in the real masks' convention) added to every
    # run's training films; 0: real films only (2.1.0).
    phantom_films: int = 0


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


def phantom_arrays(count: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` chest phantoms (seeds 0 to count-1) at the network ``size`` (rows, columns),
    as real films are brought there: the image and the soft mask of both lung fields, the
    lung behind the heart included (the convention of the real training masks)."""
    phantoms = [make_chest_xray(seed) for seed in range(count)]
    arrays = to_arrays([p.image for p in phantoms], [p.fields for p in phantoms], size)
    return arrays.net_images, arrays.net_masks


def train_run(
    net_images: np.ndarray,
    net_masks: np.ndarray,
    recipe: CxrRecipe,
    device: str,
    *,
    phantom_weights: Path = PHANTOM_WEIGHTS,
    desc: str = "train",
) -> RunResult:
    """One model on the given network-size films, and ``recipe.phantom_films`` phantoms."""
    if recipe.phantom_films > 0:
        extra_images, extra_masks = phantom_arrays(recipe.phantom_films, net_images.shape[1:3])
        net_images = np.concatenate([net_images, extra_images])
        net_masks = np.concatenate([net_masks, extra_masks])
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


def _finished(weights: Path, recipe: CxrRecipe, k: int, test: list[str]) -> dict[str, Any] | None:
    """The run record (steps, seconds, images/s) of fold ``k``'s checkpoint kept at ``weights``
    when it is this recipe's run on this split: same recipe, and either the same wall-clock cap
    or every step done; None otherwise (no checkpoint, another recipe or split)."""
    try:
        meta = checkpoint.read_metadata(weights)
    except checkpoint.CheckpointError:
        return None
    run, kept = meta.get("run"), meta.get("recipe")
    if not isinstance(run, dict) or not isinstance(kept, dict):
        return None
    ours = asdict(recipe)
    kept = {"phantom_films": 0, **kept}  # runs saved before the recipe had phantoms had none
    same = {**kept, "max_seconds": 0} == {**ours, "max_seconds": 0}
    if not (same and meta.get("fold") == k and meta.get("test") == test):
        return None
    if kept["max_seconds"] != ours["max_seconds"] and int(run.get("steps", 0)) < recipe.steps:
        return None
    return run


@dataclass(frozen=True)
class _FoldRun:
    """What one fold's training needs, for this process or a worker process."""

    k: int
    images: np.ndarray
    masks: np.ndarray
    recipe: CxrRecipe
    device: str
    phantom_weights: Path
    desc: str
    weights: Path
    metadata: dict[str, Any]
    threads: int = 0  # torch threads in a worker process (0: leave as is)


def _train_fold(job: _FoldRun) -> dict[str, Any]:
    """Train one fold and save its checkpoint; the run record."""
    if job.threads:
        torch.set_num_threads(job.threads)
    run = train_run(
        job.images,
        job.masks,
        job.recipe,
        job.device,
        phantom_weights=job.phantom_weights,
        desc=job.desc,
    )
    record = {
        "steps": run.steps,
        "seconds": run.seconds,
        "images_per_second": run.images_per_second,
    }
    metadata = {**job.metadata, "recipe": asdict(job.recipe), "run": record}
    checkpoint.save(run.model, model_config(job.recipe), metadata, job.weights)
    return record


def _train_folds(jobs: list[_FoldRun], parallel: int) -> list[dict[str, Any]]:
    """Each job's run record; ``parallel`` > 1 trains that many at once in worker processes
    (spawned, the torch threads shared out among them)."""
    if parallel <= 1 or len(jobs) <= 1:
        return [_train_fold(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(parallel, len(jobs))
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(_train_fold, [replace(job, threads=threads) for job in jobs]))


def cross_validate(
    films: list[Film],
    arrays: FilmArrays,
    recipe: CxrRecipe,
    device: str,
    *,
    folds: int = 5,
    only: Sequence[int] | None = None,
    keep: Path | None = None,
    reuse: bool = False,
    parallel: int = 1,
    phantom_weights: Path = PHANTOM_WEIGHTS,
) -> dict[str, Any]:
    """Per fold: train on the other folds' patients, score this fold's films at full size
    through the saved (fp16) checkpoint, as served. Returns per-fold summaries, the pooled
    out-of-fold summary and every film's record. ``only``: the folds (0-based) to run;
    ``keep``: a folder to keep the fold checkpoints in (``fold<k>.pt``, k 0-based); with
    ``reuse``, a fold whose checkpoint there is this recipe's run on this split is scored, not
    trained again (an interrupted cross-validation resumes). ``parallel``: folds trained at
    once, each in its own process."""
    split = patient_folds(films, folds, recipe.seed)
    per_fold, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        chosen = [k for k in range(len(split)) if only is None or k in only]
        train_of = {
            k: [i for i in range(len(films)) if i not in set(split[k]) and not films[i].qc]
            for k in chosen
        }
        weights_of = {k: (keep or Path(tmp)) / f"fold{k}.pt" for k in chosen}
        tests = {k: [films[i].name for i in split[k]] for k in chosen}
        runs: dict[int, dict[str, Any]] = {}
        for k in chosen:
            found = _finished(weights_of[k], recipe, k, tests[k]) if reuse else None
            if found is not None:
                logger.info("fold %d: reusing %s (%s)", k + 1, weights_of[k], found)
                runs[k] = found
        jobs = [
            _FoldRun(
                k,
                arrays.net_images[train_of[k]],
                arrays.net_masks[train_of[k]],
                recipe,
                device,
                phantom_weights,
                f"{recipe.init} fold {k + 1}/{folds}",
                weights_of[k],
                {"fold": k, "test": tests[k]},
            )
            for k in chosen
            if k not in runs
        ]
        runs.update(zip([j.k for j in jobs], _train_folds(jobs, parallel), strict=True))
        for k in chosen:
            test = split[k]
            fold_records = score_films(
                UNetPredictor(weights_of[k], device),
                [arrays.images[i] for i in test],
                [arrays.masks[i] for i in test],
                names_of(films, test),
            )
            summary = {
                "fold": k + 1,
                "train_films": len(train_of[k]),
                **runs[k],
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
