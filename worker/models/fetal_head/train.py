"""Train the fetal head U-Net on real HC18 frames within a time budget (``medseg train
fetal-head``; the same command runs alone as ``python -m worker.models.fetal_head.train``).

The budget (``--max-seconds``) and the device choose the schedule (fetal_head.schedule): on a
2-core CPU the 2.0.0 recipe (160x240, the fixed train/tune split, 60 epochs, about an hour); on
a GPU 320x480, five subject-grouped folds of the subjects not held out, and their ensemble.
Each run is cv_train.fit_fold. Then, on the tuning folds (every frame scored by the run that did
not train on it), and never on the held-out subjects:

- flip test-time augmentation is kept when it lowers the pooled HC error;
- the ensemble's members are the fold models ranked by their own tuning fold's HC error
  (worker.models._nn.ensemble.pick_members; ``--max-members`` caps them);
- the quality gate's thresholds are fitted on those out-of-fold measurements (gate_fit).

The held-out subjects (a fixed 20 %, seed 0: frames.TEST) are scored once, at the end, with the
checkpoint as saved (``held_out_at_training`` in its metadata; ``medseg evaluate fetal-head
--subjects held-out`` measures them again through the service's predictor).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.core.commands import Progress
from worker.models._nn import checkpoint
from worker.models._nn.ensemble import ensemble_entry, pick_members
from worker.models._nn.folds import grouped_folds
from worker.models._nn.schedule import Schedule, check_input_size
from worker.models._nn.unet import UNet, UNetEnsemble, view_pixels
from worker.models.fetal_head.cv_train import (
    FoldResult,
    RunSettings,
    fit_fold,
    hc_errors,
    hc_score,
    small_probabilities,
)
from worker.models.fetal_head.evaluate import FrameRecord, summarise
from worker.models.fetal_head.frame_eval import measure_all
from worker.models.fetal_head.frames import TEST, TRAIN, TUNE, HC18Frames, load_frames, write_pack
from worker.models.fetal_head.gate import Thresholds
from worker.models.fetal_head.gate_fit import gate_entry
from worker.models.fetal_head.schedule import fetal_head_schedule, tuning_epochs

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.0.0"
HC18_CITATION = (
    "T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken. Automated "
    "measurement of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8): "
    "e0200412, 2018. doi:10.1371/journal.pone.0200412; data: Zenodo doi:10.5281/zenodo.1327317"
)


#: The share of the input's longer side the U-Net's view must span: the widest HC18 heads are
#: 71 % of the frame's width across (their mean diameter, HC/pi, at most 341 of 480 pixels). At
#: 320x480, 5 poolings (a view of 380 pixels) gave a tuning HC error of 1.60 mm where 4 (188
#: pixels) gave 1.77 (docs/fetal-head.md, 2026-12-07).
VIEW_SHARE = 0.75


@dataclass(frozen=True)
class Recipe:
    """What does not scale with the machine: the network's width, the optimiser, the split
    (``medseg train`` sets the depth from the input size: ``depth_for``)."""

    base: int = 16
    depth: int = 4
    learning_rate: float = 3e-3
    warmup: float = 0.03
    test_fraction: float = 0.2
    tune_fraction: float = 0.1
    seed: int = 0
    bf16: bool = True

    @property
    def split(self) -> tuple[float, float, int]:
        return self.test_fraction, self.tune_fraction, self.seed


def depth_for(size: tuple[int, int]) -> int:
    """The fewest poolings (at least 4, the 2.0.0 network) whose view spans VIEW_SHARE of the
    input's longer side: 4 at 160x240, 5 at 320x480."""
    depth = 4
    while view_pixels(depth) < VIEW_SHARE * max(size):
        depth += 1
    return depth


