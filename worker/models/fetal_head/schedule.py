"""The fetal head recipe's plans (worker.models._nn.schedule): what ``--max-seconds`` and the
device make of ``medseg train fetal-head``.

- CUDA: 320x480 input (twice the CPU recipe's resolution: the skull's outer border is what HC
  is measured on), 5 subject-grouped folds and their ensemble when the budget gives each fold
  40 epochs, else 3 folds, else the fixed split; 160x240 only when not even 20 epochs fit.
- CPU: 160x240 on the fixed split, 60 epochs (the 2.0.0 recipe, 52 min on 2 cores); 5 folds
  and their ensemble only when a budget of about four hours or more gives each fold 40 epochs.

Throughputs (training images per second, optimiser steps only): CUDA measured on one H200 for
issue 33 (12-04, the same U-Net, bf16); CPU from the 2.0.0 run (60 epochs of 581 frames in
3,090 s on 2 vCPU with AMX bf16, tuning included, so 11.3/s over the whole run).
"""

from __future__ import annotations

import math

from worker.models._nn.schedule import Plan, Schedule, choose

H200 = "one H200, bf16, measured 12-04 (issue 33)"
CPU2 = "2 vCPU Xeon (AMX bf16), the 2.0.0 run"
PLANS = (
    Plan("cuda", 320, 480, 5, True, False, "epoch", 40, 150, 32, 1100.0, H200),
    Plan("cuda", 320, 480, 3, True, False, "epoch", 40, 150, 32, 1100.0, H200),
    Plan("cuda", 320, 480, 1, False, False, "epoch", 20, 150, 32, 1100.0, H200),
    Plan("cuda", 160, 240, 1, False, False, "epoch", 1, 60, 16, 1500.0, H200),
    Plan("cpu", 160, 240, 5, True, False, "epoch", 40, 60, 16, 13.0, CPU2),
    Plan("cpu", 160, 240, 1, False, False, "epoch", 1, 60, 16, 13.0, CPU2),
)
#: The budget when none is given: the 2.0.0 recipe's.
DEFAULT_SECONDS = 2 * 3600.0
#: On CUDA, the tuning frames are scored from this share of the epochs on (the cosine schedule
#: has settled by then), about TUNING_POINTS times; on CPU after every epoch, as in 2.0.0.
TUNING_FROM = 0.5
#: The fixed split's tuning share of the frames not held out (hc18_split.subject_split).
TUNE_FRACTION = 0.1
TUNING_POINTS = 12


def fetal_head_schedule(
    device: str,
    max_seconds: float,
    development: int,
    *,
    folds: int | None = None,
    ensemble: bool | None = None,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    input_size: tuple[int, int] | None = None,
    seeds: int | None = None,
) -> Schedule:
    """The plan for this device and budget (``inf``: DEFAULT_SECONDS); ``development``: the
    frames not held out (train and tune). ``folds`` below 1 means the fixed split; ``seeds``
    above 1 trains the fixed split that many times and ships their ensemble."""
    budget = DEFAULT_SECONDS if math.isinf(max_seconds) else max_seconds
    return choose(
        PLANS,
        device,
        budget,
        lambda k: train_frames(development, k),
        folds=None if folds is None else max(folds, 1),
        ensemble=ensemble,
        max_length=max_epochs,
        batch_size=batch_size,
        input_size=input_size,
        seeds=seeds,
    )


def train_frames(development: int, folds: int) -> int:
    """Frames one run trains on: all but one fold, or the fixed split's train part."""
    if folds <= 1:
        return round(development * (1 - TUNE_FRACTION))
    return development * (folds - 1) // folds


def tuning_epochs(schedule: Schedule) -> frozenset[int]:
    """The epochs (1-based) after which the tuning frames are scored; a run cut short by its
    wall clock is also scored at its last epoch."""
    epochs = schedule.length
    if schedule.plan.kind == "cpu":
        return frozenset(range(1, epochs + 1))
    first = max(1, math.ceil(epochs * TUNING_FROM))
    step = max(1, (epochs - first + 1) // TUNING_POINTS)
    return frozenset({*range(epochs, first - 1, -step), epochs})
