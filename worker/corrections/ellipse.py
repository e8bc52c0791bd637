"""A reviewer's fetal head ellipse: parsed, checked, drawn and measured with the model's own
code (worker.models.fetal_head.biometry and ``serve.head_measurements``).

The ellipse is in the model's units: millimetres from the image's top-left pixel centre when
the image is calibrated, pixels otherwise (``biometry.Ellipse``): centre ``cx`` (along the
columns) and ``cy`` (along the rows), semi-axes ``a`` >= ``b``, and ``angle`` of ``a`` in
degrees from the row direction, clockwise on screen (rows grow downwards).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import numpy as np
from pydicom import Dataset

from worker.export.outputs import FETAL_HEAD, MeasurementValue, Segment
from worker.models.fetal_head.biometry import Ellipse, biometry, ellipse_mask

if TYPE_CHECKING:
    from worker.ops.dating import Dating

FIELDS = ("cx", "cy", "a", "b", "angle")


class EllipseError(ValueError):
    """The values do not make an ellipse; the message says which."""


def parse(text: str) -> Ellipse:
    """``cx=..,cy=..,a=..,b=..,angle=..`` (all five, any order) as an ellipse."""
    values: dict[str, float] = {}
    for part in text.split(","):
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in FIELDS:
            raise EllipseError(f"{part.strip()!r}: give {'=..,'.join(FIELDS)}=..")
        try:
            values[name] = float(raw)
        except ValueError:
            raise EllipseError(f"{name}: {raw.strip()!r} is not a number") from None
    missing = [f for f in FIELDS if f not in values]
    if missing:
        raise EllipseError(f"missing {', '.join(missing)}")
    return checked(values)


def checked(values: dict[str, float]) -> Ellipse:
    """An ellipse from its five values: finite, positive semi-axes; ``a`` is made the longer
    (the angle turns with it)."""
    if not all(math.isfinite(values[f]) for f in FIELDS):
        raise EllipseError("every value must be a finite number")
    a, b, angle = values["a"], values["b"], values["angle"]
    if a <= 0 or b <= 0:
        raise EllipseError("the semi-axes a and b must be positive")
    if b > a:
        a, b, angle = b, a, angle + 90.0
    return Ellipse(values["cx"], values["cy"], a, b, angle % 180.0)


def to_json(ellipse: Ellipse) -> str:
    return json.dumps(
        {
            "cx": ellipse.cx,
            "cy": ellipse.cy,
            "a": ellipse.a,
            "b": ellipse.b,
            "angle": ellipse.angle_deg,
        }
    )


def from_json(text: str) -> Ellipse:
    raw = json.loads(text)
    return checked({f: float(raw[f]) for f in FIELDS})


def corrected_head(
    ellipse: Ellipse,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    *,
    calibrated: bool,
    source: Dataset,
    frame: int,
    entered: Dating | None = None,
) -> tuple[Segment, list[MeasurementValue], list[str]]:
    """The head segment drawn from ``ellipse`` on a (rows, columns) image and its measurements
    (HC, BPD, OFD, cephalic index, growth, GA) as the model reports them; the reviewer's
    ellipse is not flagged, so the GA is given where the model's own rules give it;
    ``entered``: the study's entered GA by dates, which wins over ``source``'s LMP."""
    from worker.models.fetal_head.serve import head_measurements

    mask = ellipse_mask(
        shape, (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg), spacing
    )
    if not mask.any():
        raise EllipseError("the ellipse lies outside the image")
    measurements, warnings, _ = head_measurements(
        biometry(ellipse), calibrated=calibrated, flagged=False, source=source, entered=entered
    )
    measurements.append(
        MeasurementValue("measured_frame", "Measured frame number", frame + 1, "{frame}")
    )
    return Segment(FETAL_HEAD, mask[np.newaxis]), measurements, warnings
