"""Volumes and areas of corrected masks, recomputed for the measurements the corrected result
had: ``NAME_volume_ml`` (voxel volumes from the series' slice geometry, as the models
measure), ``NAME_area_cm2|mm2|px`` (pixel area from the image's calibration) and
``max_slice_area_mm2`` (the largest slice). ``NAME`` picks the segments whose label contains
it (``lung`` is both lungs, ``left_lung`` the left one, ``brain`` the fetal brain). A
measurement of another kind is kept as it was and named in ``Recomputed.kept``, except a
z-score or centile (``STEM_z``, ``STEM_centile``) of a measurement that was recomputed: it
ranked the old value, so it is dropped and named in ``Recomputed.dropped``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.export.outputs import AREA, MAXIMUM, VOLUME, MeasurementValue
from worker.pipeline.calibration import image_calibration
from worker.pipeline.loading import LoadedSeries

_SIZED = re.compile(r"^(?P<stem>.+)_(?P<what>volume|area)_(?P<unit>ml|cm2|mm2|px)$")
_RANK = re.compile(r"^(?P<stem>.+)_(?:z|centile)$")
MAX_SLICE_AREA = "max_slice_area_mm2"


@dataclass(frozen=True)
class OldValue:
    """A measurement of the result being corrected, as the database keeps it."""

    key: str
    label: str
    value: float
    unit: str


@dataclass
class Recomputed:
    measurements: list[MeasurementValue] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # keys not recomputed, kept as they were
    dropped: list[str] = field(default_factory=list)  # ranks of a value that changed


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.casefold()) if t]


def segments_named(stem: str, labels: dict[int, str]) -> list[int]:
    """The segments (numbers) whose label contains the words of ``stem`` in a row."""
    want = _tokens(stem)
    found = []
    for number, label in sorted(labels.items()):
        words = _tokens(label)
        if any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1)):
            found.append(number)
    return found


def _pixel_mm2(series: LoadedSeries) -> float | None:
    if series.geometry is not None:
        return series.geometry.pixel_spacing[0] * series.geometry.pixel_spacing[1]
    calibration = image_calibration(series.datasets[0])
    return calibration.row_mm * calibration.column_mm if calibration else None


def recompute(
    old: list[OldValue],
    masks: dict[int, npt.NDArray[np.bool_]],
    labels: dict[int, str],
    series: LoadedSeries,
) -> Recomputed:
    """``old``'s volumes and areas measured again on ``masks`` ({segment number: (frames,
    rows, columns)}); ``labels``: {segment number: label}."""
    done = Recomputed()
    pixel_mm2 = _pixel_mm2(series)
    for m in old:
        value: float | None = None
        numbers: list[int] = []
        concept, derivation = AREA, None
        sized = _SIZED.match(m.key)
        if m.key == MAX_SLICE_AREA and pixel_mm2 is not None:
            numbers = sorted(masks)
            union = np.any(np.stack([masks[n] for n in numbers]), axis=0)
            value = float(union.sum(axis=(1, 2)).max()) * pixel_mm2
            derivation = MAXIMUM
        elif sized is not None:
            numbers = segments_named(sized["stem"], labels)
            unit, what = sized["unit"], sized["what"]
            pixels = [masks[n].sum(axis=(1, 2)) for n in numbers if n in masks]
            if not pixels or len(pixels) != len(numbers):
                numbers = []
            elif what == "volume" and unit == "ml" and series.geometry is not None:
                voxel_ml = series.geometry.voxel_volumes_ml()
                value, concept = float(sum((p * voxel_ml).sum() for p in pixels)), VOLUME
            elif what == "area" and unit == "px":
                value = float(sum(p.sum() for p in pixels))
            elif what == "area" and pixel_mm2 is not None:
                value = float(sum(p.sum() for p in pixels)) * pixel_mm2
                value /= 100.0 if unit == "cm2" else 1.0
        if value is None or not numbers:
            done.kept.append(m.key)
            done.measurements.append(MeasurementValue(m.key, m.label, m.value, m.unit))
            continue
        done.measurements.append(
            MeasurementValue(
                m.key,
                m.label,
                value,
                m.unit,
                concept,
                segment=numbers[0] if len(numbers) == 1 else None,
                derivation=derivation,
            )
        )
    return _drop_stale_ranks(done)


def _drop_stale_ranks(done: Recomputed) -> Recomputed:
    """A kept z-score or centile of a recomputed measurement ranks a value that is gone."""
    changed = [m.key for m in done.measurements if m.key not in done.kept]
    for key in list(done.kept):
        rank = _RANK.match(key)
        if rank and any(c.startswith(rank["stem"] + "_") for c in changed):
            done.kept.remove(key)
            done.dropped.append(key)
    done.measurements = [m for m in done.measurements if m.key not in done.dropped]
    return done
