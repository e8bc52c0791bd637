"""Training steps per second of each U-Net recipe, channels-last (NHWC; NDHWC for the 3D
localiser) against the default layout (NCHW), measured in the same run on the same machine.

Every 2D recipe trains through the production trainer (``worker.models._nn.budget.BudgetTrainer``:
augmentation, bf16 autocast where the device has it, BCE + soft Dice, AdamW) on random frames
of the recipe's input size and batch; the fetal brain's 3D localiser through the step
``train_locator`` runs (its network, the loss, AdamW) on random coarse stacks.
The two layouts alternate round by round, and the median of ``--rounds`` timings of
``--steps`` optimiser steps is kept for each.

Run: python benchmarks/training_cpu.py [--rounds 3] [--steps 6] [--threads N]
     [--recipes fetal-head,fetal-head-224,lung-cxr,fetal-brain,lung-ct,locator]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _machine import machine

from worker.models._nn.budget import Augment, Budget, BudgetTrainer
from worker.models._nn.hardware import bf16_native
from worker.models._nn.unet import UNet


def _fetal_head_augment() -> Augment:
    from worker.models.fetal_head.cv_train import augment

    return augment


def _lung_cxr_augment() -> Augment:
    from worker.models.lung_cxr.augment import augment

    return augment


def _no_augment() -> Augment:
    return lambda x, y, gen: (x, y)


@dataclass(frozen=True)
class Recipe:
    name: str
    rows: int
    cols: int
    batch: int
    base: int
    augment: Callable[[], Augment]


#: The CPU recipes' networks, inputs and batches (fetal_head/schedule.py, lung_cxr/cv_train.py,
#: fetal_brain/train_synth.py's two-core stages, lung_ct/train.py).
RECIPES = {
    "fetal-head": Recipe("fetal head 160x240, batch 16, base 16", 160, 240, 16, 16,
                         _fetal_head_augment),
    "fetal-head-224": Recipe("fetal head 224x336, batch 16, base 16", 224, 336, 16, 16,
                             _fetal_head_augment),
    "lung-cxr": Recipe("chest film 160x160, batch 8, base 16", 160, 160, 8, 16,
                       _lung_cxr_augment),
    "fetal-brain": Recipe("fetal brain patches 128x128, batch 24, base 8", 128, 128, 24, 8,
                          _no_augment),
    "lung-ct": Recipe("lung CT slices 128x128, batch 16, base 8", 128, 128, 16, 8, _no_augment),
}  # fmt: skip
LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
#: The localiser's CPU recipe: two stacks a step, 12-28 slices (24 here) of 64x64, base 8.
LOCATOR = "fetal brain localiser 3D, 2 stacks of 24x64x64, base 8"


def _epoch_seconds(recipe: Recipe, layout: torch.memory_format, steps: int) -> float:
    torch.manual_seed(0)
    n = recipe.batch * steps
    images = torch.randint(0, 256, (n, recipe.rows, recipe.cols), dtype=torch.uint8)
    masks = torch.zeros_like(images)
    masks[:, recipe.rows // 4 : 3 * recipe.rows // 4, recipe.cols // 4 : 3 * recipe.cols // 4] = 255
    budget = Budget(epochs=1, max_seconds=1e9, batch_size=recipe.batch, learning_rate=1e-3)
    model = UNet(base=recipe.base, depth=4)
    trainer = BudgetTrainer(model, budget, "cpu", n, recipe.augment(), layout=layout)
    start = time.perf_counter()
    trainer.epoch(images, masks, lambda: None)
    return time.perf_counter() - start


def _locator_seconds(layout: torch.memory_format, steps: int) -> float:
    """``steps`` of the localiser's training step: its input (24 slices, no padding needed)
    and its weights both in ``layout``, as ``locator.logits`` and ``train_locator`` put them."""
    from worker.models._nn.train import loss_fn
    from worker.models.fetal_brain.locator import Locator3d

    torch.manual_seed(0)
    volumetric = torch.channels_last_3d if layout == torch.channels_last else layout
    model = Locator3d(8).to(memory_format=volumetric)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    volumes = torch.rand(2, 24, 64, 64)
    x = ((volumes - 0.25) / 0.25)[:, None].contiguous(memory_format=volumetric)
    y = (volumes > 0.5).float()
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(model(x)[:, 0], y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per timed epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--recipes", default=",".join([*RECIPES, "locator"]))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = bf16_native("cpu")
    print(machine(f", torch {torch.__version__}, {torch.get_num_threads()} threads, "
                  f"bf16 autocast {'on' if amp else 'off (no native bf16)'}"))  # fmt: skip
    print("| recipe | NCHW images/s | NHWC images/s | NHWC / NCHW |")
    print("| --- | --- | --- | --- |")
    for key in [k for k in args.recipes.split(",") if k in RECIPES]:
        recipe = RECIPES[key]
        for layout in LAYOUTS.values():  # warm-up: oneDNN's kernels for these shapes
            _epoch_seconds(recipe, layout, 1)
        spent: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for _ in range(args.rounds):
            for name, layout in LAYOUTS.items():
                spent[name].append(_epoch_seconds(recipe, layout, args.steps))
        rate = {
            name: recipe.batch * args.steps / statistics.median(times)
            for name, times in spent.items()
        }
        print(f"| {recipe.name} | {rate['NCHW']:.2f} | {rate['NHWC']:.2f} | "
              f"{rate['NHWC'] / rate['NCHW']:.2f}x |", flush=True)  # fmt: skip
    if "locator" in args.recipes.split(","):
        for layout in LAYOUTS.values():
            _locator_seconds(layout, 1)
        times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for _ in range(args.rounds):
            for name, layout in LAYOUTS.items():
                times[name].append(_locator_seconds(layout, args.steps))
        rate = {name: 2 * args.steps / statistics.median(t) for name, t in times.items()}
        print(f"| {LOCATOR} (stacks/s) | {rate['NCHW']:.2f} | {rate['NHWC']:.2f} | "
              f"{rate['NHWC'] / rate['NCHW']:.2f}x |", flush=True)  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
