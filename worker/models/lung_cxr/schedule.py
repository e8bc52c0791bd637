"""The chest film (lung-field) recipe's plans (worker.models._nn.schedule): what
``--max-seconds`` and the device make of ``medseg train lung-cxr``.

- CUDA: 256x256 input (the phantom weights' size; the CPU recipe's 160x160 loses the
  costophrenic angles' detail at full resolution), five patient-grouped folds of 1,000 to
  3,000 steps of 16 films, and the fold models' ensemble as the shipped model.
- CPU: 160x160, five patient-grouped folds of up to 3,000 steps of 8 and the fold models'
  ensemble as the shipped model (the 2.1.0 recipe: three times the 2.0.0 length gave +0.017
  and +0.018 mean Dice on two folds, docs/lung.md); under about 2.5 h, the 2.0.0 recipe (five
  folds of 1,000 steps then a final run on every film), shorter when the budget is tight.

Throughputs (training images per second, optimiser steps only): CPU measured in the 2.1.0
folds (12.7-12.8/s on one thread each, two folds side by side on a 2-core AMD EPYC; the 2.0.0
final run had 3.0/s on a busier machine); CUDA estimated from the fetal head U-Net measured on
one H200 (1,500/s at 160x240, 1,100/s at 320x480; 256x256 lies between), to be replaced by the
``images_per_second`` a GPU run records.
"""

from __future__ import annotations

import math

from worker.models._nn.schedule import Plan, Schedule, choose

H200 = "estimated from the fetal head U-Net on one H200 (issue 33)"
CPU = "1 thread each, two folds side by side on a 2-core AMD EPYC, the 2.1.0 folds"
PLANS = (
    Plan("cuda", 256, 256, 5, True, True, "step", 1000, 3000, 16, 1400.0, H200),
    Plan("cuda", 256, 256, 5, True, True, "step", 100, 3000, 16, 1400.0, H200),
    Plan("cpu", 160, 160, 5, True, False, "step", 2000, 3000, 8, 12.7, CPU),
    Plan("cpu", 160, 160, 5, False, True, "step", 1, 1000, 8, 12.7, CPU),
)
#: The budget when none is given: five folds of up to an hour and a quarter each.
DEFAULT_SECONDS = 6 * 3600.0


def lung_cxr_schedule(
    device: str,
    max_seconds: float,
    *,
    folds: int | None = None,
    ensemble: bool | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    input_size: tuple[int, int] | None = None,
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
        input_size=input_size,
    )
