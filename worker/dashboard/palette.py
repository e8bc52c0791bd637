"""One colour per anatomical structure, the same in every modality and every model.

A structure is known by its SEG Segmented Property Type code (SNOMED CT), or by its segment
label when the code is not one we know; segment numbers are never used, since the CT and the
radiograph models number the two lungs in opposite orders. Colours are saturated so a
contour stands out on a grey image (the SEG's recommended display colours are muted on
purpose). The table is documented in docs/dashboard.md ("Overlay colours").
"""

from __future__ import annotations

from dataclasses import dataclass

BGR = tuple[int, int, int]


@dataclass(frozen=True)
class Structure:
    name: str
    code: str  # SNOMED CT code of the Segmented Property Type
    bgr: BGR

    @property
    def hex(self) -> str:
        return hex_colour(self.bgr)


STRUCTURES: tuple[Structure, ...] = (
    Structure("Right lung", "3341006", (255, 0, 255)),  # magenta
    Structure("Left lung", "44029006", (0, 255, 0)),  # green
    Structure("Fetal head", "69536005", (0, 255, 255)),  # yellow
    Structure("Fetal brain", "12738006", (255, 255, 0)),  # cyan
)

#: Structures we have no entry for, in segment order: colours none of the above uses.
OTHER_BGR: tuple[BGR, ...] = ((0, 165, 255), (255, 128, 0), (128, 0, 255), (255, 255, 255))

#: Detection boxes (pneumonia findings): red, apart from every contour.
BOX_BGR: BGR = (0, 0, 255)
#: Fetal head calipers: BPD (the ellipse's minor axis) and OFD (its major axis).
BPD_BGR: BGR = (255, 255, 0)
OFD_BGR: BGR = (0, 165, 255)

_BY_CODE = {s.code: s for s in STRUCTURES}
_BY_NAME = {s.name.lower(): s for s in STRUCTURES}


def structure_colour(code: str | None, label: str, number: int) -> BGR:
    """The colour of a segment: by its property type code, else its label, else by number."""
    known = _BY_CODE.get(code or "") or _BY_NAME.get(label.strip().lower())
    if known is not None:
        return known.bgr
    return OTHER_BGR[(number - 1) % len(OTHER_BGR)]


def structure_rank(code: str | None, label: str) -> int:
    """Where a segment goes in a legend: its place in STRUCTURES, after them when unknown."""
    known = _BY_CODE.get(code or "") or _BY_NAME.get(label.strip().lower())
    return STRUCTURES.index(known) if known is not None else len(STRUCTURES)


def hex_colour(bgr: BGR) -> str:
    """``#rrggbb`` for HTML (our colours are BGR, as OpenCV draws them)."""
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"