def folds_of(frames: HC18Frames, k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, tune) frame indices per run: the fixed split when ``k`` is 1, else ``k``
    subject-grouped folds of every frame not held out."""
    if k <= 1:
        return [(frames.where(TRAIN), frames.where(TUNE))]
    development = frames.where(TRAIN, TUNE)
    groups = grouped_folds([frames.subjects[i] for i in development], k, seed)
    runs = []
    for group in groups:
        tune = set(group)
        runs.append(
            (
                [i for j, i in enumerate(development) if j not in tune],
                [development[j] for j in group],
            )
        )
    return runs


def _model_config(recipe: Recipe, schedule: Schedule, members: int, flip: bool) -> dict[str, Any]:
    return {
        "arch": "unet-ensemble" if members > 1 else "unet",
        **({"members": members} if members > 1 else {}),
        "base": recipe.base,
        "depth": recipe.depth,
        "input_rows": schedule.plan.rows,
        "input_cols": schedule.plan.cols,
        "normalisation": "(x/255 - 0.25) / 0.25",
        "flip_tta": flip,
    }


def _fold_entry(result: FoldResult, frames: HC18Frames) -> dict[str, Any]:
    return {
        "fold": result.fold + 1,
        "train_frames": len(result.train),
        "tune_frames": len(result.tune),
        "tune_subjects": len({frames.subjects[i] for i in result.tune}),
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "tune_hc_mae_mm": round(result.score, 3),
        "tune_hc_mae_mm_flip": round(result.score_flip, 3),
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "history": result.history,
    }


def _seed_tuning(
    results: list[FoldResult], frames: HC18Frames, recipe: Recipe, device: str
) -> tuple[float, float, list[FrameRecord]]:
    """The seeds' ensemble on the tuning frames they share (``--seeds`` runs only on the fixed
    split): its HC error without and with flip TTA (each run's own score is not the
    ensemble's, which is what ships), and those frames measured (full size, gate signals)
    from the probabilities of the lower of the two."""
    tune = results[0].tune
    models = [r.model(recipe.base, recipe.depth) for r in results]
    ensemble = UNetEnsemble.of(models, recipe.base, recipe.depth).to(device)
    images, amp = frames.images[tune], results[0].amp
    probs = [small_probabilities(ensemble, images, device, amp, flip) for flip in (False, True)]
    plain, flipped = (hc_score(hc_errors(frames, tune, p)) for p in probs)
    return plain, flipped, measure_all(frames, tune, probs[int(flipped < plain)])


def _out_of_fold(
    results: list[FoldResult], frames: HC18Frames, recipe: Recipe, device: str, flip: bool
) -> list[FrameRecord]:
    """Every tuning frame measured (full size, gate signals) by the run that held it out."""
    records: list[FrameRecord] = []
    for r in results:
        model = r.model(recipe.base, recipe.depth).to(device)
        probs = small_probabilities(model, frames.images[r.tune], device, r.amp, flip)
        records.extend(measure_all(frames, r.tune, probs))
    return records


def score_held_out(
    weights: Path,
    frames: HC18Frames,
    members: list[UNet],
    device: str,
) -> dict[str, Any]:
    """The held-out subjects measured with the checkpoint as saved (fp16 weights read back,
    fp32 inference as served; the gate's fitted thresholds), and with each member alone."""
    test = frames.where(TEST)
    model, meta = checkpoint.load(weights, device)
    flip = bool(meta["config"]["flip_tta"])
    probs = small_probabilities(model, frames.images[test], device, False, flip)
    thresholds = Thresholds.from_metadata(meta.get("quality_gate"))
    summary = summarise(measure_all(frames, test, probs, thresholds))
    member_errors = []
    for member in members:
        small = small_probabilities(member.to(device), frames.images[test], device, False, flip)
        member_errors.append(round(hc_score(hc_errors(frames, test, small)), 3))
    return {
        **summary,
        "members_hc_abs_diff_mm_mean": member_errors,
        "note": "measured at training from the frames at the input size; the gate's skull echo "
        "check not judged (medseg evaluate fetal-head --subjects held-out judges it)",
        "weights_sha256": meta["sha256"],
    }


def train_fetal_head(
    frames: HC18Frames,
    out: Path,
    schedule: Schedule,
    device: str,
    *,
    recipe: Recipe | None = None,
    label: str = "",
    max_members: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every run of ``schedule``, the choices on the tuning folds, the checkpoint at ``out``
    (+ .json), the held-out subjects scored; returns the metadata."""
    recipe = recipe or Recipe()
    started = time.time()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    plan = schedule.plan
    # Each fold ``plan.seeds`` times, each run from its own seed (recipe.seed + run index).
    runs = [run for run in folds_of(frames, plan.folds, recipe.seed) for _ in range(plan.seeds)]
    results: list[FoldResult] = []
    for k, (train, tune) in enumerate(runs):
        settings = RunSettings(
            base=recipe.base,
            depth=recipe.depth,
            epochs=schedule.length,
            batch_size=plan.batch_size,
            learning_rate=recipe.learning_rate,
            warmup=recipe.warmup,
            max_seconds=schedule.run_seconds,
            seed=recipe.seed + k,
            bf16=recipe.bf16,
            tuning_epochs=tuning_epochs(schedule),
        )
        stage = f"run {k + 1}/{len(runs)}" if plan.seeds > 1 else f"fold {k + 1}/{len(runs)}"
        on_epoch = (lambda done, total, s=stage: progress(s, done, total)) if progress else None
        fold = k // plan.seeds
        result = fit_fold(frames, train, tune, settings, device, fold=fold, on_epoch=on_epoch)
        results.append(result)
    if plan.seeds > 1:
        # The seeds share one tuning set: members by their own error there, then flip TTA
        # by the error of their ensemble, which is what ships.
        scores = [r.score for r in results]
        chosen = pick_members(scores, max_members) if plan.ensemble else [int(np.argmin(scores))]
        plain, flipped, oof = _seed_tuning([results[i] for i in chosen], frames, recipe, device)
        flip = flipped < plain
    else:
        plain = hc_score(np.concatenate([r.diffs for r in results]))
        flipped = hc_score(np.concatenate([r.diffs_flip for r in results]))
        flip = flipped < plain
        errors = [r.score_flip if flip else r.score for r in results]
        chosen = (
            pick_members(errors, max_members) if plan.ensemble else [int(np.argmin(errors))]
        )  # fmt: skip
        oof = _out_of_fold(results, frames, recipe, device, flip)
    members = [results[i].model(recipe.base, recipe.depth) for i in chosen]
    gate = gate_entry(
        oof,
        "tuning frames, measured by the seeds' ensemble (no run trained on them)"
        if plan.seeds > 1
        else "tuning-fold frames, each measured by the run that did not train on it",
    )
    model: torch.nn.Module = (
        UNetEnsemble.of(members, recipe.base, recipe.depth) if len(members) > 1 else members[0]
    )
    metadata: dict[str, Any] = {
        "model": "fetal-head-unet",
        "version": MODEL_VERSION,
        "trained_on": label or f"HC18 training set ({frames.source}), real fetal head ultrasound",
        "citation": HC18_CITATION,
        "licence": "HC18 data CC BY 4.0; weights Apache-2.0 with the data's attribution",
        "split": frames.split_summary(),
        "schedule": schedule.as_dict(),
        "recipe": asdict(recipe),
        "folds": [
            {**_fold_entry(r, frames), "seed": recipe.seed + k} for k, r in enumerate(results)
        ],
        "tune_hc_mae_mm": round(flipped if flip else plain, 3),
        "out_of_fold": summarise(oof),
        "tta": {
            "flip_tta": flip,
            "tune_hc_mae_mm_plain": round(plain, 3),
            "tune_hc_mae_mm_flip": round(flipped, 3),
            "chosen_on": "the pooled tuning folds",
        },
        "ensemble": (
            ensemble_entry(chosen, "their own tuning fold's HC error", max_members)
            if plan.seeds == 1
            else ensemble_entry(
                chosen,
                "their HC error on the fixed split's tuning frames",
                max_members,
                runs=(f"runs of seeds {recipe.seed}-{recipe.seed + len(runs) - 1}", "run"),
            )
        )
        if plan.ensemble
        else None,
        "quality_gate": gate,
        "bf16": results[0].amp,
        "device": device,
        "machine": _machine(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata["train_seconds"] = round(time.time() - started, 1)
    config = _model_config(recipe, schedule, len(members), flip)
    metadata["sha256"] = checkpoint.save(model, config, metadata, out)
    if frames.where(TEST):
        held = score_held_out(out, frames, members, device)
        metadata = checkpoint.update_metadata(out, {"held_out_at_training": held})
        logger.info("held-out: HC abs diff %s", held["hc_abs_diff_mm"])
    return metadata


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs, no GPU"


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train fetal-head``: the recipe above within ``--max-seconds`` (default two
    hours); ``--epochs`` caps the schedule's epochs, ``--folds``/``--ensemble`` override it."""
    recipe = Recipe()
    development = _development_frames(args.data, recipe)
    schedule = fetal_head_schedule(
        args.device,
        args.max_seconds,
        development,
        folds=args.folds,
        ensemble=args.ensemble,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=args.input_size,
        seeds=args.seeds,
    )
    recipe = replace(recipe, depth=args.depth or depth_for(schedule.size))
    check_input_size(schedule.size, recipe.depth)
    logger.info("schedule: %s; U-Net of %d poolings", schedule.why, recipe.depth)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medseg" / "hc18"
    frames = load_frames(args.data, schedule.size, split=recipe.split, cache=cache)
    meta = train_fetal_head(
        frames,
        args.out,
        schedule,
        args.device,
        recipe=recipe,
        label=args.label,
        max_members=args.max_members,
        progress=progress,
    )
    lines = [
        f"saved {args.out} (+ .json)",
        f"sha256 {meta['sha256']}",
        f"schedule: {schedule.why}",
        f"tuning folds: HC mean abs difference {meta['tune_hc_mae_mm']:.2f} mm, "
        f"flip TTA {meta['tta']['flip_tta']}",
    ]
    held = meta.get("held_out_at_training")
    if held:
        hc = held["hc_abs_diff_mm"]
        lines.append(
            f"held-out subjects ({held['frames']} frames): HC mean abs difference "
            f"{hc['mean']:.2f} mm (p95 {hc['p95']:.2f}), Dice {held['dice']['mean']:.3f}"
        )
    lines.append(f"{meta['train_seconds'] / 60:.1f} min")
    return "\n".join(lines)


def _development_frames(data: Path, recipe: Recipe) -> int:
    """How many frames are not held out (what the schedule is sized on), without reading them."""
    from worker.models._nn import pack
    from worker.models.fetal_head.frames import MODEL, roles_of
    from worker.models.fetal_head.hc18 import read_index

    if pack.is_pack(data):
        _, arrays = pack.load(data, MODEL, keys=("roles",))
        roles = arrays["roles"]
    else:
        roles = roles_of(read_index(data), *recipe.split)
    return int(np.sum(roles != TEST))


def pack_command(args: argparse.Namespace) -> str:
    """``medseg pack fetal-head --data DIR --out FILE``: the frames at 320x480 and the
    sonographers' ellipses in one file (worker.models.fetal_head.frames)."""
    info = write_pack(args.data, args.out, split=Recipe().split)
    return (
        f"wrote {args.out}: {info['frames']} frames at {info['image_size'][0]}x"
        f"{info['image_size'][1]} ({info['image_bits']}-bit), {info['bytes'] / 1e6:.1f} MB; "
        f"{info['train_frames']} train, {info['tune_frames']} tune, {info['test_frames']} "
        f"held-out frames ({len(info['test_subjects'])} subjects)"
    )


def main(argv: list[str] | None = None) -> int:
    from worker.models._nn.train_args import run_train

    return run_train(command, argv, "medseg train fetal-head, without the rest of medseg")


if __name__ == "__main__":
    raise SystemExit(main())
