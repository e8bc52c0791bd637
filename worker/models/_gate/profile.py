"""Per-slice area profile of a 3D mask: is the structure continuous across the slices?

An organ cut by the slices has a smooth, unimodal area profile inside its extent along the
stack. Two signals tell a broken segmentation from it:

- ``gap_slices``: empty slices between the first and the last slice with any mask (a hole in
  the stack: the network lost the structure on that slice).
- ``max_jump``: the largest distance of a slice's area from the mean of its two neighbours, as
  a fraction of the largest slice's area (second difference, so the quick growth at the ends
  of a smooth profile is not a jump; a slice that drops, or leaks far beyond its neighbours,
  is). Only slices with a neighbour on each side inside the extent are judged, and only in
  an extent of ``MIN_JUDGED_SLICES`` or more: in a shorter one the end slices of a smooth
  organ already differ from the middle by a third of its area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MIN_JUDGED_SLICES = 5


@dataclass(frozen=True)
class Profile:
    gap_slices: int
    max_jump: float
    jump_slice: int  # index (in stack order) of the slice with the largest jump; -1 if none
    extent_slices: int  # slices from the first to the last with any mask


def slice_areas(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Voxels per slice (axis 0) of a (slices, rows, columns) mask."""
    # One count per slice: several times faster than a sum over the other axes of a volume.
    counts = (np.count_nonzero(s) for s in mask)
    areas: npt.NDArray[np.float64] = np.fromiter(counts, dtype=np.float64, count=len(mask))
    return areas


def profile(areas: npt.ArrayLike) -> Profile:
    """The continuity signals of one area profile (any unit)."""
    a = np.asarray(areas, dtype=np.float64)
    filled = np.nonzero(a > 0)[0]
    if filled.size == 0:
        return Profile(gap_slices=0, max_jump=0.0, jump_slice=-1, extent_slices=0)
    inside = a[filled[0] : filled[-1] + 1]
    gaps = int((inside == 0).sum())
    if inside.size < MIN_JUDGED_SLICES:
        return Profile(gaps, 0.0, -1, int(inside.size))
    jumps = np.abs(inside[1:-1] - (inside[:-2] + inside[2:]) / 2.0) / inside.max()
    k = int(np.argmax(jumps))
    return Profile(gaps, float(jumps[k]), int(filled[0]) + 1 + k, int(inside.size))


def profile_reasons(
    organ: str, gap_slices: int, max_jump: float, max_gap_slices: int, max_jump_allowed: float
) -> list[str]:
    """The gate's reasons for a broken profile of ``organ`` ("lung", "brain")."""
    out: list[str] = []
    if gap_slices > max_gap_slices:
        out.append(f"{organ} mask has gaps between slices ({gap_slices} empty slice(s) inside)")
    if max_jump > max_jump_allowed:
        out.append(
            f"{organ} area jumps between slices ({max_jump:.0%} of the largest slice away from "
            f"its neighbours' mean, > {max_jump_allowed:.0%})"
        )
    return out
