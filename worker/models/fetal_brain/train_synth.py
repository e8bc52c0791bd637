"""Train the fetal brain U-Net on stacks synthesised from brain label maps (``synth.py``), made
fresh for every step on the training device, under a time budget.

Held-out label maps (whole atlases, so whole ages) are resliced into synthetic stacks for
validation; the best step by their per-stack Dice (after the service's 3D clean-up) is kept.
Optional real stacks (``--real``, a pack written by ``--pack-real``) are scored at every
validation too, through the service's own preprocessing, and reported, never trained on.

Runs with torch, numpy, scipy and OpenCV alone, so it travels to a bare GPU machine:

    python -m worker.models.fetal_brain.train_synth --bank atlas.npz --out brain.pt \\
        --max-seconds 300 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from worker.models._nn import checkpoint
from worker.models._nn.hardware import bf16_native, unsupported_bf16_reason
from worker.models._nn.layout import in_layout, memory_format, placed
from worker.models._nn.metrics import dice
from worker.models._nn.train import loss_fn, normalise
from worker.models._nn.unet import UNet
from worker.models.fetal_brain.atlas import LabelBank, load_bank
from worker.models.fetal_brain.context import widen_first_layer, with_context
from worker.models.fetal_brain.synth import BrainBank, SynthConfig, synthesise
from worker.models.fetal_brain.textures import TextureBank, load_textures, pack_textures

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.0.0"
# Whole atlases (ages) kept out of training for validation: one early, one mid, one late.
VALIDATION_ATLASES = (
    "fetal_SB_atlas_GA23_notoperated",
    "fetal_SB_atlas_GA28_operated",
    "fetal_SB_atlas_GA32_operated",
)


@dataclass
class SynthTrainConfig:
    max_seconds: float = 300.0
    batch_size: int = 64
    stacks_per_step: int = 4
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.03
    base: int = 16
    depth: int = 4
    seed: int = 0
    validate_every_s: float = 60.0
    validation_stacks: int = 24
    # Each synthesised batch serves ``reuse`` steps (flipped and transposed after the first).
    reuse: int = 1
    # Share of each batch taken from phantom slices (``phantoms.py``), when a pool is given.
    phantom_fraction: float = 0.0
    synth: SynthConfig = field(default_factory=SynthConfig)
    validation_synth: SynthConfig = field(default_factory=SynthConfig)
    # A second stage (``refine_config``): trained on brain-centred windows of this size, and
    # scored on the real stacks in such a window around the manual mask's centre.
    window_mm: float | None = None
    # > 0: validate and keep an exponential moving average of the weights (decay per step)
    # instead of the raw weights; averaging along the trajectory finds flatter minima, which
    # transfer better to an unseen domain (SWAD, Cha et al. 2021), here synthetic to real.
    ema_decay: float = 0.0
    # The average starts at this share of the budget: weights far apart early in training do
    # not average into a working network (SWAD averages after a warm-up too); until then the
    # raw weights are validated.
    ema_start: float = 0.25
    # bf16 autocast where the device computes in bf16 natively (hardware.bf16_native: a CUDA
    # GPU of compute capability 8.0+, or a CPU with AMX/AVX512-BF16); fp32 elsewhere.
    bf16: bool = True
    # > 0: each slice goes in with this many neighbours on either side as further channels
    # (``context.py``), so the network sees what goes on through the plane.
    context: int = 0

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1


def cpu_config(max_seconds: float) -> SynthTrainConfig:
    """The 2-core CPU recipe: 128-pixel training patches of the same pixel size (the network
    is fully convolutional and serves whole 256-pixel slices) placed over the whole field
    (40 % of them away from the brain: maternal tissue, the body's edge, air), a narrower
    U-Net, fewer slices per stack, each batch used twice, T2-like contrasts three times in
    four (the stacks it serves are T2 single-shot)."""
    return _two_core(
        max_seconds,
        synth=SynthConfig(
            rows=128,
            cols=128,
            slices=(6, 10),
            off_centre_fraction=0.4,
            off_centre_spread=3.0,
            t2_like_fraction=0.75,
        ),
        validation_synth=SynthConfig(slices=(12, 20)),
    )


def refine_config(max_seconds: float) -> SynthTrainConfig:
    """The second stage (``predict.PostProcess.refine``): 128-pixel windows of 1.1-1.4 mm
    pixels (served on 160 mm windows, 1.25 mm) with the brain near their centre (within
    about 12 mm), so the network learns the brain's edge against what lies next to it (the
    skull, fluid, placenta, the fetal body) rather than where in a whole field a brain is;
    the brain centre anywhere through the middle 90 % of the stack, so that many slices lie
    beyond its ends (the clinical stacks run from the face or neck to the placenta); a fetal
    face in 60 % of the stacks (measured 2026-12-07: fewer false positives at every reach,
    docs/fetal-brain.md)."""
    window = SynthConfig(
        rows=128,
        cols=128,
        slices=(6, 10),
        pixel_mm=(1.1, 1.4),
        centre_spread=0.15,
        depth_spread=0.35,  # slices beyond the brain's ends: face, neck, placenta
        t2_like_fraction=0.75,
        mimic_fraction=0.5,
        placenta_near_fraction=0.5,
        face_fraction=0.6,
    )
    return _two_core(
        max_seconds,
        synth=window,
        validation_synth=replace(window, slices=(12, 20)),
        window_mm=160.0,
    )


def refine_gpu_config(max_seconds: float) -> SynthTrainConfig:
    """The second stage on a GPU: the refine recipe's windows at the GPU recipe's batch and
    width (64 windows from 8 fresh stacks a step, base 16), validated every minute."""
    cpu = refine_config(max_seconds)
    return replace(
        cpu,
        batch_size=64,
        stacks_per_step=8,
        base=16,
        learning_rate=2e-3,
        validate_every_s=60.0,
        validation_stacks=12,
        reuse=1,
    )


def _two_core(
    max_seconds: float,
    *,
    synth: SynthConfig,
    validation_synth: SynthConfig,
    window_mm: float | None = None,
) -> SynthTrainConfig:
    """What both 2-core CPU stages share: a narrower U-Net (base 8) at a learning rate of 1e-3,
    24-slice batches of three stacks, each used twice, six validation stacks every ten minutes."""
    return SynthTrainConfig(
        max_seconds=max_seconds,
        batch_size=24,
        stacks_per_step=3,
        learning_rate=1e-3,
        base=8,
        validate_every_s=600.0,
        validation_stacks=6,
        reuse=2,
        synth=synth,
        validation_synth=validation_synth,
        window_mm=window_mm,
    )


RealStack = tuple[str, npt.NDArray[np.float32], npt.NDArray[np.bool_], tuple[float, float, float]]


def pack_real(folder: Path, out: Path) -> None:
    """NAME_image/NAME_mask NIfTI pairs as one .npz (for a machine without nibabel)."""
    from worker.models.fetal_brain.data import nifti_pairs

    arrays: dict[str, Any] = {}
    for name, image, mask, spacing in nifti_pairs(folder):
        arrays[f"{name}__image"] = np.asarray(image, dtype=np.float32)
        arrays[f"{name}__mask"] = mask
        arrays[f"{name}__spacing"] = np.array(spacing, dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


def pack_phantoms(seeds: range, out: Path, workers: int = 2) -> None:
    """Phantom slices (``phantoms.py``) at the network's input size as one .npz for
    ``--phantoms``: uint8 images and soft 0-255 masks, **intracranial** as the atlas is (the
    outline the synthesis teaches; ``convention.py``)."""
    from worker.models.fetal_brain.convention import INTRACRANIAL
    from worker.models.fetal_brain.train import phantom_set

    images, masks = phantom_set(seeds, workers, INTRACRANIAL)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, masks=masks)


def load_real(path: Path) -> list[RealStack]:
    with np.load(path) as pack:
        names = sorted({k.split("__")[0] for k in pack.files})
        return [
            (
                n,
                pack[f"{n}__image"],
                pack[f"{n}__mask"].astype(bool),
                (
                    float(pack[f"{n}__spacing"][0]),
                    float(pack[f"{n}__spacing"][1]),
                    float(pack[f"{n}__spacing"][2]),
                ),
            )
            for n in names
        ]


def precision_reason(config: SynthTrainConfig, device: str) -> str:
    """Why a run trains in fp32, in words for its log."""
    return "--fp32" if not config.bf16 else unsupported_bf16_reason(device)


def lr_at(fraction: float, peak: float, warmup: float) -> float:
    """Linear warm-up over the ``warmup`` share of the time budget, then cosine decay from
    ``peak`` to zero at its end (``fraction``: the share of the budget spent)."""
    if fraction < warmup:
        return peak * fraction / warmup
    done = (fraction - warmup) / (1 - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


@torch.no_grad()
def _probabilities(model: UNet, slices: torch.Tensor, amp: bool, context: int = 0) -> torch.Tensor:
    """Sigmoid outputs for (n, rows, cols) slices in [0, 1] (with ``context`` neighbours)."""
    out = []
    inputs = with_context(slices, context)
    for start in range(0, len(slices), 32):
        x = normalise(inputs[start : start + 32].float())
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(torch.sigmoid(model(x).float())[:, 0])
    return torch.cat(out)


class Validator:
    """Fixed synthetic stacks from the held-out label maps, and optional real stacks."""

    def __init__(
        self, bank: BrainBank, config: SynthTrainConfig, real: list[RealStack], amp: bool
    ) -> None:
        gen = torch.Generator(device=bank.device).manual_seed(10_000 + config.seed)
        self.synthetic = []
        for i in range(config.validation_stacks):
            ids = torch.tensor([i % len(bank)], device=bank.device)
            batch = synthesise(bank, gen, 1, config.validation_synth, atlas_ids=ids)
            self.synthetic.append((batch.images[0], batch.brain[0].cpu().numpy() >= 0.5))
        self.real = real
        self.amp = amp
        self.size = (config.validation_synth.rows, config.validation_synth.cols)
        self.window_mm = config.window_mm
        self.context = config.context

    def score(self, model: UNet) -> dict[str, Any]:
        from worker.models.fetal_brain.predict import clean_volume

        model.eval()
        synth = []
        for images, truth in self.synthetic:
            prob = _probabilities(model, images, self.amp, self.context).cpu().numpy()
            synth.append(dice(clean_volume(prob), truth))
        real = {n: self._score_real(model, i, t, sp) for n, i, t, sp in self.real}
        model.train()
        out: dict[str, Any] = {
            "synthetic_dice": round(float(np.mean(synth)), 4),
            "synthetic_dice_min": round(float(np.min(synth)), 4),
        }
        if real:
            out["real"] = real
            out["real_dice"] = round(float(np.mean([r["dice"] for r in real.values()])), 4)
        return out

    def _score_real(
        self,
        model: UNet,
        image: npt.NDArray[np.float32],
        truth: npt.NDArray[np.bool_],
        spacing: tuple[float, float, float],
    ) -> dict[str, float]:
        """Through the service's preprocessing; a second stage on a window around the manual
        mask's centre (the first stage's localisation is scored when the two are served)."""
        from worker.models._nn.predictor import full_size, preprocess
        from worker.models.fetal_brain.predict import (
            clean_volume,
            normalise_stack,
            window_probabilities,
        )

        device = next(model.parameters()).device

        def predict(stack: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            inputs = np.stack([preprocess(s, self.size) for s in stack])
            inputs = with_context(inputs, self.context)
            x = torch.from_numpy(inputs).to(device, memory_format=memory_format(device))
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=self.amp):
                small = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
            return np.stack([full_size(p, stack.shape[1:]) for p in small])

        stack = normalise_stack(image)
        if self.window_mm is None:
            prob = predict(stack)
        else:
            centre = np.argwhere(truth).mean(0)[1:]
            prob = window_probabilities(
                predict,
                stack,
                (float(centre[0]), float(centre[1])),
                (spacing[0], spacing[1]),  # (row, column, slice) mm, as nifti_pairs gives
                self.window_mm,
            )
        mask = clean_volume(prob)
        voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000
        return {
            "dice": round(dice(mask, truth), 4),
            "volume_ml": round(float(mask.sum()) * voxel_ml, 1),
            "truth_ml": round(float(truth.sum()) * voxel_ml, 1),
        }


def _model_config(config: SynthTrainConfig) -> dict[str, Any]:
    channels = {"in_channels": config.in_channels} if config.context else {}
    return {
        **channels,
        "arch": "unet",
        "base": config.base,
        "depth": config.depth,
        "input_rows": config.validation_synth.rows,  # served on whole slices
        "input_cols": config.validation_synth.cols,
        "normalisation": "(x/255 - 0.25) / 0.25",
    }


def _step(
    model: UNet, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool
) -> float:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(in_layout(normalise(x), memory_format(x.device)))
    loss = loss_fn(logits.float(), y)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimiser.step()
    return float(loss.detach())


class PhantomPool:
    """Phantom slices (``phantoms.py``, at the network's 256 pixels) on the device, mixed
    into training batches as random crops of the batch's size."""

    def __init__(self, path: Path, device: str) -> None:
        with np.load(path) as pack:
            self.images = torch.from_numpy(pack["images"]).to(device)
            self.masks = torch.from_numpy(pack["masks"]).to(device)

    def mix(
        self, x: torch.Tensor, y: torch.Tensor, fraction: float, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count = round(len(x) * fraction)
        if count == 0:
            return x, y
        rows, cols = x.shape[-2:]
        dev = gen.device
        idx = torch.randint(0, len(self.images), (count,), generator=gen, device=dev)
        top = int(
            torch.randint(0, self.images.shape[1] - rows + 1, (1,), generator=gen, device=dev)
        )
        left = int(
            torch.randint(0, self.images.shape[2] - cols + 1, (1,), generator=gen, device=dev)
        )
        crop = (slice(None), slice(top, top + rows), slice(left, left + cols))
        # A phantom is one slice: it stands in for its own neighbours (a still fetus).
        px = self.images[idx][crop].float()[:, None].expand(-1, x.shape[1], -1, -1) / 255
        py = self.masks[idx][crop].float()[:, None] / 255
        return torch.cat([px, x[count:]]), torch.cat([py, y[count:]])


class _Batches:
    """Training batches: slices of fresh synthetic stacks (each set used ``reuse`` times,
    flipped and transposed after the first), with phantom slices mixed in."""

    def __init__(
        self,
        bank: BrainBank,
        config: SynthTrainConfig,
        gen: torch.Generator,
        phantoms: PhantomPool | None,
        textures: TextureBank | None = None,
    ) -> None:
        self.bank, self.config, self.gen, self.phantoms = bank, config, gen, phantoms
        self.textures = textures
        self.x = self.y = torch.empty(0)

    def next(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        config, gen = self.config, self.gen
        if step % config.reuse == 0:
            batch = synthesise(
                self.bank, gen, config.stacks_per_step, config.synth, textures=self.textures
            )
            # (stacks, slices, ...) to (stacks x slices, channels, ...): each slice with its
            # neighbours in its own stack.
            images = with_context(batch.images, config.context)
            self.x = images.reshape(-1, config.in_channels, *batch.images.shape[2:])
            self.y = batch.brain.reshape(-1, 1, *batch.brain.shape[2:])
        else:
            self.x = self.x.flip(-1).transpose(-1, -2)
            self.y = self.y.flip(-1).transpose(-1, -2)
        pick = torch.randperm(len(self.x), generator=gen, device=gen.device)[: config.batch_size]
        x, y = self.x[pick], self.y[pick]
        if self.phantoms is not None and config.phantom_fraction > 0:
            x, y = self.phantoms.mix(x, y, config.phantom_fraction, gen)
        return x, y


class _Record:
    """Validation history and the best state so far (also saved beside ``out`` as
    ``NAME.best.pt``, so a long run can be looked at before it ends)."""

    def __init__(self, out: Path, model_config: dict[str, Any], keep_all: bool = False) -> None:
        self.interim = out.with_name(out.stem + ".best" + out.suffix)
        self.keep_all = keep_all  # also NAME.stepN.pt at every validation
        self.model_config = model_config
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, torch.Tensor] = {}

    def validation(self, model: UNet, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        logger.info("validation %s", json.dumps(entry))
        if self.keep_all:
            step_file = self.interim.with_name(f"{self.interim.stem[:-5]}.step{entry['step']}.pt")
            checkpoint.save(model, self.model_config, {"validation": entry}, step_file)
        if entry["synthetic_dice"] > self.best.get("synthetic_dice", -1.0):
            self.best = entry
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            checkpoint.save(model, self.model_config, {"best": entry}, self.interim)


def train(
    bank: LabelBank,
    out: Path,
    config: SynthTrainConfig,
    device: str,
    *,
    real: list[RealStack] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    init: dict[str, torch.Tensor] | None = None,
    phantoms: PhantomPool | None = None,
    keep_all: bool = False,
    textures: TextureBank | None = None,
) -> dict[str, Any]:
    """Train under ``config.max_seconds``; save the best checkpoint by held-out synthetic Dice.
    ``init``: start from these weights (a second stage); ``phantoms``: slices mixed into each
    batch at ``config.phantom_fraction``; ``textures``: real anatomy for the synthesis
    (``textures.py``) at ``config.synth``'s texture fractions."""
    torch.manual_seed(config.seed)
    started = time.time()
    held_out = [n for n in VALIDATION_ATLASES if n in bank.names]
    if not held_out or len(held_out) == len(bank.names):
        held_out = [bank.names[-1]]
    train_bank = BrainBank(bank.without(held_out), device)
    amp = config.bf16 and bf16_native(device)
    logger.info("bf16 autocast: %s", "on" if amp else f"off ({precision_reason(config, device)})")
    validator = Validator(BrainBank(bank.select(held_out), device), config, real or [], amp)
    model = placed(UNet(config.in_channels, base=config.base, depth=config.depth), device)
    if init is not None:
        model.load_state_dict(widen_first_layer(init, model.state_dict()))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    kept = _Kept(model, config)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    torch.backends.cudnn.benchmark = True
    record = _Record(out, _model_config(config), keep_all)
    batches = _Batches(train_bank, config, gen, phantoms, textures)
    steps = images_seen = 0
    losses: list[float] = []
    train_started = last_validation = time.time()
    while True:
        elapsed = time.time() - train_started
        finished = elapsed >= config.max_seconds
        if finished or time.time() - last_validation >= config.validate_every_s:
            loss = round(float(np.mean(losses)) if losses else float("nan"), 4)
            entry = {"step": steps, "seconds": round(elapsed, 1), "images": images_seen}
            scores = kept.validation(validator)
            record.validation(kept.scored(), {**entry, "loss": loss, **scores})
            losses = []
            last_validation = time.time()
            if progress:
                progress("train", min(int(elapsed), int(config.max_seconds)),
                         int(config.max_seconds))  # fmt: skip
        if finished:
            break
        for group in optimiser.param_groups:
            group["lr"] = lr_at(
                elapsed / config.max_seconds, config.learning_rate, config.warmup_fraction
            )
        xb, yb = batches.next(steps)
        losses.append(_step(model, optimiser, xb, yb, amp))
        kept.after_step(elapsed, steps)
        steps += 1
        images_seen += len(xb)
        if steps % 100 == 0:
            logger.info("step %d, %d images, %.0f s", steps, images_seen, elapsed)
    model.load_state_dict(record.best_state)
    metadata = _metadata(
        config,
        device,
        trained=train_bank.names,
        held_out=held_out,
        history=record.history,
        best=record.best,
        amp=amp,
        textures=textures is not None,
    )
    metadata["steps"], metadata["train_images"] = steps, images_seen
    metadata["train_seconds"] = round(time.time() - started, 1)
    metadata["sha256"] = checkpoint.save(model, _model_config(config), metadata, out)
    return metadata


class _Kept:
    """The weights validated and kept: the raw ones or, from ``ema_start`` of the budget on,
    torch's EMA of them."""

    def __init__(self, model: UNet, config: SynthTrainConfig) -> None:
        self.model, self.config = model, config
        self.average: torch.optim.swa_utils.AveragedModel | None = None

    def scored(self) -> UNet:
        return self.model if self.average is None else cast(UNet, self.average.module)

    def validation(self, validator: Validator) -> dict[str, Any]:
        """The kept weights' scores; beside an average, the raw weights' too (to compare)."""
        scores = validator.score(self.scored())
        if self.average is not None:
            raw = validator.score(self.model)
            scores["raw"] = {k: raw[k] for k in ("synthetic_dice", "real_dice") if k in raw}
        return scores

    def after_step(self, elapsed: float, step: int) -> None:
        config = self.config
        start = config.ema_start * config.max_seconds
        if self.average is None and config.ema_decay > 0 and elapsed >= start:
            self.average = _average(self.model, config.ema_decay)
            logger.info("averaging the weights from step %d", step)
        if self.average is not None:
            self.average.update_parameters(self.model)


def _average(model: UNet, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """torch's own EMA of the weights, batch-norm statistics included (``use_buffers``)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]
    return AveragedModel(model, multi_avg_fn=ema, use_buffers=True)


def _metadata(
    config: SynthTrainConfig,
    device: str,
    *,
    trained: tuple[str, ...],
    held_out: list[str],
    history: list[dict[str, Any]],
    best: dict[str, Any],
    amp: bool,
    textures: bool = False,
) -> dict[str, Any]:
    real_anatomy = ""
    if textures and config.synth.real_anatomy:
        real_anatomy = (
            ", with real CT anatomy (textures.py: the chest CTs of the pyradiomics 3.0.1 "
            "source package through random intensity curves) for the mother, trunk or placenta"
        )
    return {
        "model": "fetal-brain-unet",
        "version": MODEL_VERSION,
        "trained_on": (
            "stacks synthesised from the label maps of the CC0 fetal spina bifida atlas "
            f"(Fidon et al. 2021), {len(trained)} atlases: {', '.join(trained)}{real_anatomy}"
        ),
        "synthesis": asdict(config.synth),
        "validated_on": f"synthetic stacks from held-out atlases {', '.join(held_out)}",
        "mask_convention": "intracranial",  # the atlas' brain mask: every label, CSF included
        "recipe": "worker/models/fetal_brain/synth.py + train_synth.py",
        "best": best,
        "history": history,
        "val_dice": best.get("synthetic_dice", 0.0),
        "optimiser": (
            f"AdamW lr={config.learning_rate} warm-up + cosine over the time budget, "
            f"batch {config.batch_size} slices from {config.stacks_per_step} fresh stacks"
        ),
        "ema_decay": config.ema_decay,
        "context_slices": config.context,
        "device": device,
        "precision": "bf16 autocast" if amp else "fp32",
        "torch": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def command(args: argparse.Namespace, progress: Callable[[str, int, int], None]) -> str:
    """``medseg train fetal-brain-synth --data ATLAS``: label maps (a folder of
    ``*/parcellation.nii.gz``, or a pack written by ``worker.models.fetal_brain.atlas``);
    the CPU recipe on a CPU, the GPU one on CUDA; ``--max-seconds`` is the budget (default
    100 minutes)."""
    from worker.models._nn.train import saved_summary
    from worker.models.fetal_brain.atlas import read_atlas_folder

    budget = args.max_seconds if math.isfinite(args.max_seconds) else 6000.0
    gpu = str(args.device).startswith("cuda")
    config = SynthTrainConfig(max_seconds=budget) if gpu else cpu_config(budget)
    bank = load_bank(args.data) if args.data.suffix == ".npz" else read_atlas_folder(args.data)
    meta = train(bank, args.out, config, args.device, progress=progress)
    return saved_summary(args.out, meta)


def _config(args: argparse.Namespace) -> SynthTrainConfig:
    """The recipe named by ``--recipe``, with the command line's overrides."""
    if args.recipe == "cpu":
        config = cpu_config(args.max_seconds)
    elif args.recipe == "refine":
        config = refine_config(args.max_seconds)
    elif args.recipe == "refine-gpu":
        config = refine_gpu_config(args.max_seconds)
    else:
        config = SynthTrainConfig(
            max_seconds=args.max_seconds,
            batch_size=args.batch_size,
            stacks_per_step=args.stacks_per_step,
            validate_every_s=args.validate_every,
            base=args.base,
            seed=args.seed,
            synth=SynthConfig(t2_like_fraction=args.t2_like),
        )
    if args.learning_rate:
        config.learning_rate = args.learning_rate
    config.seed = args.seed  # every recipe (the named ones ignored it before)
    config.ema_decay, config.ema_start = args.ema, args.ema_start
    config.bf16 = not args.fp32
    config.context = args.context
    if args.validate_every_s:
        config.validate_every_s = args.validate_every_s
    config.synth = replace(config.synth, real_brain_fraction=args.real_brain_fraction)
    for name in (
        "mimic_fraction",
        "placenta_near_fraction",
        "planned_fraction",
        "texture_fraction",
        "trunk_texture_fraction",
        "placenta_texture_fraction",
        "face_fraction",
    ):
        if getattr(args, name) is not None:
            config.synth = replace(config.synth, **{name: getattr(args, name)})
    if args.skull_mm is not None:
        config.synth = replace(config.synth, skull_mm=(args.skull_mm[0], args.skull_mm[1]))
    if args.scalp_mm is not None:
        config.synth = replace(config.synth, scalp_mm=(args.scalp_mm[0], args.scalp_mm[1]))
    if args.extra_csf_mm is not None:
        low, high = args.extra_csf_mm
        config.synth = replace(config.synth, extra_csf_mm=(low, high))
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bank", type=Path, help="label-map pack (atlas.py)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--real", type=Path, help="real validation pack (--pack-real)")
    parser.add_argument("--pack-real", type=Path, help="folder of NIfTI pairs to pack into --out")
    parser.add_argument(
        "--pack-phantoms",
        metavar="START:STOP",
        help="phantom seeds whose slices to pack into --out (for --phantoms)",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stacks-per-step", type=int, default=4)
    parser.add_argument("--validate-every", type=float, default=60.0)
    parser.add_argument("--base", type=int, default=16, help="U-Net width")
    parser.add_argument("--t2-like", type=float, default=0.5, help="share of T2-like contrasts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=("gpu", "cpu", "refine", "refine-gpu"), default="gpu")
    parser.add_argument("--init", type=Path, help="start from this checkpoint (a second stage)")
    parser.add_argument("--phantoms", type=Path, help="phantom slices .npz (images, masks)")
    parser.add_argument("--phantom-fraction", type=float, default=0.25)
    parser.add_argument("--learning-rate", type=float, help="default: the recipe's")
    parser.add_argument("--keep-all", action="store_true", help="a checkpoint per validation")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights kept")
    parser.add_argument("--ema-start", type=float, default=0.25, help="share of the budget")
    parser.add_argument("--validate-every-s", type=float, help="default: the recipe's")
    parser.add_argument(
        "--real-brain-fraction",
        type=float,
        default=0.0,
        help="share of T2-like stacks drawn with the atlas' own T2 brain (a bank with intensity)",
    )
    parser.add_argument("--mimic-fraction", type=float, help="look-alike stacks (synth.py)")
    parser.add_argument("--placenta-near-fraction", type=float, help="head against placenta")
    parser.add_argument("--planned-fraction", type=float, help="stacks on the brain's planes")
    parser.add_argument("--face-fraction", type=float, help="stacks with a fetal face (synth.py)")
    parser.add_argument(
        "--skull-mm", type=float, nargs=2, metavar=("MIN", "MAX"), help="skull thickness range"
    )
    parser.add_argument(
        "--scalp-mm", type=float, nargs=2, metavar=("MIN", "MAX"), help="scalp thickness range"
    )
    parser.add_argument(
        "--extra-csf-mm",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="a shell of extra-axial CSF added round the atlas brain (synth.py)",
    )
    parser.add_argument("--textures", type=Path, help="real CT volumes .npz (--pack-textures)")
    parser.add_argument(
        "--pack-textures",
        type=Path,
        nargs="+",
        metavar="NRRD",
        help="CT volumes (the pyradiomics lung1/lung2_image.nrrd) to pack into --out",
    )
    parser.add_argument("--texture-fraction", type=float, help="stacks with a real mother")
    parser.add_argument("--trunk-texture-fraction", type=float, help="stacks with a real trunk")
    parser.add_argument(
        "--placenta-texture-fraction", type=float, help="stacks with a real-textured placenta"
    )
    parser.add_argument(
        "--context", type=int, default=0, help="neighbouring slices each side as channels"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--fp32", action="store_true", help="no bf16 autocast even where the device has bf16"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.pack_real or args.pack_phantoms or args.pack_textures:
        if args.out is None:
            parser.error("--out is required")
        if args.pack_textures:
            pack_textures(args.pack_textures, args.out)
        elif args.pack_real:
            pack_real(args.pack_real, args.out)
        else:
            start, _, stop = args.pack_phantoms.partition(":")
            pack_phantoms(range(int(start), int(stop)), args.out)
        return 0
    if args.bank is None or args.out is None:
        parser.error("--bank and --out are required")
    config = _config(args)
    if config.synth.real_anatomy and not args.textures:
        parser.error("the --*texture-fraction options need --textures")
    init = None
    if args.init:
        init = checkpoint.load(args.init, "cpu")[0].state_dict()
    pool = PhantomPool(args.phantoms, args.device) if args.phantoms else None
    if pool is not None:
        config.phantom_fraction = args.phantom_fraction
    real = load_real(args.real) if args.real else None
    textures = load_textures(args.textures, args.device) if args.textures else None
    meta = train(
        load_bank(args.bank),
        args.out,
        config,
        args.device,
        real=real,
        init=init,
        phantoms=pool,
        keep_all=args.keep_all,
        textures=textures,
    )
    logger.info("saved %s sha256 %s best %s", args.out, meta["sha256"], json.dumps(meta["best"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
