"""Training within a wall-clock budget, shared by the real-data recipes (fetal head, chest
X-ray): AdamW with a linear warm-up then a cosine decay driven by whichever of step count and
wall clock is further along, so a run on a loaded machine still anneals before its budget runs
out; bf16 autocast where the CPU (AMX/AVX512-BF16) or the GPU (compute capability 8.0+) has the
units for it (``worker.models._nn.hardware``), fp32 elsewhere; channels-last tensors on a CPU
(``worker.models._nn.layout``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from worker.models._nn.hardware import bf16_native
from worker.models._nn.layout import in_layout, memory_format
from worker.models._nn.train import loss_fn, normalise
from worker.models._nn.unet import UNet

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def cosine_lr(peak: float, warmup: float, progress: float) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then cosine to zero;
    ``progress`` in [0, 1]."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.02)
    t = (progress - warmup) / (1 - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass(frozen=True)
class Budget:
    """How long and how hard one run trains."""

    epochs: int
    max_seconds: float
    batch_size: int
    learning_rate: float
    warmup: float = 0.03
    seed: int = 0
    bf16: bool = True


class BudgetTrainer:
    """One U-Net, its optimiser and the schedule clock; ``epoch`` runs one pass."""

    def __init__(
        self,
        model: UNet,
        budget: Budget,
        device: str,
        n_train: int,
        augment: Augment,
        *,
        layout: torch.memory_format | None = None,
    ) -> None:
        """``layout``: the tensors' memory format (default: the device's, ``layout.py``)."""
        self.budget, self.device, self.augment = budget, device, augment
        self.amp = budget.bf16 and bf16_native(device)
        self.layout = memory_format(device) if layout is None else layout
        self.model = model.to(device).to(memory_format=self.layout)
        self.optimiser = torch.optim.AdamW(
            self.model.parameters(), lr=budget.learning_rate, weight_decay=1e-4
        )
        self.gen = torch.Generator(device=device).manual_seed(budget.seed)
        self.steps_per_epoch = max(1, n_train // budget.batch_size)
        self.total_steps = budget.epochs * self.steps_per_epoch
        self.step = 0
        self.progress = 0.0
        self.started = time.time()

    def epoch(
        self, train_x: torch.Tensor, train_y: torch.Tensor, on_step: Callable[[], Any]
    ) -> float:
        """One pass over uint8 images and soft masks (N, H, W) on the device; the mean loss."""
        budget = self.budget
        self.model.train()
        perm = torch.randperm(len(train_x), generator=self.gen, device=self.device)
        losses: list[torch.Tensor] = []  # kept on the device: no GPU sync per step
        for k in range(self.steps_per_epoch):
            self.progress = max(
                self.step / self.total_steps, (time.time() - self.started) / budget.max_seconds
            )
            for group in self.optimiser.param_groups:
                group["lr"] = cosine_lr(budget.learning_rate, budget.warmup, self.progress)
            idx = perm[k * budget.batch_size : (k + 1) * budget.batch_size]
            x, y = self.augment(
                train_x[idx].float()[:, None] / 255, train_y[idx].float()[:, None] / 255, self.gen
            )
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(in_layout(normalise(x), self.layout))
            loss = loss_fn(logits.float(), y)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimiser.step()
            losses.append(loss.detach())
            self.step += 1
            on_step()
        return float(torch.stack(losses).mean()) if losses else math.nan

    def spent(self) -> bool:
        return time.time() - self.started > self.budget.max_seconds or self.progress >= 1.0

    def elapsed(self) -> float:
        return time.time() - self.started
