"""Which fold models make the shipped ensemble, chosen on their own tuning folds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: A fold model scoring worse than this multiple of the median fold's error is left out.
OUTLIER_FACTOR = 1.5


def pick_members(
    errors: Sequence[float], max_members: int | None = None, factor: float = OUTLIER_FACTOR
) -> list[int]:
    """Indices of the fold models to ensemble, best first: by their error on their own tuning
    fold (lower is better), none worse than ``factor`` times the median error, at most
    ``max_members`` of them. Always at least the best one."""
    if not errors:
        raise ValueError("no fold models to choose from")
    order = sorted(range(len(errors)), key=lambda i: errors[i])
    limit = factor * float(np.median(errors))
    kept = [i for i in order if errors[i] <= limit] or order[:1]
    return kept[:max_members] if max_members else kept


def ensemble_entry(
    chosen: Sequence[int],
    ranked_by: str,
    max_members: int | None,
    *,
    error: str = "",
    runs: tuple[str, str] = ("fold models", "fold"),
) -> dict[str, Any]:
    """The checkpoint metadata saying which fold models (``chosen``, 0-based, as
    ``pick_members`` gives them) make the ensemble and by what rule: ``ranked_by`` names what
    each was ranked on, ``error`` the error the outlier rule compares where that is not the
    ranking itself (e.g. "1 - Dice"); ``runs`` names the candidates, in the plural and as one
    (runs of several seeds on one split are not folds)."""
    outliers = f"none with an error ({error}) worse" if error else "none worse"
    plural, one = runs
    return {
        "members": [k + 1 for k in chosen],
        "rule": f"{plural} by {ranked_by}, best first; {outliers} than {OUTLIER_FACTOR} x "
        f"the median {one}'s" + (f"; at most {max_members}" if max_members else ""),
        "combination": "mean of the members' logits",
    }
