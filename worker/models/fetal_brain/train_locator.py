"""Train the coarse 3D localiser (``locator.py``) on whole synthetic stacks (``synth.py``)
under a time budget, validating on stacks of held-out atlases and, reported only, on real
stacks (a ``train_synth --pack-real`` pack).

    python -m worker.models.fetal_brain.train_locator --bank atlas.npz --out locator.pt \\
        --max-seconds 3600 [--real real.npz] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.models._nn import checkpoint
from worker.models._nn.layout import placed
from worker.models._nn.metrics import dice
from worker.models._nn.train import loss_fn
from worker.models.fetal_brain.atlas import LabelBank, load_bank
from worker.models.fetal_brain.locator import COARSE, Locator3d, coarse, logits, region_probability
from worker.models.fetal_brain.synth import BrainBank, SynthConfig, synthesise
from worker.models.fetal_brain.train_synth import (
    VALIDATION_ATLASES,
    RealStack,
    load_real,
    lr_at,
)

logger = logging.getLogger(__name__)


def locator_synth(oversample: int = 1) -> SynthConfig:
    """Whole stacks of fields of 200-420 mm synthesised at ``oversample`` times the localiser's
    64 pixels (then area-averaged to 64, as a real stack is); the brain anywhere through the
    middle of the stack, look-alikes and the head against the placenta in half of them."""
    return SynthConfig(
        rows=COARSE * oversample,
        cols=COARSE * oversample,
        slices=(12, 28),
        pixel_mm=(200.0 / COARSE / oversample, 420.0 / COARSE / oversample),
        depth_spread=0.3,
        t2_like_fraction=0.75,
        mimic_fraction=0.5,
        placenta_near_fraction=0.5,
        planned_fraction=0.75,
    )


@dataclass
class LocatorTrainConfig:
    max_seconds: float = 3600.0
    stacks_per_step: int = 2
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.03
    base: int = 8
    seed: int = 0
    validate_every_s: float = 600.0
    validation_stacks: int = 6
    # Each synthesised batch serves ``reuse`` steps (transposed and flipped after the first):
    # synthesis costs more than the network's step on a CPU.
    reuse: int = 2
    synth: SynthConfig = field(default_factory=locator_synth)


def _pooled(bank: BrainBank, gen: torch.Generator, count: int, synth: SynthConfig,
            ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Coarse images and brain fractions (S, n, 64, 64) of fresh synthetic stacks."""
    batch = synthesise(bank, gen, count, synth, atlas_ids=ids)
    return coarse(batch.images), coarse(batch.brain)


class Validator:
    def __init__(self, bank: BrainBank, config: LocatorTrainConfig, real: list[RealStack]):
        gen = torch.Generator(device=bank.device).manual_seed(20_000 + config.seed)
        self.synthetic = [
            _pooled(bank, gen, 1, config.synth, torch.tensor([i % len(bank)]))
            for i in range(config.validation_stacks)
        ]
        self.real = real

    @torch.no_grad()
    def score(self, model: Locator3d) -> dict[str, Any]:
        from worker.models.fetal_brain.predict import clean_volume, normalise_stack

        model.eval()
        synth = [
            dice(torch.sigmoid(logits(model, x))[0].numpy() >= 0.5, y[0].numpy() >= 0.5)
            for x, y in self.synthetic
        ]
        real: dict[str, dict[str, float]] = {}
        for name, image, truth, spacing in self.real:
            prob = region_probability(model, normalise_stack(image))
            mask = clean_volume(prob)
            voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000
            real[name] = {
                "dice": round(dice(mask, truth), 4),
                "volume_ml": round(float(mask.sum()) * voxel_ml, 1),
                # How much of the brain a region of p >= 0.2 keeps, and how much of that
                # region lies beyond the brain (what the first stage may no longer mark).
                "kept": round(float((truth & (prob >= 0.2)).sum() / max(truth.sum(), 1)), 4),
                "beyond": round(float(((prob >= 0.2) & ~truth).sum() / max(truth.sum(), 1)), 4),
            }
        model.train()
        out: dict[str, Any] = {"synthetic_dice": round(float(np.mean(synth)), 4)}
        if real:
            out["real"] = real
            out["real_dice"] = round(float(np.mean([r["dice"] for r in real.values()])), 4)
        return out


