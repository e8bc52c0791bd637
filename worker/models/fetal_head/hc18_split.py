"""Subject-grouped splits of an HC18-layout folder.

Frames that share the number before the first ``_`` (``012_HC.png``, ``012_2HC.png``) come from
one examination; every split keeps a subject's frames on one side, so near-copies of one fetus
never sit on both sides of a validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.models.fetal_head.hc18 import HC18Item


def subject_of(item: HC18Item) -> str:
    """The examination an image belongs to: the file name up to the first ``_``."""
    return item.image.name.split("_", 1)[0]


@dataclass(frozen=True)
class Split:
    """Indices into the item list: ``train`` fits weights, ``tune`` picks the epoch and the
    gate thresholds, ``test`` is only ever used to report."""

    train: list[int]
    tune: list[int]
    test: list[int]


def subject_split(
    items: Sequence[HC18Item], test_fraction: float = 0.2, tune_fraction: float = 0.1, seed: int = 0
) -> Split:
    """A fixed split by subject: ``test_fraction`` of the subjects held out, then
    ``tune_fraction`` of the remaining subjects for epoch and threshold selection."""
    subjects = sorted({subject_of(i) for i in items})
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_test = round(len(subjects) * test_fraction)
    n_tune = round((len(subjects) - n_test) * tune_fraction)
    test_s = {subjects[k] for k in order[:n_test]}
    tune_s = {subjects[k] for k in order[n_test : n_test + n_tune]}
    split = Split([], [], [])
    for index, item in enumerate(items):
        s = subject_of(item)
        (split.test if s in test_s else split.tune if s in tune_s else split.train).append(index)
    return split
