"""Train the lung-field U-Net on real chest films, chosen and reported by patient-grouped
cross-validation (``medseg train lung-cxr --data DIR``; the same command runs alone as
``python -m worker.models.lung_cxr.recipe``). ``--data`` is a folder or its pack
(``medseg pack lung-cxr``).

The budget (``--max-seconds``) and the device choose the schedule (lung_cxr.schedule): on a
CPU, five folds of 3,000 steps whose ensemble is the shipped model (2.1.0; with under about
2.5 h, five short folds then a model trained on every film, the 2.0.0 recipe); on a GPU,
five folds at 256x256 whose ensemble is the shipped model, its members the fold models ranked
by their own fold's Dice (worker.models._nn.ensemble.pick_members). Either way the quality
gate is fitted on the out-of-fold films (each scored by the fold model that never saw its
patient), and every film's out-of-fold score is in the checkpoint's metadata. Runs:
lung_cxr.cv_train.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from worker.core.commands import Progress
from worker.models._nn import checkpoint, pack
from worker.models._nn.ensemble import ensemble_entry, pick_members
from worker.models._nn.schedule import Schedule
from worker.models._nn.unet import UNet, UNetEnsemble
from worker.models.lung_cxr.cv_train import (
    PHANTOM_WEIGHTS,
    CxrRecipe,
    cross_validate,
    model_config,
    train_run,
)
from worker.models.lung_cxr.field_eval import FilmRecord
from worker.models.lung_cxr.films import Film, FilmArrays, load_films, read_films
from worker.models.lung_cxr.schedule import lung_cxr_schedule

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.1.0"


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
    run = train_run(
        arrays.net_images[use],
        arrays.net_masks[use],
        recipe,
        device,
        phantom_weights=phantom_weights,
        desc="final",
    )
    metadata = {
        **_identity(label, films, device),
        "train_images": len(use),
        "train_patients": len({films[i].patient for i in use}),
        "recipe": asdict(recipe),
        "epochs": len(run.history),
        "history": run.history[-5:],
        "images_per_second": run.images_per_second,
        "bf16": run.amp,
        "train_seconds": round(time.time() - started, 1),
        **extra,
    }
    metadata["sha256"] = checkpoint.save(run.model, model_config(recipe), metadata, out)
    return metadata


def _identity(label: str, films: list[Film], device: str) -> dict[str, Any]:
    machine = (
        torch.cuda.get_device_name(device)
        if device.startswith("cuda") and torch.cuda.is_available()
        else "no GPU"
    )
    return {
        "model": "lung-cxr",
        "version": MODEL_VERSION,
        "trained_on": label,
        "qc_excluded": {f.name: f.qc for f in films if f.qc},
        "device": device,
        "machine": f"{machine}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_ensemble(
    films: list[Film],
    fold_weights: list[Path],
    cv: dict[str, Any],
    recipe: CxrRecipe,
    out: Path,
    *,
    device: str,
    label: str,
    extra: dict[str, Any],
    max_members: int | None = None,
) -> dict[str, Any]:
    """The shipped model: the fold models ranked by their fold's Dice (QC-passed films where
    the fold has any that failed), the chosen ones as one ensemble checkpoint."""
    scores = [f.get("qc_passed", f)["dice_mean"] for f in cv["folds"]]
    chosen = pick_members([1.0 - s for s in scores], max_members)
    members = []
    for k in chosen:
        model, _ = checkpoint.load(fold_weights[k], "cpu")
        assert isinstance(model, UNet)
        members.append(model)
    model = UNetEnsemble.of(members, recipe.base, recipe.depth) if len(members) > 1 else members[0]
    config = model_config(recipe)
    if len(members) > 1:
        config = {**config, "arch": "unet-ensemble", "members": len(members)}
    metadata = {
        **_identity(label, films, device),
        "recipe": asdict(recipe),
        "ensemble": ensemble_entry(chosen, "their own fold's Dice", max_members, error="1 - Dice"),
        **extra,
    }
    metadata["sha256"] = checkpoint.save(model, config, metadata, out)
    return metadata


def load(data: Path, recipe: CxrRecipe) -> tuple[list[Film], FilmArrays]:
    """The films of a folder or a pack, at the recipe's input size."""
    size = (recipe.rows, recipe.cols)
    if pack.is_pack(data):
        from worker.models.lung_cxr.pack import read_pack

        return read_pack(data, size)
    films = read_films(data)
    return films, load_films(films, size)


def records_of(cv: dict[str, Any]) -> list[FilmRecord]:
    return [FilmRecord(**r) for r in cv["records"]]


