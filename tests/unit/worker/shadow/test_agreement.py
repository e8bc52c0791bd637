"""Bland-Altman numbers against a hand computation."""

from __future__ import annotations

import math

import pytest

from worker.shadow.agreement import bland_altman


def test_bland_altman_matches_a_hand_computation() -> None:
    live = [100.0, 150.0, 200.0, 250.0]
    shadow = [102.0, 149.0, 204.0, 251.0]
    # differences 2, -1, 4, 1: mean 6/4 = 1.5; squared deviations 0.25 + 6.25 + 6.25 + 0.25
    # = 13, / (n - 1) = 13/3, sd = 2.0817; limits 1.5 -/+ 1.96 * 2.0817 = -2.580 and 5.580
    ba = bland_altman(live, shadow)
    assert ba.n == 4
    assert ba.mean_difference == pytest.approx(1.5)
    assert ba.sd == pytest.approx(math.sqrt(13 / 3))
    assert ba.lower == pytest.approx(-2.5801, abs=1e-4)
    assert ba.upper == pytest.approx(5.5801, abs=1e-4)


def test_one_pair_has_a_mean_and_no_limits() -> None:
    ba = bland_altman([1.0], [3.0])
    assert ba.mean_difference == 2.0 and math.isnan(ba.upper)
    with pytest.raises(ValueError):
        bland_altman([], [])