def save(model: Locator3d, metadata: dict[str, Any], out: Path) -> str:
    """fp16 weights and ``out.json`` with the sha256, as every checkpoint is saved."""
    config = {"arch": "locator3d", "base": model.base, "coarse": COARSE}
    return checkpoint.save(model, config, metadata, out)


def train(
    bank: LabelBank, out: Path, config: LocatorTrainConfig, device: str,
    real: list[RealStack] | None = None,
) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(config.seed)
    held_out = [n for n in VALIDATION_ATLASES if n in bank.names] or [bank.names[-1]]
    train_bank = BrainBank(bank.without(held_out), device)
    validator = Validator(BrainBank(bank.select(held_out), device), config, real or [])
    model = placed(Locator3d(config.base), device, volumetric=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    steps = stacks = 0
    losses: list[float] = []
    x = y = torch.empty(0)
    started = last = time.time()
    while True:
        elapsed = time.time() - started
        finished = elapsed >= config.max_seconds
        if finished or time.time() - last >= config.validate_every_s:
            entry = {"step": steps, "seconds": round(elapsed, 1), "stacks": stacks,
                     "loss": round(float(np.mean(losses)) if losses else float("nan"), 4),
                     **validator.score(model)}  # fmt: skip
            history.append(entry)
            logger.info("validation %s", json.dumps(entry))
            save(model, {"validation": entry}, out.with_name(f"{out.stem}.step{steps}.pt"))
            losses, last = [], time.time()
        if finished:
            break
        for group in optimiser.param_groups:
            group["lr"] = lr_at(
                elapsed / config.max_seconds, config.learning_rate, config.warmup_fraction
            )
        if steps % config.reuse == 0:
            x, y = _pooled(train_bank, gen, config.stacks_per_step, config.synth)
        else:
            x, y = x.transpose(-1, -2).flip(-1), y.transpose(-1, -2).flip(-1)
        loss = loss_fn(logits(model, x), y)  # per stack: its (n, h, w) are dims 1-3
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))
        steps += 1
        stacks += len(x)
        if steps % 50 == 0:
            logger.info("step %d, %d stacks, %.0f s, loss %.4f", steps, stacks, elapsed,
                        float(np.mean(losses[-50:])))  # fmt: skip
    best = max(history, key=lambda h: float(h["synthetic_dice"]))
    meta = {
        "model": "fetal-brain-locator",
        "trained_on": f"synthetic stacks from {len(train_bank)} atlases",
        "validated_on": f"synthetic stacks from held-out atlases {', '.join(held_out)}",
        "history": history,
        "last": history[-1],
        "best_synthetic": best,
        "steps": steps,
        "stacks": stacks,
        "device": device,
        "torch": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    meta["sha256"] = save(model, meta, out)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--validate-every-s", type=float, default=600.0)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--stacks-per-step", type=int, default=2)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--oversample", type=int, default=1, help="synthesis pixels per coarse")
    parser.add_argument("--reuse", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = LocatorTrainConfig(
        max_seconds=args.max_seconds,
        validate_every_s=args.validate_every_s,
        learning_rate=args.learning_rate,
        stacks_per_step=args.stacks_per_step,
        base=args.base,
        seed=args.seed,
        reuse=args.reuse,
        synth=locator_synth(args.oversample),
    )
    real = load_real(args.real) if args.real else None
    meta = train(load_bank(args.bank), args.out, config, args.device, real)
    logger.info("saved %s sha256 %s", args.out, meta["sha256"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
