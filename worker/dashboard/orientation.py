"""Which side of the patient each edge of a displayed image faces: the R/L (A/P, H/F) markers.

CT and MR: from Image Orientation (Patient), the direction cosines of a row and a column in
the patient coordinate system (x to the patient's left, y posterior, z head). Radiographs:
from Patient Orientation (0020,0020), the directions of a row and a column as letters.
Without either (most ultrasound) the orientation is unknown, and we say so rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

#: Letters for the positive and negative direction of each patient axis (x, y, z).
_AXES = (("L", "R"), ("P", "A"), ("H", "F"))
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
#: A direction cosine smaller than this does not name the direction (an oblique slice gets
#: two letters, the stronger first).
_MIN_COSINE = 0.25


@dataclass(frozen=True)
class Edges:
    """The patient direction each edge of the image faces, e.g. left ``R``, right ``L``."""

    left: str
    right: str
    top: str
    bottom: str


def direction_letters(vector: Sequence[float]) -> str:
    """Letters for a direction in patient coordinates, the dominant axis first ("LP")."""
    parts = sorted(
        ((abs(c), _AXES[i][0] if c > 0 else _AXES[i][1]) for i, c in enumerate(vector[:3])),
        reverse=True,
    )
    return "".join(letter for size, letter in parts if size >= _MIN_COSINE)


def _opposite(letters: str) -> str:
    return "".join(_OPPOSITE[c] for c in letters)


def edges_from_cosines(cosines: Sequence[float]) -> Edges | None:
    """From Image Orientation (Patient): the row direction points to the right edge, the
    column direction to the bottom edge."""
    if len(cosines) != 6:
        return None
    right, bottom = direction_letters(cosines[:3]), direction_letters(cosines[3:])
    if not right or not bottom:
        return None
    return Edges(left=_opposite(right), right=right, top=_opposite(bottom), bottom=bottom)


def edges_from_patient_orientation(values: Sequence[str]) -> Edges | None:
    """From Patient Orientation (0020,0020): [row direction, column direction] as letters."""
    if len(values) != 2:
        return None
    right, bottom = (str(v).strip().upper() for v in values)
    if not right or not bottom or not set(right + bottom) <= set(_OPPOSITE):
        return None
    return Edges(left=_opposite(right), right=right, top=_opposite(bottom), bottom=bottom)


def _cosines(ds: Dataset) -> list[float] | None:
    value = ds.get("ImageOrientationPatient")
    if value is None:  # an enhanced multi-frame image keeps it in the functional groups
        for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            sequence = ds.get(groups)
            if sequence and "PlaneOrientationSequence" in sequence[0]:
                value = sequence[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
                break
    try:
        return [float(v) for v in value] if value is not None else None
    except (TypeError, ValueError):
        return None


def image_edges(ds: Dataset) -> Edges | None:
    """The edges of ``ds``'s image, or None when the file does not say (never a guess)."""
    cosines = _cosines(ds)
    if cosines is not None:
        return edges_from_cosines(cosines)
    orientation = ds.get("PatientOrientation")
    if orientation:
        values = [orientation] if isinstance(orientation, str) else list(orientation)
        return edges_from_patient_orientation(values)
    return None
