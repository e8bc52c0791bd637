"""The fetal intracranial volume against gestational age: a published MRI reference table, and
where one measured volume stands in it for a GA known by dates.

Our brain mask is intracranial (brain, ventricles, extra-axial CSF; docs/fetal-brain.md), so
the reference is the intracranial cavity volume (ICV) of Ren J-Y, Zhu M, Wang G, Gui Y, Jiang
F, Dong S-Z. *Quantification of Intracranial Structures Volume in Fetuses Using 3-D Volumetric
MRI: Normal Values at 19 to 37 Weeks' Gestation.* Front Neurosci 2022;16:886083
(doi:10.3389/fnins.2022.886083): 188 fetuses with normal-appearing brains, manual segmentation
on slice-to-volume reconstructions, mean and SD per completed week in its Table 1. The values
below are that table's ICV rows as transcribed in github.com/ajoshiusc/fetal-brain-growth,
references/ren2022_weekly_mean_sd.csv (commit ee8e040); tests check them.

The paper gives a mean and an SD per completed week, not an equation for the ICV (its printed
total-brain-volume equation is for the brain without CSF, a different measure), so nothing is
fitted here: a volume is compared with the row of its completed week, assuming a normal
distribution within the week (z = (volume - mean) / SD), and the chart draws the rows as they
are. The weekly SDs are small (2-23 mL) and a completed week spans 7 days of growth, so a
z-score is a coarse reading: within +/-2 is "inside the reference", not a centile to quote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE = "Ren et al., Front Neurosci 2022;16:886083 (ICV, mean ± SD per completed week)"
#: The same in ASCII, for the SR's Reference Authority (TID 311).
AUTHORITY = "Ren J-Y et al., Front Neurosci 2022;16:886083, Table 1 (intracranial volume)"

#: Completed week -> (mean mL, SD mL) of the intracranial cavity volume, Ren et al. 2022 Table 1.
ICV_ML: dict[int, tuple[float, float]] = {
    19: (69.55, 3.05),
    20: (76.74, 2.13),
    21: (86.40, 5.65),
    22: (109.30, 11.90),
    23: (125.70, 9.34),
    24: (141.50, 12.11),
    25: (158.50, 9.53),
    26: (175.40, 9.45),
    27: (215.50, 21.33),
    28: (246.80, 15.27),
    29: (277.50, 13.94),
    30: (302.50, 15.51),
    31: (304.70, 12.19),
    32: (328.80, 9.25),
    33: (344.50, 10.24),
    34: (386.60, 12.09),
    35: (426.70, 23.28),
    36: (460.00, 9.74),
    37: (491.80, 11.47),
}
WEEKS = (min(ICV_ML), max(ICV_ML))


@dataclass(frozen=True)
class VolumeStanding:
    """Where one volume stands in its completed week's row."""

    week: int
    mean_ml: float
    sd_ml: float
    z: float

    @property
    def within_2sd(self) -> bool:
        return abs(self.z) <= 2.0


def standing(volume_ml: float, ga_days: float) -> VolumeStanding | None:
    """The volume against its completed week (GA by dates in days); None outside 19-37 weeks."""
    week = math.floor(ga_days / 7.0 + 1e-9)
    if week not in ICV_ML:
        return None
    mean, sd = ICV_ML[week]
    return VolumeStanding(week, mean, sd, (volume_ml - mean) / sd)
