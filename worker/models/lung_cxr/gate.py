"""The chest radiograph quality gate: reference-free signals of the lung fields and of the
opacity boxes, and a verdict with reasons (empty: accepted).

- ``fields``: above-threshold components of at least 5 % of the found area. Two lungs are two
  fields; one means a lung is missing or both merged across the mediastinum.
- ``side_purity``: for each field, the share of its area on its own half of the image (the
  smaller of the two). A "lung" straddling the midline is not a lung field.
- ``area_fraction``: both fields over the image. Fields running up into the neck or a speck
  fall outside the range real films show.
- ``right_left_ratio``: the right field's area over the left's (the right lung is larger).
- ``border_fraction``: share of the fields' outline in the image's outer 1 % band. A field
  running along the edge is cut off or is not a lung.
- ``confidence``: mean probability inside the fields.
- ``fragment_ratio``: above-threshold area outside the two kept fields over the kept area.
- calibrated films only: each field's area in cm² against adult bounds.
- pneumonia boxes: each must lie mostly inside a lung field.

Thresholds are stored with the weights (``quality_gate``), fitted on out-of-fold predictions
of real films by ``gate_fit``; ``DEFAULT_THRESHOLDS`` serve checkpoints without.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._gate.thresholds import Rounded, StoredThresholds
from worker.models.lung_cxr.fields import Fields, pixels

#: Projected area of one adult lung field on a PA/AP film (cm²): wide sanity bounds, not
#: fitted (the training films carry no pixel size). A 35x43 cm detector is 1505 cm².
FIELD_AREA_CM2 = (40.0, 600.0)
#: A box is inside the lung fields when at least this share of it lies on a (dilated) field.
BOX_INSIDE_FRACTION = 0.5


@dataclass(frozen=True)
class Signals(Rounded):
    fields: int
    side_purity: float
    area_fraction: float
    right_left_ratio: float
    border_fraction: float
    confidence: float
    fragment_ratio: float


@dataclass(frozen=True)
class Thresholds(StoredThresholds):
    min_side_purity: float = 0.9
    min_area_fraction: float = 0.1
    max_area_fraction: float = 0.55
    min_right_left_ratio: float = 0.6
    max_right_left_ratio: float = 1.9
    max_border_fraction: float = 0.02
    min_confidence: float = 0.85
    max_fragment_ratio: float = 0.05


DEFAULT_THRESHOLDS = Thresholds()


def _eroded(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``ndimage.binary_erosion(mask)`` (the 3x3 cross, background outside the image) by
    OpenCV: several times faster on a 2000² film."""
    import cv2  # the gateway imports this package's routing and has no OpenCV

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    plane = mask.view(np.uint8)
    eroded = cv2.erode(plane, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    out: npt.NDArray[np.bool_] = eroded.view(bool)
    return out


def signals(
    prob: npt.NDArray[np.float32],
    right: npt.NDArray[np.bool_],
    left: npt.NDArray[np.bool_],
    *,
    patient_left_on_image_right: bool = True,
) -> Signals:
    """Signals of the served fields (``right``/``left``: the patient's) and their map."""
    return field_signals(
        Fields.of(prob, right, left, patient_left_on_image_right=patient_left_on_image_right)
    )


def _within(crop: slice, lo: int, hi: int) -> slice:
    """The film's rows (or columns) ``lo``..``hi`` - 1 in the coordinates of ``crop``."""
    start = crop.start or 0
    return slice(max(lo - start, 0), max(min(hi, crop.stop) - start, 0))


def field_signals(f: Fields) -> Signals:
    """The signals on the fields' box (the same numbers the whole film gives: the box holds
    every pixel counted, with a background ring for the erosion)."""
    raw_area = int(f.raw_sizes.sum())
    n_fields = int((f.raw_sizes >= 0.05 * max(raw_area, 1)).sum())
    kept = f.right | f.left
    kept_area = max(pixels(kept), 1)
    rows, cols = f.shape
    box_rows, box_cols = f.box
    # The patient's right lung lies on the image's left for the usual PA/AP display.
    image_left, image_right = (
        (f.right, f.left) if f.patient_left_on_image_right else (f.left, f.right)
    )
    half = _within(box_cols, cols // 2, cols).start
    purity_left = pixels(image_left[:, :half]) / max(pixels(image_left), 1)
    purity_right = pixels(image_right[:, half:]) / max(pixels(image_right), 1)
    band = max(1, round(0.01 * min(rows, cols)))
    edge = kept & ~_eroded(kept)
    inner = edge[_within(box_rows, band, rows - band), _within(box_cols, band, cols - band)]
    edge_area = pixels(edge)
    return Signals(
        fields=n_fields,
        side_purity=float(min(purity_left, purity_right)),
        area_fraction=kept_area / (rows * cols),
        right_left_ratio=float(pixels(f.right)) / max(pixels(f.left), 1),
        border_fraction=float(edge_area - pixels(inner)) / max(edge_area, 1),
        confidence=float(f.prob[kept].mean()) if kept.any() else 0.0,
        fragment_ratio=float(pixels(f.raw & ~kept)) / kept_area,
    )


def reasons(
    s: Signals,
    t: Thresholds = DEFAULT_THRESHOLDS,
    *,
    field_cm2: tuple[float, float] | None = None,
) -> list[str]:
    """Why a film needs review (empty: accepted). ``field_cm2``: (right, left) areas when the
    film is calibrated."""
    out: list[str] = []
    if s.fields != 2:
        what = "lung fields merged or one missing" if s.fields < 2 else "more than two fields"
        out.append(f"{what} ({s.fields} found, expected 2)")
    if s.side_purity < t.min_side_purity:
        out.append(
            f"a lung field crosses the midline ({s.side_purity:.0%} on its own side, "
            f"< {t.min_side_purity:.0%})"
        )
    if not t.min_area_fraction <= s.area_fraction <= t.max_area_fraction:
        out.append(
            f"lung field area implausible for the film ({s.area_fraction:.0%} of the image, "
            f"accepted {t.min_area_fraction:.0%}-{t.max_area_fraction:.0%})"
        )
    if not t.min_right_left_ratio <= s.right_left_ratio <= t.max_right_left_ratio:
        out.append(
            f"right/left lung field ratio implausible ({s.right_left_ratio:.2f}, accepted "
            f"{t.min_right_left_ratio:.2f}-{t.max_right_left_ratio:.2f})"
        )
    if s.border_fraction > t.max_border_fraction:
        out.append(
            f"a lung field touches the image border ({s.border_fraction:.1%} of the outline at "
            f"the edge, > {t.max_border_fraction:.1%})"
        )
    if s.confidence < t.min_confidence:
        out.append(f"low confidence in the lung fields ({s.confidence:.3f} < {t.min_confidence})")
    if s.fragment_ratio > t.max_fragment_ratio:
        out.append(
            f"lung-like regions outside the two fields ({s.fragment_ratio:.1%} of their area, "
            f"> {t.max_fragment_ratio:.1%})"
        )
    if field_cm2 is not None:
        lo, hi = FIELD_AREA_CM2
        for side, area in zip(("right", "left"), field_cm2, strict=True):
            if not lo <= area <= hi:
                out.append(
                    f"{side} lung field area implausible for an adult ({area:.0f} cm², "
                    f"accepted {lo:.0f}-{hi:.0f} cm²)"
                )
    return out


def boxes_outside(
    boxes: Sequence[tuple[float, float, float, float]], fields_mask: npt.NDArray[np.bool_]
) -> int:
    """How many (x0, y0, x1, y1) boxes lie mostly outside the lung fields (dilated by 2 % of
    the image width, so a box on the field's edge counts as inside)."""
    if not boxes:
        return 0
    grow = max(1, round(0.02 * fields_mask.shape[1]))
    near: npt.NDArray[np.bool_] = ndimage.binary_dilation(fields_mask, iterations=grow)
    outside = 0
    for x0, y0, x1, y1 in boxes:
        r0, r1 = int(max(0, y0)), int(min(near.shape[0], np.ceil(y1)))
        c0, c1 = int(max(0, x0)), int(min(near.shape[1], np.ceil(x1)))
        area = max(1, (r1 - r0) * (c1 - c0))
        if near[r0:r1, c0:c1].sum() / area < BOX_INSIDE_FRACTION:
            outside += 1
    return outside


def box_reason(outside: int, total: int) -> list[str]:
    if not outside:
        return []
    return [f"opacity box outside the lung fields ({outside} of {total})"]
