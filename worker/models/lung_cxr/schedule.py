"""The chest film (lung-field) recipe's plans (worker.models._nn.schedule): what
``--max-seconds`` and the device make of ``medseg train lung-cxr``.

- CUDA: 256x256 input (the phantom weights' size; the CPU recipe's 160x160 loses the
  costophrenic angles' detail at full resolution), five patient-grouped folds of 1,000 to
  3,000 steps of 16 films, and the fold models' ensemble as the shipped model.
- CPU: 160x160, five folds then a final run on every film, 1,000 steps of 8 (the 2.0.0
  recipe); shorter runs when the budget is tight.

Throughputs (training images per second, optimiser steps only): CPU from the 2.0.0 final run
(8,000 films in 2,622 s on one thread of a shared 2-core CPU); CUDA estimated from the fetal
head U-Net measured on one H200 (1,500/s at 160x240, 1,100/s at 320x480; 256x256 lies between),
to be replaced by the ``images_per_second`` a GPU run records.
"""

from __future__ import annotations

import math

from worker.models._nn.schedule import Plan, Schedule, choose

H200 = "estimated from the fetal head U-Net on one H200 (issue 33)"
CPU = "1 thread of a shared 2-core CPU, the 2.0.0 final run"
PLANS = (
    Plan("cuda", 256, 256, 5, True, True, "step", 1000, 3000, 16, 1400.0, H200),
    Plan("cuda", 256, 256, 5, True, True, "step", 100, 3000, 16, 1400.0, H200),
    Plan("cpu", 160, 160, 5, False, True, "step", 1, 1000, 8, 3.0, CPU),
)
#: The budget when none is given: six runs (five folds and the final one) of an hour each, the
#: 2.0.0 recipe's cap per run.
DEFAULT_SECONDS = 6 * 3600.0


def lung_cxr_schedule(
    device: str,
    max_seconds: float,
    *,
    folds: int | None = None,
    ensemble: bool | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
) -> Schedule:
    """The plan for this device and budget (``inf``: DEFAULT_SECONDS); ``folds`` 0 means no
    cross-validation (one run on every film)."""
    budget = DEFAULT_SECONDS if math.isinf(max_seconds) else max_seconds
    return choose(
        PLANS,
        device,
        budget,
        0,  # runs are counted in steps: the film count does not matter
        folds=folds,
        ensemble=ensemble,
        max_length=max_steps,
        batch_size=batch_size,
    )
