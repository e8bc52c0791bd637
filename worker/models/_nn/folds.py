"""Group-wise folds: every subject's (or patient's) images in one fold, folds of even size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grouped_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[list[int]]:
    """``k`` folds of indices into ``groups``, each group's indices in one fold; the groups
    shuffled with ``seed`` then dealt largest-first to the fold with the fewest indices."""
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    if len(members) < k:
        raise ValueError(f"{len(members)} patients or subjects cannot make {k} folds")
    rng = np.random.default_rng(seed)
    order = [sorted(members)[j] for j in rng.permutation(len(members))]
    order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for group in order:
        min(folds, key=len).extend(members[group])
    return [sorted(fold) for fold in folds]
