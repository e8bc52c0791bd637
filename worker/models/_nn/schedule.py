"""Training schedules that scale with the machine: one model's plans, its time budget and the
device choose the input size, the run length, the number of subject-grouped folds and whether
the fold models are shipped as an ensemble.

A model lists its plans best first, each for one kind of device with the training throughput
measured (or estimated, as the plan says) at its input size. ``choose`` takes the first plan
whose runs reach their minimum length within the budget, then lengthens them to fill it, up to
the plan's cap. The estimate only steers the choice: every run also anneals and stops on the
wall clock (worker.models._nn.budget), so a slower machine gets a shorter schedule, not an
overrun.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

DeviceKind = Literal["cpu", "cuda"]
Unit = Literal["epoch", "step"]

#: The share of a run's wall clock left to optimiser steps; the rest is tuning-set scoring,
#: data transfer and checkpointing.
TRAIN_SHARE = 0.85


def device_kind(device: str) -> DeviceKind:
    """``cuda`` for any CUDA device ("cuda", "cuda:1"), ``cpu`` for everything else."""
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclass(frozen=True)
class Plan:
    """One way to train a model on one kind of device."""

    kind: DeviceKind
    rows: int
    cols: int
    folds: int  # subject-grouped folds; 1: the fixed train/tune split, 0: no validation run
    ensemble: bool  # ship the fold models' ensemble (else one model)
    #: Without an ensemble, the shipped model is one more run on every training subject
    #: (else the best fold model).
    final_run: bool
    unit: Unit  # what min_length/max_length count: passes over the data, or optimiser steps
    min_length: int  # the shortest run worth having
    max_length: int  # the longest run the recipe wants
    batch_size: int
    images_per_second: float  # training throughput at this size on this kind of device
    throughput_source: str = ""  # where images_per_second comes from (measured where, when)
    #: Runs per fold, each from its own initialisation seed (the fixed split's only way to an
    #: ensemble); 1: one run per fold.
    seeds: int = 1

    @property
    def final(self) -> bool:
        """Whether a run on every training subject follows the folds (and is shipped)."""
        return self.folds == 0 or (self.final_run and not self.ensemble)

    @property
    def runs(self) -> int:
        """Training runs the plan makes: ``seeds`` per fold, plus the final one."""
        return self.folds * self.seeds + int(self.final)

    def length_within(self, seconds: float, n_train: int) -> int:
        """How long (in ``unit``) each run can be when all runs share ``seconds``."""
        if math.isinf(seconds):
            return self.max_length
        images = max(seconds, 0.0) * TRAIN_SHARE / self.runs * self.images_per_second
        per_unit = max(n_train, 1) if self.unit == "epoch" else self.batch_size
        return int(images // per_unit)


@dataclass(frozen=True)
class Schedule:
    """The chosen plan, the length of each run and the wall clock each run may take."""

    plan: Plan
    length: int
    run_seconds: float  # the budget of each run (inf: none)
    budget_seconds: float
    why: str  # the choice in words, for the log and the checkpoint's metadata

    @property
    def size(self) -> tuple[int, int]:
        return self.plan.rows, self.plan.cols

    def as_dict(self) -> dict[str, object]:
        p = self.plan
        return {
            "device_kind": p.kind,
            "input_rows": p.rows,
            "input_cols": p.cols,
            "folds": p.folds,
            "seeds": p.seeds,
            "ensemble": p.ensemble,
            "final_run": p.final,
            f"{p.unit}s_per_run": self.length,
            "batch_size": p.batch_size,
            "run_seconds": None if math.isinf(self.run_seconds) else round(self.run_seconds, 1),
            "budget_seconds": None
            if math.isinf(self.budget_seconds)
            else round(self.budget_seconds, 1),
            "planned_images_per_second": p.images_per_second,
            "throughput_source": p.throughput_source,
            "why": self.why,
        }


def choose(
    plans: tuple[Plan, ...],
    device: str,
    max_seconds: float,
    n_train: int | Callable[[int], int],
    *,
    reserve: float = 0.1,
    folds: int | None = None,
    ensemble: bool | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    input_size: tuple[int, int] | None = None,
    seeds: int | None = None,
) -> Schedule:
    """The first of ``plans`` (for ``device``'s kind) whose runs reach their minimum length in
    ``max_seconds`` less the ``reserve`` share (data loading, the gate, the held-out scoring);
    the last one, as long as the budget allows, when none does. ``n_train``: the images one run
    trains on, or a function of the plan's folds giving it. ``folds``, ``ensemble``,
    ``batch_size``, ``input_size`` (rows, cols), ``seeds`` and ``max_length`` (a cap on the run
    length) override every plan's own; a plan given another input size expects its throughput to
    scale with the pixels per image (an estimate: the wall clock still bounds every run)."""
    kind = device_kind(device)
    candidates = [
        _override(p, folds, ensemble, batch_size, input_size, seeds=seeds)
        for p in plans
        if p.kind == kind
    ]
    if not candidates:
        raise ValueError(f"no training plan for a {kind} device")
    seconds = max_seconds * (1.0 - reserve)
    for plan in candidates:
        fits = plan.length_within(seconds, n_train(plan.folds) if callable(n_train) else n_train)
        if fits >= plan.min_length or plan is candidates[-1]:
            cap = plan.max_length if max_length is None else min(plan.max_length, max_length)
            length = max(1, min(fits, cap))
            why = (
                f"{kind}, budget {_seconds(max_seconds)}: {plan.rows}x{plan.cols}, "
                f"{_folds(plan)}, {length} {plan.unit}s per run"
                + ("" if fits >= plan.min_length else f" (under the plan's {plan.min_length})")
            )
            return Schedule(plan, length, seconds / plan.runs, max_seconds, why)
    raise AssertionError("unreachable: the last candidate is always taken")


def check_input_size(size: tuple[int, int], poolings: int = 4) -> None:
    """Raise ValueError unless each side of ``size`` (rows, cols) is a positive multiple of
    2**``poolings``, which a U-Net of that many poolings needs."""
    multiple = 2**poolings
    if any(side < multiple or side % multiple for side in size):
        rows, cols = size
        raise ValueError(
            f"input {rows}x{cols} with {poolings} poolings: each side must be a multiple "
            f"of {multiple}"
        )


def _override(
    plan: Plan,
    folds: int | None,
    ensemble: bool | None,
    batch_size: int | None,
    input_size: tuple[int, int] | None = None,
    *,
    seeds: int | None = None,
) -> Plan:
    if input_size is not None and input_size != (plan.rows, plan.cols):
        check_input_size(input_size)
        rows, cols = input_size
        scale = plan.rows * plan.cols / (rows * cols)
        plan = replace(
            plan,
            rows=rows,
            cols=cols,
            images_per_second=plan.images_per_second * scale,
            throughput_source=f"{plan.throughput_source}, scaled by pixels to {rows}x{cols}",
        )
    if batch_size is not None:
        plan = replace(plan, batch_size=batch_size)
    if folds is not None:
        plan = replace(plan, folds=folds)
    if seeds is not None and seeds != plan.seeds:
        # Several seeds are the fixed split's ensemble; folds are already one of their own.
        if seeds < 1 or (seeds > 1 and folds is not None and folds != 1):
            raise ValueError(f"seeds {seeds}: one or more runs on the fixed split (folds 1)")
        plan = replace(plan, seeds=seeds, folds=1 if seeds > 1 else plan.folds, ensemble=seeds > 1)
    if ensemble is not None:
        plan = replace(plan, ensemble=ensemble)
    if plan.folds * plan.seeds <= 1 and plan.ensemble:  # nothing to ensemble
        plan = replace(plan, ensemble=False)
    return plan


def _folds(plan: Plan) -> str:
    if plan.folds == 0:
        return "one run on every subject, no validation run"
    if plan.folds == 1:
        if plan.seeds > 1:
            kept = "their ensemble shipped" if plan.ensemble else "the best run shipped"
            return f"the fixed train/tune split, {plan.seeds} seeds, {kept}"
        return "the fixed train/tune split"
    if plan.ensemble:
        shipped = "the fold models' ensemble shipped"
    elif plan.final:
        shipped = "then one run on every subject, shipped"
    else:
        shipped = "the best fold model shipped"
    return f"{plan.folds} subject-grouped folds, {shipped}"


def _seconds(value: float) -> str:
    return "none" if math.isinf(value) else f"{value:.0f} s"
