"""Agreement between two methods measuring the same thing: Bland-Altman mean difference and
95 % limits of agreement.

Bland JM, Altman DG. Measuring agreement in method comparison studies. Statistical Methods
in Medical Research 1999; 8: 135-160: "The 95% limits of agreement, estimated by mean
difference ± 1.96 standard deviation of the differences" (the standard deviation of the
sample, n - 1 in the denominator; 1.96 is the 97.5th percentile of the standard normal).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: The two-sided 95 % quantile of the standard normal distribution (Bland and Altman 1999).
Z_95 = 1.96


@dataclass(frozen=True)
class BlandAltman:
    n: int
    mean_difference: float
    sd: float  # of the differences; NaN with one pair
    lower: float  # mean - 1.96 sd
    upper: float  # mean + 1.96 sd


def bland_altman(a: Sequence[float], b: Sequence[float]) -> BlandAltman:
    """Differences ``b - a`` of paired values (``a``: the reference method, e.g. the live
    version; ``b``: the new one)."""
    if len(a) != len(b) or not a:
        raise ValueError("bland_altman needs the same number (at least one) of values in each")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
    return BlandAltman(len(diffs), mean, sd, mean - Z_95 * sd, mean + Z_95 * sd)