def train_and_validate(
    data: Path,
    out: Path,
    recipe: CxrRecipe,
    device: str,
    *,
    folds: int = 5,
    ensemble: bool = False,
    max_members: int | None = None,
    label: str = "",
    schedule: Schedule | None = None,
    phantom_weights: Path = PHANTOM_WEIGHTS,
    fold_dir: Path | None = None,
    fold_jobs: int = 1,
) -> dict[str, Any]:
    """Cross-validate (``folds`` > 1), fit the quality gate on the out-of-fold films, then
    ship the fold models' ensemble (``ensemble``) or a model trained on every film; its
    metadata carries all of it. ``fold_dir``: keep the fold checkpoints there and reuse the
    ones a run of the same recipe left (cv_train.cross_validate); ``fold_jobs``: folds
    trained at once."""
    from worker.models.lung_cxr.gate_fit import out_of_fold_signals

    started = time.time()
    films, arrays = load(data, recipe)
    extra: dict[str, Any] = {
        "data": {
            "folder": data.name,
            "films": len(films),
            "patients": len({f.patient for f in films}),
            "projections": {p: sum(f.projection == p for f in films) for p in ("pa", "ap", "")},
        }
    }
    if schedule is not None:
        extra["schedule"] = schedule.as_dict()
    label = label or f"{data.name}: real chest films with lung-field masks"
    if folds <= 1:
        return train_final(films, arrays, recipe, out, device, label=label, extra=extra,
                           phantom_weights=phantom_weights)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        keep = fold_dir or Path(tmp)
        cv = cross_validate(
            films, arrays, recipe, device, folds=folds, keep=keep, reuse=fold_dir is not None,
            parallel=fold_jobs, phantom_weights=phantom_weights,
        )  # fmt: skip
        fold_weights = [keep / f"fold{k}.pt" for k in range(folds)]
        oof = out_of_fold_signals(films, arrays, fold_weights, device)
        extra["cross_validation"] = cv
        extra["quality_gate"] = fit_gate(films, cv, oof)
        if ensemble:
            save_ensemble(films, fold_weights, cv, recipe, out, device=device, label=label,
                          extra=extra, max_members=max_members)  # fmt: skip
            return checkpoint.update_metadata(
                out, {"train_seconds": round(time.time() - started, 1)}
            )
    return train_final(films, arrays, recipe, out, device, label=label, extra=extra,
                       phantom_weights=phantom_weights)  # fmt: skip


def fit_gate(films: list[Film], cv: dict[str, Any], oof: list[Any]) -> dict[str, Any]:
    """The gate from the out-of-fold signals (``oof``, in film order) of the films whose
    masks passed QC, each with its out-of-fold Dice."""
    from worker.models.lung_cxr.gate_fit import gate_entry

    dice = {r.name: r.dice for r in records_of(cv)}
    trusted = [i for i, film in enumerate(films) if not film.qc and film.name in dice]
    return gate_entry([oof[i] for i in trusted], [dice[films[i].name] for i in trusted])


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train lung-cxr --data DIR``: the recipe above within ``--max-seconds``;
    ``--folds`` (0: none), ``--ensemble``, ``--steps`` (a cap), ``--batch-size`` override the
    schedule; ``--init phantom|scratch``; ``--phantom-films N`` mixes N phantoms into every
    run's training films."""
    del progress  # each run logs its own progress lines
    schedule = lung_cxr_schedule(
        args.device,
        args.max_seconds,
        folds=args.folds,
        ensemble=args.ensemble,
        max_steps=args.steps,
        batch_size=args.batch_size,
        input_size=args.input_size,
    )
    logger.info("schedule: %s", schedule.why)
    plan = schedule.plan
    recipe = replace(
        CxrRecipe(init=args.init or "phantom", phantom_films=args.phantom_films),
        rows=plan.rows,
        cols=plan.cols,
        batch_size=plan.batch_size,
        steps=schedule.length,
        max_seconds=schedule.run_seconds,
    )
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    meta = train_and_validate(
        args.data,
        args.out,
        recipe,
        args.device,
        folds=plan.folds,
        ensemble=plan.ensemble,
        max_members=args.max_members,
        label=args.label,
        schedule=schedule,
        fold_dir=args.fold_dir,
        fold_jobs=args.fold_jobs,
    )
    lines = [f"saved {args.out} (+ .json)", f"sha256 {meta['sha256']}", schedule.why]
    cv = meta.get("cross_validation")
    if cv:
        oof = cv["out_of_fold"]
        lines.append(
            f"{len(cv['folds'])}-fold CV by patient: Dice {oof['dice_mean']:.4f} "
            f"(fold means {cv['fold_dice_mean']:.4f} +- {cv['fold_dice_sd']:.4f}), "
            f"worst film {oof['dice_min']:.4f}, sides right on {oof['sides_ok']}/{oof['films']}"
        )
        lines.append(f"quality gate: {meta['quality_gate']['out_of_fold_flagged']} flagged")
    if meta.get("ensemble"):
        lines.append(f"shipped: the ensemble of folds {meta['ensemble']['members']}")
    return "\n".join(lines)


def pack_command(args: argparse.Namespace) -> str:
    """``medseg pack lung-cxr --data DIR --out FILE``: films, masks, patients and QC verdicts
    in one file (worker.models.lung_cxr.pack)."""
    from worker.models.lung_cxr.pack import write_pack

    info = write_pack(args.data, args.out)
    return (
        f"wrote {args.out}: {info['films']} films of {info['patients']} patients "
        f"({info['qc_excluded']} failing annotation QC), {info['bytes'] / 1e6:.1f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    from worker.models._nn.train_args import run_train

    return run_train(command, argv, "medseg train lung-cxr, without the rest of medseg")


if __name__ == "__main__":
    raise SystemExit(main())
