"""Train the lung-field U-Net on real chest films, chosen and reported by patient-grouped
cross-validation (``medseg train lung-cxr --data DIR [--cv 5]``).

Each run: the 256x256 U-Net, initialised from the phantom weights (``init="phantom"``) or at
random, trained within a wall-clock budget on the shared schedule
(worker.models._nn.budget), augmented for projection, exposure, devices and text
(worker.models.lung_cxr.augment); the last epoch is kept (the cosine schedule has annealed by
then), so no film is used to pick anything. Cross-validation trains one model per fold and
scores its held-out patients at full resolution, through the served post-processing; the
shipped model is then trained on every film with the same recipe.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worker.core.commands import Progress
from worker.models._nn import checkpoint
from worker.models._nn.budget import Budget, BudgetTrainer
from worker.models._nn.predictor import UNetPredictor
from worker.models._nn.unet import UNet
from worker.models.lung_cxr.augment import augment
from worker.models.lung_cxr.field_eval import FilmRecord, score_films, summarise
from worker.models.lung_cxr.films import Film, FilmArrays, load_films, patient_folds, read_films

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.0.0"
PHANTOM_WEIGHTS = Path(__file__).resolve().parent / "lung_cxr_unet_phantom.pt"


@dataclass(frozen=True)
class CxrRecipe:
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
        if (int(config["base"]), int(config["depth"])) != (recipe.base, recipe.depth):
            raise ValueError(f"{phantom_weights}: not base {recipe.base}, depth {recipe.depth}")
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
) -> tuple[UNet, list[dict[str, float]], bool]:
    """One model on the given network-size films; (model, loss history, bf16 used)."""
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
    with tqdm(total=trainer.total_steps, desc=desc, unit="step", mininterval=30) as bar:
        for epoch in range(1, budget.epochs + 1):
            loss = trainer.epoch(train_x, train_y, bar.update)
            history.append(
                {"epoch": epoch, "loss": round(loss, 5), "seconds": round(trainer.elapsed(), 1)}
            )
            if trainer.spent():
                break
    logger.info(
        "%s: %d epochs, %d steps, last loss %.4f, %.0f s",
        desc, len(history), trainer.step, history[-1]["loss"], trainer.elapsed(),
    )  # fmt: skip
    return trainer.model.eval(), history, trainer.amp


def _model_config(recipe: CxrRecipe) -> dict[str, Any]:
    return {
        "arch": "unet",
        "base": recipe.base,
        "depth": recipe.depth,
        "input_rows": recipe.rows,
        "input_cols": recipe.cols,
        "normalisation": "(x/255 - 0.25) / 0.25",
    }


def _names(films: list[Film], idx: list[int]) -> list[tuple[str, str, str]]:
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
            model, _, _ = train_run(
                arrays.net_images[train],
                arrays.net_masks[train],
                recipe,
                device,
                phantom_weights=phantom_weights,
                desc=f"{recipe.init} fold {k + 1}/{folds}",
            )
            weights = (keep or Path(tmp)) / f"fold{k}.pt"
            test_names = [films[i].name for i in test]
            checkpoint.save(model, _model_config(recipe), {"fold": k, "test": test_names}, weights)
            fold_records = score_films(
                UNetPredictor(weights, device),
                [arrays.images[i] for i in test],
                [arrays.masks[i] for i in test],
                _names(films, test),
            )
            summary = {"fold": k + 1, "train_films": len(train), **summarise(fold_records)}
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


def train_final(
    films: list[Film],
    arrays: FilmArrays,
    recipe: CxrRecipe,
    out: Path,
    device: str,
    *,
    label: str,
    extra: dict[str, Any],
    phantom_weights: Path = PHANTOM_WEIGHTS,
) -> dict[str, Any]:
    """The shipped model: the recipe on every film that passed annotation QC; saved with
    ``extra`` in its metadata."""
    started = time.time()
    use = [i for i, film in enumerate(films) if not film.qc]
    model, history, amp = train_run(
        arrays.net_images[use],
        arrays.net_masks[use],
        recipe,
        device,
        phantom_weights=phantom_weights,
        desc="final",
    )
    metadata = {
        "model": "lung-cxr",
        "version": MODEL_VERSION,
        "trained_on": label,
        "train_images": len(use),
        "train_patients": len({films[i].patient for i in use}),
        "qc_excluded": {f.name: f.qc for f in films if f.qc},
        "recipe": asdict(recipe),
        "epochs": len(history),
        "history": history[-5:],
        "bf16": amp,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": round(time.time() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    metadata["sha256"] = checkpoint.save(model, _model_config(recipe), metadata, out)
    return metadata


def load(folder: Path, recipe: CxrRecipe) -> tuple[list[Film], FilmArrays]:
    films = read_films(folder)
    return films, load_films(films, (recipe.rows, recipe.cols))


def records_of(cv: dict[str, Any]) -> list[FilmRecord]:
    return [FilmRecord(**r) for r in cv["records"]]


def train_and_validate(
    data: Path,
    out: Path,
    recipe: CxrRecipe,
    device: str,
    *,
    folds: int = 5,
    label: str = "",
    phantom_weights: Path = PHANTOM_WEIGHTS,
) -> dict[str, Any]:
    """Cross-validate (``folds`` > 1), fit the quality gate on the out-of-fold films, then
    train the shipped model on every film; its metadata carries all of it."""
    from worker.models.lung_cxr.gate_fit import out_of_fold_signals

    films, arrays = load(data, recipe)
    extra: dict[str, Any] = {
        "data": {
            "folder": data.name,
            "films": len(films),
            "patients": len({f.patient for f in films}),
            "projections": {p: sum(f.projection == p for f in films) for p in ("pa", "ap", "")},
        }
    }
    if folds > 1:
        with tempfile.TemporaryDirectory() as keep:
            cv = cross_validate(
                films, arrays, recipe, device, folds=folds, keep=Path(keep),
                phantom_weights=phantom_weights,
            )  # fmt: skip
            oof = out_of_fold_signals(films, arrays, sorted(Path(keep).glob("fold*.pt")), device)
        extra["cross_validation"] = cv
        extra["quality_gate"] = fit_gate(films, cv, oof)
    return train_final(
        films,
        arrays,
        recipe,
        out,
        device,
        label=label or f"{data.name}: real chest films with lung-field masks",
        extra=extra,
        phantom_weights=phantom_weights,
    )


def fit_gate(films: list[Film], cv: dict[str, Any], oof: list[Any]) -> dict[str, Any]:
    """The gate from the out-of-fold signals (``oof``, in film order) of the films whose
    masks passed QC, each with its out-of-fold Dice."""
    from worker.models.lung_cxr.gate_fit import gate_entry

    dice = {r.name: r.dice for r in records_of(cv)}
    trusted = [i for i, film in enumerate(films) if not film.qc and film.name in dice]
    return gate_entry([oof[i] for i in trusted], [dice[films[i].name] for i in trusted])


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train lung-cxr --data DIR``: the recipe above; ``--folds`` (default 5) runs
    the patient-grouped cross-validation first (0: none), ``--init phantom|scratch``."""
    del progress  # tqdm reports instead: rate-limited lines with an ETA behave in logs
    recipe = CxrRecipe(
        init=args.init or "phantom",
        batch_size=args.batch_size or CxrRecipe.batch_size,
        steps=args.steps or CxrRecipe.steps,
        max_seconds=args.max_seconds if args.max_seconds != float("inf") else 3600.0,
    )
    meta = train_and_validate(
        args.data, args.out, recipe, args.device, folds=args.folds, label=args.label
    )
    lines = [f"saved {args.out} (+ .json)", f"sha256 {meta['sha256']}"]
    cv = meta.get("cross_validation")
    if cv:
        oof = cv["out_of_fold"]
        lines.append(
            f"{len(cv['folds'])}-fold CV by patient: Dice {oof['dice_mean']:.4f} "
            f"(fold means {cv['fold_dice_mean']:.4f} +- {cv['fold_dice_sd']:.4f}), "
            f"worst film {oof['dice_min']:.4f}, sides right on {oof['sides_ok']}/{oof['films']}"
        )
        lines.append(f"quality gate: {meta['quality_gate']['out_of_fold_flagged']} flagged")
    return "\n".join(lines)
